"""``doodl compare -c config.yaml``: methods x items on the same seeds, judged by held-out judges.

The config names a backend (``model``), the guide (``guidance``), the chain every method runs
(``chain``), the ``methods`` (``doodl.run.methods``), the ``judges`` (``doodl.eval.judges`` /
``doodl.eval.distances``; ``guide`` names the judge that is the guide, so that the adversarial
gap guide minus judge is reported), the items (``data.path``, ``data.seeds``: as ``doodl fit``)
and the ``output`` folder. Ranks (torchrun's RANK / WORLD_SIZE, or SLURM's) each run their share;
rank 0 judges and writes the report once every pair is on disk (``doodl.run.compare``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import torch
from jsonargparse import ActionConfigFile, ArgumentParser
from jsonargparse.typing import PositiveInt
from torch import nn

from doodl.eval.judges import Judge
from doodl.guidance.base import GuidanceLoss
from doodl.run.compare import Comparison, rank_and_world
from doodl.run.context import Chain, RunContext
from doodl.run.methods import Method

from . import prompts
from .config_paths import resolve_config_paths
from .errors import mark_before_run
from .lightning_cli import set_threads


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="doodl compare", description=__doc__.split("\n\n")[0], exit_on_error=False)
    p.add_argument("-c", "--config", action=ActionConfigFile, help="a compare config (YAML)")
    p.add_argument("--model", type=nn.Module, required=True, help="the diffusion backend (class_path / init_args)")
    p.add_argument("--guidance", type=GuidanceLoss, required=True, help="the guide: the loss the guided methods follow")
    p.add_argument("--chain", type=Chain, default=Chain(), help="the chain every method runs")
    p.add_argument("--methods", type=list[Method], required=True, help="the methods, each with a unique name")
    p.add_argument("--judges", type=list[Judge], required=True, help="who scores the final images")
    p.add_argument("--guide", type=Optional[str], default="guide",
                   help="the judge that is the guide (null: none; no adversarial gap is reported)")
    p.add_argument("--data.path", type=str, required=True, help="the prompt file or dataset (as doodl fit's)")
    p.add_argument("--data.seeds", type=list[int], default=[0], help="seeds per prompt")
    p.add_argument("--output", type=str, required=True, help="the comparison's folder (kept across reruns: resume)")
    p.add_argument("--batch_size", type=PositiveInt, default=8, help="items per batch, the same for every method")
    p.add_argument("--judge_batch_size", type=PositiveInt, default=64)
    p.add_argument("--title", type=str, default="doodl compare")
    p.add_argument("--note", type=Optional[str], default=None, help="a line under the summary's title")
    p.add_argument("--threads", type=Optional[PositiveInt], default=None, help="torch CPU threads")
    p.add_argument("--wandb", type=Optional[str], default=None,
                   help="a W&B project: the summary and a table of the methods' images side by side")
    return p


SETTINGS_FILE = "compare.json"  # what the pairs on disk were made with: a rerun must match it


def settings_of(parser: ArgumentParser, cfg: Any) -> dict[str, Any]:
    """What decides the pairs' images (not the judges, the report or the output folder)."""
    dump = json.loads(parser.dump(cfg, format="json", skip_none=False))
    return {k: dump.get(k) for k in ("model", "guidance", "chain", "methods", "batch_size")} | {"data": dump.get("data")}


def check_settings(output: Path, settings: dict[str, Any], rank: int) -> None:
    """A rerun into a folder made with other settings is refused (its pairs would be mixed with new ones)."""
    path = output / SETTINGS_FILE
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        diff = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
        if diff:
            raise ValueError(f"{output} holds a comparison made with other settings ({', '.join(diff)} differ): "
                             "give a new --output, or the settings it was made with to resume it")
    elif rank == 0:
        output.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=1) + "\n", encoding="utf-8")


def compare_main(args: list[str] | None = None) -> dict[str, Any] | None:
    """Parse, check, run this rank's pairs, and on rank 0 judge and report. Returns rank 0's
    ``{"rows", "records", "paths"}`` (None on the other ranks and for --print_config)."""
    argv = list(sys.argv[2:] if args is None else args)
    try:
        setup = prepare(argv)
    except BaseException as e:
        mark_before_run(e)
        raise
    if setup is None:
        return None
    comparison, init = setup
    rank, world = rank_and_world()
    output = comparison.output
    counts = comparison.run(rank, world)
    print(f"doodl compare: rank {rank}/{world}: {counts['ran']} pairs run, {counts['kept']} kept from before", flush=True)
    if rank != 0:
        return None
    comparison.wait_for_ranks()
    from doodl.run.compare_report import judge_and_report

    with torch.no_grad():
        out = judge_and_report(comparison, init.judges, init.guide, init.title, init.judge_batch_size, init.note)
    from .compare_sheet import write_sheet

    out["paths"]["sheet.png"] = write_sheet(output / "sheet.png", out["records"], [m.name for m in init.methods])
    if init.wandb:
        log_wandb(init.wandb, output, out, [m.name for m in init.methods])
    print(f"doodl compare: {out['paths']['summary.md']}", flush=True)
    return out


def prepare(argv: list[str]) -> tuple[Comparison, Any] | None:
    """Everything before the first pair runs: the config, the items (every bad row), the settings
    of a folder resumed, the models, and the judges and the guide against every item."""
    parser = build_parser()
    if any(a == "--print_config" or a.startswith("--print_config=") for a in argv):
        parser.parse_args(argv)  # prints the resolved config and exits
        return None
    cfg = parser.parse_args(argv)
    set_threads(cfg.get("threads"))
    resolve_config_paths(cfg, argv)
    items = prompts.read_items(cfg.data.path, cfg.data.seeds)  # every bad row, before any model loads
    rank, _ = rank_and_world()
    check_settings(Path(cfg.output), settings_of(parser, cfg), rank)
    init = parser.instantiate_classes(cfg)
    context = RunContext(init.model, init.guidance, init.chain)
    comparison = Comparison(context, init.methods, items, Path(cfg.output), init.batch_size)
    from doodl.run.compare_report import check_before_run

    check_before_run(comparison, init.judges, init.guide)
    bad = [f"item {it['id']}: {m}" for it in items for m in init.guidance.check_item(it)]
    if bad:
        raise ValueError("the guidance loss cannot read these items:\n  " + "\n  ".join(bad[:10]))
    return comparison, init


def log_wandb(project: str, output: Path, out: dict[str, Any], methods: list[str]) -> None:
    """The summary table, the plot and the side-by-side images as one W&B run (WANDB_MODE decides online/offline)."""
    import wandb

    from doodl.eval.side_by_side import wandb_table

    run = wandb.init(project=project, dir=str(output), job_type="compare", name=output.name)
    try:
        rows = out["paths"]["summary.csv"].read_text(encoding="utf-8").splitlines()
        import csv

        data = list(csv.reader(rows))
        run.log({"summary": wandb.Table(columns=data[0], data=data[1:]), "summary_plot": wandb.Image(str(out["paths"]["summary.png"])),
                 "images": wandb_table(out["records"], methods)})
    finally:
        run.finish()


def console_compare(args: list[str]) -> int:
    """``doodl compare ...`` from the console script: the exit status."""
    import argparse

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        compare_main(args)
    except argparse.ArgumentError as e:  # the parser's own errors: one line, as doodl fit's
        from doodl.guidance.cutouts import parser_error_hint

        hint = parser_error_hint(str(e))
        print(f"doodl compare: error: {e}".strip() + (f"\n{hint}" if hint else ""), file=sys.stderr)
        return 2
    return 0
