"""A contact sheet comparing DOODL with its baselines on the same items, noise and loss.

At the end of ``fit`` each rank runs the baselines (``doodl.run.methods``: "plain" unguided,
"onestep" guidance) on its own items and writes ``compare/<method>/<id>.png`` beside
``compare/doodl/<id>.png`` (DOODL's best iterate); rank 0 assembles ``contact_sheet.png`` (rows:
items, columns: methods, each cell captioned with its guidance score; a failed image, one with no
finite result, is a grey cell marked "failed" and has no PNG) and ``compare/results.jsonl`` (with
each image's ``status``), and logs the sheet to W&B and TensorBoard.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import lightning as L
import torch
from PIL import Image

from doodl.run.methods import OneStep, Unguided

from ..paths import run_dir
from .common import (dataset_items, final_outputs, gather_to_rank0, jsonable, read_png, tensorboard_loggers,
                     wandb_loggers, write_image, write_png, write_text)

METHODS = ("plain", "onestep")
from .sheet import Cell, draw_sheet


class ContactSheet(L.Callback):
    """Args:
        methods: baselines to run next to DOODL, from ("plain", "onestep").
        cell: pixel size of each image on the sheet (small images are enlarged, nearest neighbour).
        batch_size: items per baseline batch.
        onestep_scale: loss scale of the one-step baseline (None: the module's ``guidance_scale``);
            one-step guidance usually wants its own, larger scale than DOODL's.
    """

    def __init__(self, methods: Sequence[str] = ("plain", "onestep"), cell: int = 96, batch_size: int = 8,
                 onestep_scale: float | None = None):
        bad = [m for m in methods if m not in METHODS]
        if bad:
            raise ValueError(f"unknown methods {bad}: choose from {METHODS}")
        if onestep_scale is not None and not onestep_scale >= 0:
            raise ValueError(f"onestep_scale must be >= 0 or None (the module's guidance_scale), got {onestep_scale}")
        self.methods, self.cell, self.batch_size = list(methods), int(cell), int(batch_size)
        self.onestep_scale = onestep_scale

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        root = run_dir(trainer) / "compare"
        results = final_outputs(pl_module)
        items = [r.item for r in results]
        for name in self.methods:
            scale = pl_module.hparams.guidance_scale if self.onestep_scale is None else self.onestep_scale
            method = Unguided(name) if name == "plain" else OneStep(scale, name=name)
            for start in range(0, len(items), self.batch_size):
                with torch.inference_mode(False):
                    results += method.run(pl_module.context, items[start:start + self.batch_size])
        records = []
        for r in results:
            if not r.failed:
                write_png(root / r.method / f"{r.id}.png", r.image)
            records.append({"id": r.id, "method": r.method, "status": r.status,
                            "score": None if r.failed else r.scores.get("score")})
        records = gather_to_rank0(trainer, records, "doodl-contact-sheet")
        if records:
            self._finish(trainer, root, records)

    def _finish(self, trainer: L.Trainer, root: Path, records: list[dict]) -> None:
        order = {it["id"]: k for k, it in enumerate(dataset_items(trainer) or [])}
        prompts = {it["id"]: it.get("prompt", it["id"]) + (f" (seed {it['seed']})" if "seed" in it else "")
                   for it in dataset_items(trainer) or []}
        ids = sorted({r["id"] for r in records}, key=lambda i: (order.get(i, len(order)), i))
        columns = [*self.methods, "doodl"]
        by_key = {(r["id"], r["method"]): r for r in records}
        write_text(root / "results.jsonl", "".join(json.dumps(jsonable(r)) + "\n" for r in records))
        sheet = self.draw(root, ids, columns, by_key, prompts)
        path = root.parent / "contact_sheet.png"
        write_image(path, sheet)
        for lg in wandb_loggers(trainer):
            lg.log_image(key="contact_sheet", images=[str(path)], caption=[" | ".join(columns)])
        for lg in tensorboard_loggers(trainer):
            lg.experiment.add_image("contact_sheet", read_png(path), trainer.global_step)

    def draw(self, root: Path, ids: list[str], columns: list[str], records: dict, prompts: dict) -> Image.Image:
        """The sheet: one row per item (labelled with its prompt), one column per method."""
        cells = []
        for item_id in ids:
            for name in columns:
                r = records.get((item_id, name), {})
                file = root / name / f"{item_id}.png"
                image = None if r.get("status") == "failed" else Image.open(file).convert("RGB")  # missing: raises
                s = r.get("score")
                cells.append(Cell(image, ["failed" if image is None else "" if s is None else f"score {s:.3f}"]))
        return draw_sheet(cells, len(columns), (self.cell, self.cell), row_labels=[prompts.get(i, i) for i in ids],
                          column_labels=columns)
