"""``doodl compare`` end to end on the digits world (real weights, reduced: 6 items, T = 3): the
report, the evaluation counts against the chain's arithmetic, a judge equal to the guide (gap 0),
resume after a kill, 2 processes = 1, and bad input refused before any model runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from doodl.app.compare_cli import compare_main

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "digits_compare.yaml"
T, ITERATIONS = 3, 2


def small_config(tmp_path: Path, out: str = "out", **edits) -> Path:
    """configs/digits_compare.yaml on 6 items (3 seen, 3 unseen), T = 3, 2 DOODL iterations, a seed search."""
    cfg = yaml.safe_load(CONFIG.read_text())
    lines = (ROOT / "configs" / "prompts" / "digits_compare.jsonl").read_text().splitlines()
    (tmp_path / "items.jsonl").write_text("\n".join(lines[:3] + lines[-3:]) + "\n")
    cfg["data"]["path"] = str(tmp_path / "items.jsonl")
    cfg["output"] = str(tmp_path / out)
    cfg["chain"]["num_steps"] = T
    cfg["methods"][2]["init_args"]["iterations"] = ITERATIONS
    cfg["methods"].append({"class_path": "doodl.run.methods.SeedSearch", "init_args": {"n": 2}})
    cfg["batch_size"] = 4
    for key, value in edits.items():
        cfg[key] = value
    path = tmp_path / f"{out}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def rows_without_wall(summary: Path) -> list[dict]:
    rows = json.loads(summary.read_text())["rows"]
    for r in rows:
        r["cost"].pop("wall_s", None)
    return rows


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    cfg = small_config(tmp)
    return cfg, compare_main(["-c", str(cfg)])


def test_report_and_costs(first):
    cfg, out = first
    folder = Path(yaml.safe_load(cfg.read_text())["output"])
    for name in ("summary.md", "summary.csv", "summary.json", "scores.csv", "scores.jsonl", "summary.png", "sheet.png"):
        assert (folder / name).is_file(), name
    rows = out["rows"]
    assert {(r["method"], r["group"]) for r in rows} == {(m, g) for m in ("plain", "onestep", "doodl", "seed_search")
                                                         for g in ("seen", "unseen")}
    assert all(r["n"] == 3 for r in rows)
    md = (folder / "summary.md").read_text()
    assert "judge" in md and "gap" in md
    # every pair's cost is the chain's arithmetic: 2 evaluations per EDICT step per call
    for path in (folder / "methods").rglob("*.json"):
        rec = json.loads(path.read_text())
        c, method = rec["cost"], rec["method"]
        if method == "plain":
            assert (c["evals_graph"], c["evals_plain"]) == (0, 2 * T)
        elif method == "onestep":  # DDIM: one evaluation with a graph per step
            assert (c["evals_graph"], c["evals_plain"]) == (T, 0)
        elif method == "seed_search":
            assert (c["evals_graph"], c["evals_plain"]) == (0, 2 * 2 * T)
        else:  # invert mode: the chain once without a graph, rebuilt once with one, per iteration
            k = rec["iterations"]
            assert 1 <= k <= ITERATIONS and (c["evals_graph"], c["evals_plain"]) == (2 * T * k, 2 * T * k)
        assert c["wall_s"] > 0


def test_a_judge_equal_to_the_guide_has_gap_zero(tmp_path):
    cfg = yaml.safe_load(small_config(tmp_path).read_text())
    guide = next(j for j in cfg["judges"] if j["init_args"].get("name") == "guide")
    twin = {"class_path": guide["class_path"], "init_args": {**guide["init_args"], "name": "guide_twin"}}
    cfg["judges"] = [guide, twin, next(j for j in cfg["judges"] if j["init_args"].get("name") == "judge")]
    cfg["methods"] = cfg["methods"][:2]
    path = tmp_path / "twin.yaml"
    path.write_text(yaml.safe_dump(cfg))
    rows = compare_main(["-c", str(path)])["rows"]
    for r in rows:
        gap = r["gaps"]["guide_twin"]
        assert gap["value"] == 0.0 and gap["ci95"] == [0.0, 0.0]
    assert any(r["gaps"]["judge"]["value"] != 0.0 for r in rows) or all(
        r["judges"]["guide"]["value"] == r["judges"]["judge"]["value"] for r in rows)


def test_resume_recomputes_nothing_finished(first, tmp_path, capsys):
    cfg, out = first
    folder = Path(yaml.safe_load(cfg.read_text())["output"])
    before = rows_without_wall(folder / "summary.json")
    images = {p.name: p.read_bytes() for p in (folder / "methods" / "doodl").glob("*.png")}
    # a kill after some pairs: their files are gone; a rerun computes exactly those
    gone = sorted((folder / "methods" / "doodl").glob("*.json"))[:2]
    for meta in gone:
        meta.unlink()
        meta.with_suffix(".png").unlink(missing_ok=True)
    capsys.readouterr()
    compare_main(["-c", str(cfg)])
    assert "2 pairs run, 22 kept from before" in capsys.readouterr().out
    assert rows_without_wall(folder / "summary.json") == before
    assert {p.name: p.read_bytes() for p in (folder / "methods" / "doodl").glob("*.png")} == images


def test_two_processes_give_the_table_of_one(first, tmp_path):
    cfg_one, _ = first
    one = Path(yaml.safe_load(cfg_one.read_text())["output"])
    cfg = small_config(tmp_path, "two")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WORLD_SIZE": "2"}
    procs = [subprocess.Popen([sys.executable, "-m", "doodl", "compare", "-c", str(cfg)], cwd=ROOT,
                              env={**env, "RANK": str(r)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in (0, 1)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    two = tmp_path / "two"
    # each process ran its share only (batches dealt whole: rank 0 the first batch of 4, rank 1 the rest)
    assert "rank 0/2: 16 pairs run" in outs[0] and "rank 1/2: 8 pairs run" in outs[1]
    assert rows_without_wall(two / "summary.json") == rows_without_wall(one / "summary.json")
    for png in (one / "methods").rglob("*.png"):
        assert png.read_bytes() == (two / png.relative_to(one)).read_bytes(), png


@pytest.mark.parametrize("edit,message", [
    ({"methods": [{"class_path": "doodl.run.methods.NoSuchMethod"}]}, "NoSuchMethod"),
    ({"guide": "nobody"}, "guide='nobody' is not a judge's name"),
    ({"judges": [{"class_path": "doodl.eval.judges.ClassifierJudge",
                  "init_args": {"name": "small", "model": "doodl.digits.assets.load_judge", "input_size": 8}}],
      "guide": None}, "reads 8x8 images, got 16x16: set resize: true"),
    ({"judges": [{"class_path": "doodl.eval.distances.KID",
                  "init_args": {"features": "doodl.eval.digits_parts.digits_judge_features",
                                "reference_dir": "/nonexistent/refs"}}], "guide": None}, "/nonexistent/refs"),
])
def test_bad_input_is_refused_before_any_pair_runs(tmp_path, edit, message):
    cfg = small_config(tmp_path, **edit)
    with pytest.raises(Exception, match=message) as e:
        compare_main(["-c", str(cfg)])
    assert getattr(e.value, "doodl_before_run", False)
    assert not (tmp_path / "out" / "methods").exists()


def test_a_folder_made_with_other_settings_is_refused(first, tmp_path):
    cfg_one, _ = first
    cfg = yaml.safe_load(cfg_one.read_text())
    cfg["chain"]["num_steps"] = T + 1
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match=r"other settings \(chain differ\)"):
        compare_main(["-c", str(path)])


def test_unknown_method_name_on_the_console(tmp_path, capsys):
    from doodl.app.cli import console

    cfg = small_config(tmp_path, methods=[{"class_path": "doodl.run.methods.NoSuchMethod"}])
    assert console(["compare", "-c", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("doodl compare: error:") and "NoSuchMethod" in err and "Traceback" not in err


def test_seed_search_keeps_the_best_seed():
    """SeedSearch's result is the seed the guide scores best among n; its own seed is the first."""
    from doodl.digits.world import DigitClassifierLoss, DigitsStableDiffusion
    from doodl.run.context import Chain, RunContext
    from doodl.run.methods import SeedSearch, Unguided

    ctx = RunContext(DigitsStableDiffusion(), DigitClassifierLoss(), Chain(num_steps=T, height=16, width=16))
    item = {"id": "a", "prompt": "a handwritten digit eight", "seed": 3, "target_class": 8}
    best = SeedSearch(n=3, stride=7).run(ctx, [item])[0]
    singles = [Unguided().run(ctx, [{**item, "seed": 3 + 7 * k}])[0] for k in range(3)]
    k = max(range(3), key=lambda j: singles[j].scores["score"])
    assert best.scores["seed"] == 3 + 7 * k and best.iterations == 3
    torch.testing.assert_close(best.image, singles[k].image, rtol=0, atol=0)


def test_wandb_run_holds_the_summary_and_the_side_by_side_table(first, monkeypatch, capsys):
    """--wandb PROJECT: an (offline) W&B run in the output folder; a rerun judges again, computes nothing."""
    cfg, _ = first
    folder = Path(yaml.safe_load(cfg.read_text())["output"])
    monkeypatch.setenv("WANDB_MODE", "offline")
    capsys.readouterr()
    compare_main(["-c", str(cfg), "--wandb", "doodl-test"])
    assert "0 pairs run, 24 kept from before" in capsys.readouterr().out
    runs = list((folder / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and runs[0].stat().st_size > 0


def test_rank_zero_gives_up_when_no_pair_comes(tmp_path):
    """A rank that died: rank 0 stops waiting once no new pair has come for stall_s seconds."""
    from doodl.run.compare import Comparison

    folder = tmp_path

    class Never(Comparison):
        def missing(self):
            return [("doodl", "never")]

    c = Never.__new__(Never)
    c.output = folder
    with pytest.raises(TimeoutError, match="none came for 0 s: did a rank fail"):
        c.wait_for_ranks(stall_s=0.2, poll_s=0.05)
