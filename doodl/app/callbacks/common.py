"""What the callbacks share: gathering across ranks, atomic file writes, JSON-safe values, loggers."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from PIL import Image
from torch import Tensor

from doodl.run.images import to_uint8
from doodl.run.result import ItemResult, jsonable  # noqa: F401 (jsonable re-exported for the callbacks)


def gather_to_rank0(trainer, local: list[Any], barrier: str | None = None) -> list[Any] | None:
    """Every rank's ``local`` records, concatenated in rank order, on rank 0 (None on the others),
    after an optional barrier (files written by every rank are visible). Call it on every rank."""
    if barrier is not None:
        trainer.strategy.barrier(barrier)
    every = [r for part in gather(trainer, local) for r in part]
    return every if trainer.is_global_zero else None


def gather(trainer, obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (``[obj]`` on one process). Call it on every rank."""
    if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        out: list[Any] = [None] * trainer.world_size
        torch.distributed.all_gather_object(out, obj)
        return out
    return [obj]


def _replace(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)  # atomic: a reader (or a killed run) sees the old file or the new one, never half


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (through a temporary file beside it); raises on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    _replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n")


def write_png(path: Path, image: Tensor) -> None:
    """Save a (3, H, W) image in [0, 1] as PNG (8 bits by ``doodl.run.images.to_uint8``: the very
    pixels the run scored), atomically; raises on failure."""
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"expected an image of shape (3, H, W), got {tuple(image.shape)}")
    pixels = to_uint8(image).expand(3, -1, -1).permute(1, 2, 0).contiguous().numpy()  # (H, W, 3)
    write_image(path, Image.fromarray(pixels))


def write_image(path: Path, image: Image.Image) -> None:
    """Save a PIL image as PNG, atomically; raises on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    image.save(tmp, format="png")
    _replace(tmp, path)


def read_png(path: Path) -> Tensor:
    """A PNG written by ``write_png`` as a (3, H, W) uint8 tensor."""
    with Image.open(path) as im:
        return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).contiguous()


def wandb_loggers(trainer) -> list[WandbLogger]:
    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]


def tensorboard_loggers(trainer) -> list[TensorBoardLogger]:
    return [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]


def dataset_items(trainer) -> list[dict] | None:
    """The datamodule's item list, when the run has one."""
    dm = getattr(trainer, "datamodule", None)
    items = getattr(dm, "items", None)
    return list(items) if items is not None else None


def final_outputs(pl_module) -> list[ItemResult]:
    """The module's per-item results of this rank (``doodl.run.result.ItemResult``; see
    ``doodl.app.module.DOODL.final_outputs``)."""
    outs = getattr(pl_module, "final_outputs", None)
    if outs is None:
        raise AttributeError(
            f"{type(pl_module).__name__} has no 'final_outputs': the doodl callbacks need a module that "
            "lists its per-item results there (doodl.app.module.DOODL does)")
    return list(outs)
