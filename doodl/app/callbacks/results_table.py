"""One row of metrics per item of a run, as CSV, JSONL and a W&B table."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import lightning as L

from doodl.app.paths import run_dir

from .common import dataset_items, final_outputs, gather, wandb_loggers, write_text
from .image_writer import ImageWriter

HEAD = ("id", "prompt", "seed", "status", "loss")
TAIL = ("best_iteration", "iterations", "stopped_early", "skipped_updates", "failure", "image")


def columns_for(rows: list[dict]) -> list[str]:
    """id, prompt, seed, status, loss, each score (sorted; ``scores.<name>`` if it clashes), then the run's counters."""
    names = sorted({name for r in rows for name in r["scores"]})
    return [*HEAD, *(score_column(n) for n in names), *TAIL]


def score_column(name: str) -> str:
    return f"scores.{name}" if name in HEAD or name in TAIL else name


def flat(row: dict) -> dict[str, Any]:
    out = {k: row[k] for k in (*HEAD, *TAIL)}
    out.update({score_column(n): v for n, v in row["scores"].items()})
    return out


class ResultsTable(L.Callback):
    """At the end of training, write ``<filename>.csv`` and ``<filename>.jsonl`` in the run folder.

    One row per item over all ranks, sorted by id: id, prompt, seed, status, loss (of the best
    iterate), each guidance score (of the image as saved), best_iteration, iterations,
    stopped_early, skipped_updates, failure and image (the final PNG relative to the run folder,
    when an ``ImageWriter`` writes it; else empty). ``status`` is "done" (every iteration ran),
    "stopped_early" (the score reached target_score), "unfinished" (the run ended first) or
    "failed": no iterate was finite, so there is no result (no loss, scores or image) and
    ``failure`` says why (e.g. "non-finite loss at every iteration"). Non-finite
    numbers are empty in the CSV and null in the JSONL. A ``WandbLogger`` gets the table as ``results``
    (with the images). The rows are checked against the datamodule's items: a missing, unknown or
    repeated id raises ``RuntimeError`` once the files are written.
    """

    def __init__(self, filename: str = "results"):
        super().__init__()
        if not isinstance(filename, str) or not filename or Path(filename).name != filename or filename.startswith("."):
            raise ValueError(f"filename must be a plain file name without folders or extension, got {filename!r}")
        self.filename = filename

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        run_dir(trainer)  # settle the folder now, on every rank together (it may broadcast)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writes_images = any(isinstance(cb, ImageWriter) and cb.write_final for cb in trainer.callbacks)
        local = []
        for res in final_outputs(pl_module):
            image = f"final/{res.id}.png" if writes_images and not res.failed else None
            local.append({**res.to_record(), "image": image})
        rows = sorted((r for part in gather(trainer, local) for r in part), key=lambda r: r["id"])
        problems = self.check(rows, dataset_items(trainer))  # the same on every rank: all raise together
        root = run_dir(trainer)
        if trainer.is_global_zero:
            self.write(root, rows)
            self.log_wandb(trainer, root, rows)
        if problems:
            raise RuntimeError(f"the results in {root / self.filename}.csv do not match the dataset: "
                               + "; ".join(problems))

    @staticmethod
    def check(rows: list[dict], items: list[dict] | None) -> list[str]:
        """Missing, unknown and repeated ids of ``rows`` versus the dataset's ``items``."""
        counts = Counter(r["id"] for r in rows)
        problems = []
        repeated = sorted(i for i, c in counts.items() if c > 1)
        if repeated:
            problems.append(f"ids repeated (run on more than one rank?): {repeated}")
        if items is not None:
            expected = [it["id"] for it in items]
            missing = [i for i in expected if i not in counts]
            unknown = sorted(set(counts) - set(expected))
            if missing:
                problems.append(f"{len(missing)} item(s) have no result: {missing}")
            if unknown:
                problems.append(f"ids not in the dataset: {unknown}")
        return problems

    def write(self, root: Path, rows: list[dict]) -> None:
        columns = columns_for(rows)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, restval="", lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in flat(r).items()})
        write_text(root / f"{self.filename}.csv", buf.getvalue())
        write_text(root / f"{self.filename}.jsonl",
                   "".join(json.dumps(r, allow_nan=False) + "\n" for r in rows))

    def log_wandb(self, trainer: L.Trainer, root: Path, rows: list[dict]) -> None:
        loggers = wandb_loggers(trainer)
        if not loggers:
            return
        import wandb  # only when a WandbLogger is there, so wandb itself is there

        columns = columns_for(rows)
        data = []
        for r in rows:
            f = flat(r)
            image = root / r["image"] if r["image"] else None
            f["image"] = wandb.Image(str(image)) if image is not None and image.is_file() else None
            data.append([f.get(c) for c in columns])
        for wb in loggers:
            wb.log_table(key="results", columns=columns, data=data)
