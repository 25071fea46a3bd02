"""Combining losses: a weighted sum of guidance losses, and any user callable as a loss.

    CompositeLoss:  loss = weight * sum_i w_i * loss_i(images, items)     (each loss_i keeps its own weight)
    CallableLoss:   loss = weight * fn(images, items)                     fn -> (B,)
"""

from __future__ import annotations

import importlib
from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from .base import GuidanceLoss, Items, check_images

LossFn = Callable[[Tensor, "Items | None"], Tensor]


def _check_per_sample(value: Tensor, batch: int, who: str) -> Tensor:
    if not isinstance(value, Tensor) or value.shape != (batch,):
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"{who} must return a per-sample loss of shape ({batch},), got {shape}")
    return value


class CompositeLoss(GuidanceLoss):
    """Weighted sum of guidance losses.

    Args:
        losses: a list of losses, or a mapping name -> loss (names appear in ``scores``).
        weights: one extra factor per loss (default all 1; each loss's own ``weight`` still applies).
        weight: scale of the sum.
    """

    def __init__(
        self,
        losses: Sequence[GuidanceLoss] | Mapping[str, GuidanceLoss],
        weights: Sequence[float] | None = None,
        weight: float = 1.0,
    ):
        super().__init__(weight)
        if isinstance(losses, Mapping):
            names, modules = [str(k) for k in losses], list(losses.values())
        else:
            modules = list(losses)
            names = [f"{type(m).__name__.lower()}_{i}" for i, m in enumerate(modules)]
        if not modules:
            raise ValueError("losses is empty: give at least one guidance loss")
        for name, module in zip(names, modules):
            if not isinstance(module, GuidanceLoss):
                kind = type(module).__name__
                raise TypeError(f"loss {name!r} is a {kind}, not a GuidanceLoss (wrap callables in CallableLoss)")
        weights = [1.0] * len(modules) if weights is None else [float(w) for w in weights]
        if len(weights) != len(modules):
            raise ValueError(f"got {len(weights)} weights for {len(modules)} losses")
        self.names = names
        self.losses = nn.ModuleList(modules)
        self.weights = weights
        self.freeze_()

    def forward(self, images: Tensor, items: Items | None = None) -> Tensor:
        total = 0
        for name, w, loss in zip(self.names, self.weights, self.losses):
            total = total + w * _check_per_sample(loss(images, items), images.shape[0], f"loss {name!r}")
        return self.weight * total

    @property
    def item_keys(self) -> tuple[str, ...]:
        """Every key any of the losses reads."""
        return tuple(dict.fromkeys(k for loss in self.losses for k in loss.item_keys))

    def check_item(self, item) -> list[str]:
        """Every component's problems with ``item``, each named by its loss."""
        return [f"{name}: {p}" for name, loss in zip(self.names, self.losses) for p in loss.check_item(item)]

    @torch.no_grad()
    def scores(self, images: Tensor, items: Items | None = None) -> dict[str, Tensor]:
        """Each component's own logging score, by name."""
        return {name: loss.score(images, items) for name, loss in zip(self.names, self.losses)}


def _import_callable(path: str) -> LossFn:
    """'package.module:function' or 'package.module.function' -> the object."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"fn {path!r} must be an import path like 'package.module:function'")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class CallableLoss(GuidanceLoss):
    """Any callable ``fn(images, items) -> (B,)`` as a guidance loss.

    Args:
        fn: the callable, or its import path ('package.module:function') for configs.
        weight: scale of the loss.
        name: shown in repr.
        item_keys: the item keys ``fn`` reads (each must be in every item; the app checks them
            before a run and does not warn about those columns).
    """

    def __init__(self, fn: LossFn | str, weight: float = 1.0, name: str | None = None,
                 item_keys: Sequence[str] = ()):
        super().__init__(weight)
        if isinstance(item_keys, str) or not all(isinstance(k, str) for k in item_keys):
            raise ValueError(f"item_keys must be a list of key names, got {item_keys!r}")
        self.item_keys = tuple(item_keys)
        if isinstance(fn, str):
            fn = _import_callable(fn)
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        if isinstance(fn, nn.Module):
            fn.requires_grad_(False)
        self.freeze_()

    def check_item(self, item) -> list[str]:
        return [f"no {k!r}: the callable loss {self.name!r} reads it from every item"
                for k in self.item_keys if item.get(k) is None]

    def forward(self, images: Tensor, items: Items | None = None) -> Tensor:
        check_images(images)
        return self.weight * _check_per_sample(self.fn(images, items), images.shape[0], f"callable {self.name!r}")

    def extra_repr(self) -> str:
        return f"name={self.name!r}, weight={self.weight}"
