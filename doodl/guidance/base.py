"""The one interface every guidance loss implements (SPEC.md section 6).

    loss = GuidanceLoss(...)(images, items)    images: (B, 3, H, W) in [0, 1]  ->  (B,), lower is better
    score = loss.score(images, items)           (B,), a human-meaningful number for logging
    loss.score_direction                        "max" or "min": which way the score improves

``items`` is an optional per-sample list of dicts from a prompt dataset, e.g.
``{"prompt": "a cat", "target_class": 3, "reference_images": ["a.png"], "target_score": 7.0}``;
an item's optional "generator" (a ``torch.Generator``) draws that image's random crops, so an
image's crops do not depend on the batch it is in (the app gives each item its own stream).
A loss built with a fixed target uses it; otherwise it reads its key from the items and raises
a ``ValueError`` naming the key when neither is there. Before a run, ``loss.item_keys`` (the item
keys it reads) and ``loss.check_item(item)`` (what is wrong with an item for this loss, as
messages) let the app check every item at once. All weights are frozen at construction
(``requires_grad_(False)``, eval mode, and ``train()`` keeps them in eval mode): gradients flow
only to the images.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

Items = Sequence[Mapping[str, Any]]


class GuidanceLoss(nn.Module):
    """Base class: a frozen, per-sample, differentiable loss on images in [0, 1].

    Args:
        weight: the loss is multiplied by this (the guidance scale of this term).
    """

    score_direction: str | None = "min"  # which way ``score`` improves: "max", "min" or None (neither)
    item_keys: tuple[str, ...] = ()  # the item keys this loss reads (subclasses: a property when a fixed value replaces one)

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = float(weight)

    def forward(self, images: Tensor, items: Items | None = None) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.no_grad()
    def score(self, images: Tensor, items: Items | None = None) -> Tensor:
        """Logging score of each image, (B,). The default is the loss itself (lower is better)."""
        return self(images, items).detach()

    def check_item(self, item: Mapping[str, Any]) -> list[str]:
        """What is wrong with ``item`` for this loss (missing or out-of-range keys), one message each;
        empty when it can run. Checked for every item before a run starts; the default: nothing."""
        return []

    def freeze_(self) -> "GuidanceLoss":
        """Freeze every weight and switch to eval mode; subclasses call this at the end of ``__init__``."""
        self.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> "GuidanceLoss":
        """Guidance models are frozen: dropout and batch norm stay in eval mode whatever ``mode`` is."""
        return super().train(False)


def check_images(images: Tensor) -> None:
    """Raise a ValueError unless ``images`` is a floating (B, 3, H, W) tensor."""
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a (B, 3, H, W) tensor in [0, 1], got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point in [0, 1], got dtype {images.dtype}")


def missing_key(key: str, item: Mapping[str, Any]) -> str | None:
    """The ``check_item`` message for an item without ``key`` (None when it has one)."""
    if item.get(key) is None:
        return f"no {key!r}: give the item a {key!r}, or set a fixed {key} on the loss"
    return None


def per_item(key: str, fixed: Any, items: Items | None, batch: int) -> list[Any]:
    """The value of ``key`` for each of ``batch`` samples: the fixed one if set, else read from ``items``."""
    if fixed is not None:
        return [fixed] * batch
    if items is None:
        raise ValueError(f"no {key!r}: set it on the loss, or pass items with a {key!r} key per sample")
    if len(items) != batch:
        raise ValueError(f"got {len(items)} items for {batch} images: pass one item per image")
    values = []
    for i, item in enumerate(items):
        if key not in item or item[key] is None:
            raise ValueError(f"items[{i}] has no {key!r} key and the loss has no fixed {key!r}: set one of them")
        values.append(item[key])
    return values
