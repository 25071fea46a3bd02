"""``doodl test``: score the images a run saved (``final/<id>.png``) with the configured guidance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .start import load_image


def failed_in_run(folder: Path, item_id: str) -> bool:
    """Whether the run reported the item as failed (``<id>.json`` with ``"status": "failed"``, no PNG)."""
    meta = folder / f"{item_id}.json"
    if (folder / f"{item_id}.png").is_file() or not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text(encoding="utf-8")).get("status") == "failed"
    except (ValueError, OSError, AttributeError):
        return False


def evaluate_batch(module: Any, batch: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """Per-item guidance score of the saved image of each item in ``module.hparams.eval_dir``;
    NaN for an item the run reported as failed (it has no image)."""
    folder = module.hparams.eval_dir
    if folder is None:
        raise ValueError("doodl test needs model.eval_dir: the folder of a run's final images (RUN/final)")
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"eval_dir {folder} does not exist: point it at a finished run's final/ folder")
    failed = [failed_in_run(folder, it["id"]) for it in batch]
    missing = [it["id"] for it, f in zip(batch, failed) if not f and not (folder / f"{it['id']}.png").is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} item(s) have no image in {folder}: {', '.join(missing[:5])}")
    h = module.hparams
    scores = torch.full((len(batch),), float("nan"), device=module.device)
    present = [k for k, f in enumerate(failed) if not f]
    if present:
        images = torch.cat([load_image(folder / f"{batch[k]['id']}.png", h.height, h.width) for k in present])
        with torch.no_grad():
            scores[present] = module.guidance.score(images.to(module.device), [batch[k] for k in present]).float()
    return {"score": scores}
