"""Atomic file writes (a reader, or a killed run, sees the old file or the new one, never half) and
the PNG form of delivered images: shared by the Lightning callbacks and ``doodl compare``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .images import to_uint8
from .result import jsonable


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
