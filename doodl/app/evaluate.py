"""``doodl test``: score the images a run saved (``final/<id>.png``) with the configured guidance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from doodl.run.start import load_image


def failed_in_run(folder: Path, item_id: str) -> bool:
    """Whether the run reported the item as failed (``<id>.json`` with ``"status": "failed"``, no PNG)."""
    meta = folder / f"{item_id}.json"
    if (folder / f"{item_id}.png").is_file() or not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text(encoding="utf-8")).get("status") == "failed"
    except (ValueError, OSError, AttributeError):
        return False


def evaluate_batch(context: Any, eval_dir: str | None, batch: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """Per-item guide score (``context``: a ``doodl.run.context.RunContext``) of the saved image of each
    item in ``eval_dir``; NaN for an item the run reported as failed (it has no image)."""
    folder = eval_dir
    if folder is None:
        raise ValueError("doodl test needs model.eval_dir: the folder of a run's final images (RUN/final)")
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"eval_dir {folder} does not exist: point it at a finished run's final/ folder")
    failed = [failed_in_run(folder, it["id"]) for it in batch]
    missing = [it["id"] for it, f in zip(batch, failed) if not f and not (folder / f"{it['id']}.png").is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} item(s) have no image in {folder}: {', '.join(missing[:5])}")
    c = context.chain
    scores = torch.full((len(batch),), float("nan"), device=context.device)
    present = [k for k, f in enumerate(failed) if not f]
    if present:
        images = torch.cat([load_image(folder / f"{batch[k]['id']}.png", c.height, c.width) for k in present])
        scores[present] = context.score(images.to(context.device), [batch[k] for k in present]).to(scores.device)
    return {"score": scores}
