"""``doodl test``: score the images a run saved (``final/<id>.png``) with the configured guidance."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .start import load_image


def evaluate_batch(module: Any, batch: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """Per-item guidance score of the saved image of each item in ``module.hparams.eval_dir``."""
    folder = module.hparams.eval_dir
    if folder is None:
        raise ValueError("doodl test needs model.eval_dir: the folder of a run's final images (RUN/final)")
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"eval_dir {folder} does not exist: point it at a finished run's final/ folder")
    missing = [it["id"] for it in batch if not (folder / f"{it['id']}.png").is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} item(s) have no image in {folder}: {', '.join(missing[:5])}")
    h = module.hparams
    images = torch.cat([load_image(folder / f"{it['id']}.png", h.height, h.width) for it in batch]).to(module.device)
    with torch.no_grad():
        scores = module.guidance.score(images, list(batch)).float()
    return {"score": scores}
