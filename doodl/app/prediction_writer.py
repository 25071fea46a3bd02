"""Writes what ``doodl predict`` produced: one PNG per item and a results.jsonl per method."""

from __future__ import annotations

import json
from typing import Any, Sequence

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter

from .callbacks.common import jsonable, write_png
from .paths import run_dir


class PredictionWriter(BasePredictionWriter):
    """``run_dir/predict/<method>/<id>.png`` and ``run_dir/predict/<method>/results.rank<R>.jsonl``
    (one line per item with its ``status``; a "failed" image, one with non-finite pixels, is no
    result: no PNG, a null score)."""

    def __init__(self) -> None:
        super().__init__(write_interval="batch")

    def write_on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: dict[str, Any],
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        folder = run_dir(trainer) / "predict" / prediction["method"]
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"results.rank{trainer.global_rank}.jsonl", "a") as f:
            for k, item_id in enumerate(prediction["ids"]):
                status = prediction.get("status", ["done"] * len(prediction["ids"]))[k]
                path = folder / f"{item_id}.png"
                if status != "failed":
                    write_png(path, prediction["images"][k])
                item = {key: v for key, v in prediction["items"][k].items() if _jsonable(v)}
                scores = {name: float(v[k]) for name, v in prediction["scores"].items()}
                f.write(json.dumps(jsonable({"id": item_id, "method": prediction["method"], "status": status,
                                             "image": None if status == "failed" else str(path), **scores,
                                             "item": item})) + "\n")


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
        return True
    except TypeError:
        return False
