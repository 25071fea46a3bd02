"""Writes what ``doodl predict`` produced: one PNG per item and a results.jsonl per method."""

from __future__ import annotations

import json
from typing import Any, Sequence

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter

from doodl.run.result import ItemResult

from .callbacks.common import jsonable, write_png
from .paths import run_dir


class PredictionWriter(BasePredictionWriter):
    """``run_dir/predict/<method>/<id>.png`` and ``run_dir/predict/<method>/results.rank<R>.jsonl``
    (one line per item with its ``status``; a "failed" image, one with non-finite pixels, is no
    result: no PNG, a null score)."""

    def __init__(self) -> None:
        super().__init__(write_interval="batch")

    def write_on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: list[ItemResult],
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        for res in prediction:
            folder = run_dir(trainer) / "predict" / res.method
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{res.id}.png"
            if not res.failed:
                write_png(path, res.image)
            item = {key: v for key, v in res.item.items() if _jsonable(v)}
            record = res.to_record()
            record.update(record.pop("scores"))  # "score" at the top, as before
            with open(folder / f"results.rank{trainer.global_rank}.jsonl", "a") as f:
                f.write(json.dumps(jsonable({**record, "image": None if res.failed else str(path),
                                             "item": item})) + "\n")


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
        return True
    except TypeError:
        return False
