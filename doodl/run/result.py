"""``ItemResult``: what a method delivers for one item, and its one serialized form (``to_record``)."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from torch import Tensor

from .cost import Cost

# the item fields every record repeats, ahead of its outcome
ITEM_FIELDS = ("prompt", "seed")


@dataclass
class ItemResult:
    """One item's outcome under one method.

    ``image``: (3, H, W) on the CPU, as its PNG holds it (``doodl.run.images.delivered``), or None
    when ``status`` is "failed" (no finite iterate; ``failure`` says why). ``loss``: of the result
    (None for a method without a loss). ``scores``: the guide's "score" and any extras (an edit's
    inversion PSNR). ``best_iteration`` / ``iterations`` / ``stopped_early`` / ``skipped_updates``: a
    DOODL item's counters (0 / 0 / False / 0 for a one-pass method). ``cost``: its spend."""

    id: str
    item: Mapping[str, Any]
    method: str
    status: str
    image: Tensor | None
    loss: float | None = None
    scores: dict[str, float] = field(default_factory=dict)
    best_iteration: int = -1
    iterations: int = 0
    stopped_early: bool = False
    skipped_updates: int = 0
    failure: str | None = None
    cost: Cost = field(default_factory=Cost)

    @property
    def failed(self) -> bool:
        return self.image is None

    def to_record(self) -> dict[str, Any]:
        """The result as JSON values (no image: the caller writes the PNG): id, the item's prompt and
        seed, method, status, failure, loss, scores, counters and cost. Non-finite numbers are None."""
        return jsonable({
            "id": self.id, **{k: self.item.get(k) for k in ITEM_FIELDS}, "method": self.method,
            "status": self.status, "failure": self.failure, "loss": self.loss, "scores": dict(self.scores),
            "best_iteration": self.best_iteration, "iterations": self.iterations,
            "stopped_early": self.stopped_early, "skipped_updates": self.skipped_updates, "cost": self.cost.as_dict(),
        })

    @classmethod
    def from_record(cls, record: Mapping[str, Any], item: Mapping[str, Any], image: Tensor | None) -> "ItemResult":
        """Back from ``to_record`` (and the item and PNG it belongs to): resumed comparisons."""
        nan = math.nan
        loss = record.get("loss")
        return cls(
            id=record["id"], item=item, method=record["method"], status=record["status"], image=image,
            loss=None if loss is None and record["status"] != "failed" else (nan if loss is None else float(loss)),
            scores={k: (nan if v is None else float(v)) for k, v in (record.get("scores") or {}).items()},
            best_iteration=int(record.get("best_iteration", -1)), iterations=int(record.get("iterations", 0)),
            stopped_early=bool(record.get("stopped_early", False)), skipped_updates=int(record.get("skipped_updates", 0)),
            failure=record.get("failure"), cost=Cost.from_dict(record.get("cost")))


def jsonable(v: Any) -> Any:
    """``v`` as plain JSON values: tensors to numbers or lists, non-finite floats to None, other objects to text."""
    if isinstance(v, Tensor):
        v = v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):
        v = float(v)
        return v if math.isfinite(v) else None
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    return str(v)  # anything else (an object a user put in an item) as its text
