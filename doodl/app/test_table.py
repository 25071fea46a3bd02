"""``doodl test``'s scores on disk: ``RUN/test/results.csv`` with the full ids (Lightning's printed
table truncates them), one row per item over all ranks, sorted by id."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import lightning as L

from .callbacks.common import dataset_items, gather, jsonable, write_text
from .paths import run_dir

_KEY = re.compile(r"^test/items/(?P<id>.+)/(?P<name>[^/]+)$")  # what DOODL.test_step logs per item


class TestTable(L.Callback):
    """Writes ``<run>/<folder>/results.csv``: id, prompt, seed, then each score ``doodl test`` logged."""

    __test__ = False  # not a pytest test class

    def __init__(self, folder: str = "test"):
        super().__init__()
        if not isinstance(folder, str) or not folder or Path(folder).name != folder:
            raise ValueError(f"test_table.folder must be a plain folder name, got {folder!r}")
        self.folder = folder

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        scores: dict[str, dict[str, float]] = {}
        for key, value in trainer.callback_metrics.items():
            m = _KEY.match(key)
            if m:
                scores.setdefault(m["id"], {})[m["name"]] = jsonable(value)
        merged: dict[str, dict[str, float]] = {}
        for part in gather(trainer, scores):
            merged.update(part)
        if not trainer.is_global_zero:
            return
        by_id = {it["id"]: it for it in dataset_items(trainer) or []}
        names = sorted({n for s in merged.values() for n in s})
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["id", "prompt", "seed", *names])
        for item_id in sorted(merged):
            item = by_id.get(item_id, {})
            writer.writerow([item_id, item.get("prompt", ""), item.get("seed", ""),
                             *("" if merged[item_id].get(n) is None else merged[item_id][n] for n in names)])
        path = run_dir(trainer) / self.folder / "results.csv"
        write_text(path, buf.getvalue())
        print(f"doodl: test scores of {len(merged)} item(s): {path}", flush=True)
