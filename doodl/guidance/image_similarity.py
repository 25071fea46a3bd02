"""Personalization: CLIP distance to the mean embedding of a few reference images.

SPEC.md section 6. With e_j the unit-norm CLIP embeddings of the reference images
(CLIP preprocessing: resize the short side, center crop):
    v = mean_j e_j / |mean_j e_j|                (the renormalized mean)
    loss = weight * reduce_crops 2 * arcsin(|u_k - v| / 2)^2
"""

from __future__ import annotations

import os
from typing import Sequence, Union

import torch
from torch import Tensor

from .base import Items, missing_key, per_item
from .clip_model import OpenCLIP
from .clip_text import CLIPEmbeddingLoss, Reduction
from .cutouts import Cutouts

Reference = Union[str, os.PathLike, Tensor]


def load_image(path: str | os.PathLike) -> Tensor:
    """An image file -> (3, H, W) float tensor in [0, 1]; errors name the file."""
    from PIL import Image, UnidentifiedImageError

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"reference image {path!r} not found")
    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
            data = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
            return data.view(rgb.height, rgb.width, 3).permute(2, 0, 1).float() / 255
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ValueError(f"cannot read reference image {path!r}: {err}") from err


def _as_image_list(refs: Reference | Sequence[Reference]) -> list[Reference]:
    if isinstance(refs, (str, os.PathLike)):
        return [refs]
    if isinstance(refs, Tensor):
        if refs.dim() == 3:
            return [refs]
        if refs.dim() == 4:
            return list(refs)
        raise ValueError(f"reference image tensors must be (3, H, W) or (N, 3, H, W), got {tuple(refs.shape)}")
    refs = list(refs)
    if not refs:
        raise ValueError("reference_images is empty: give at least one image file or tensor")
    return [r for ref in refs for r in _as_image_list(ref)]


class ImageSimilarityLoss(CLIPEmbeddingLoss):
    """Spherical CLIP distance to the renormalized mean embedding of reference images.

    Args:
        clip: ``OpenCLIP(model_name, pretrained)``.
        reference_images: fixed references: image paths and/or (3, H, W) / (N, 3, H, W) tensors in [0, 1];
            None reads ``items[i]["reference_images"]`` (paths or tensors) per sample.
        cutouts, reduction, weight: see ``CLIPEmbeddingLoss``.
    """

    def __init__(
        self,
        clip: OpenCLIP,
        reference_images: Reference | Sequence[Reference] | None = None,
        cutouts: Cutouts | None = None,
        reduction: Reduction = "min",
        weight: float = 1.0,
    ):
        super().__init__(clip, cutouts, reduction, weight)
        self._path_cache: dict[tuple[str, ...], Tensor] = {}
        self.fixed_target: Tensor | None = None
        if reference_images is not None:
            self.fixed_target = self.reference_embedding(reference_images)
        self.freeze_()

    @property
    def item_keys(self) -> tuple[str, ...]:
        return () if self.fixed_target is not None else ("reference_images",)

    def check_item(self, item) -> list[str]:
        """The item's ``reference_images``, unless fixed: present, and every file there and decoding."""
        if self.fixed_target is not None:
            return []
        missing = missing_key("reference_images", item)
        if missing:
            return [missing]
        try:
            refs = _as_image_list(item["reference_images"])
        except (ValueError, TypeError) as err:
            return [str(err)]
        problems = []
        for ref in refs:
            if isinstance(ref, (str, os.PathLike)):
                try:
                    load_image(ref)
                except (FileNotFoundError, ValueError) as err:
                    problems.append(str(err))
            elif not isinstance(ref, Tensor) or ref.dim() != 3 or ref.shape[0] != 3:
                problems.append(f"a reference image must be a path or a (3, H, W) tensor, got {type(ref).__name__}")
        return problems

    def reference_embedding(self, refs: Reference | Sequence[Reference]) -> Tensor:
        """(D,) renormalized mean of the references' unit-norm embeddings (paths cached)."""
        refs = _as_image_list(refs)
        key = tuple(os.fspath(r) for r in refs) if all(isinstance(r, (str, os.PathLike)) for r in refs) else None
        if key is not None and key in self._path_cache:
            return self._path_cache[key]
        images = [load_image(r) if isinstance(r, (str, os.PathLike)) else r for r in refs]
        for i, image in enumerate(images):
            if image.dim() != 3 or image.shape[0] != 3 or not image.is_floating_point():
                raise ValueError(f"reference image {i} must be a float (3, H, W) tensor in [0, 1], got {tuple(image.shape)}")
        device = self.clip.mean.device
        with torch.no_grad():
            batch = torch.stack([self.clip.resize(im[None].to(device))[0] for im in images])
            mean = self.clip.embed_images(batch).mean(0)
        target = mean / mean.norm()
        if key is not None:
            self._path_cache[key] = target
        return target

    def targets(self, items: Items | None, batch: int) -> Tensor:
        refs = per_item("reference_images", self.fixed_target, items, batch)
        if self.fixed_target is not None:
            return self.fixed_target.expand(batch, -1)
        return torch.stack([self.reference_embedding(r) for r in refs])
