"""What the callbacks share: gathering across ranks, atomic file writes, JSON-safe values, loggers."""

from __future__ import annotations

import json
import math
import numbers
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from PIL import Image
from torch import Tensor

from ..images import to_uint8


def gather(trainer, obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (``[obj]`` on one process). Call it on every rank."""
    if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        out: list[Any] = [None] * trainer.world_size
        torch.distributed.all_gather_object(out, obj)
        return out
    return [obj]


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
    """Save a (3, H, W) image in [0, 1] as PNG (8 bits by ``doodl.app.images.to_uint8``: the very
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


def final_outputs(pl_module) -> list[dict]:
    """The module's per-item results of this rank (see ``doodl.app.module.DOODL.final_outputs``)."""
    outs = getattr(pl_module, "final_outputs", None)
    if outs is None:
        raise AttributeError(
            f"{type(pl_module).__name__} has no 'final_outputs': the doodl callbacks need a module that "
            "lists its per-item results there (doodl.app.module.DOODL does)")
    return list(outs)
