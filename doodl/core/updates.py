"""The peers' updates of the starting pair and named presets of the published defaults.

SPEC.md section 10. Each class's defaults are its source's published settings, so a config
``update: {class_path: doodl.core.updates.NesterovSGDUpdate}`` is ReNO's update as published:
    DOODLOptimizer      "paper": clipped momentum SGD, perturb, tie, renormalize (section 4)
    AdamWUpdate         "dno":   AdamW lr 0.01 (torch's betas, eps, weight decay), grad-norm clip 1.0
    NesterovSGDUpdate   "reno":  SGD lr 5, Nesterov momentum 0.9, grad-norm clip 0.1,
                                 norm regularizer lambda 0.01
The peers optimize one latent; here the pair is tied by default (both members equal), which is
that one latent. Gradient-norm clipping is per latent and per item (the leading dim):
    g <- g * min(1, max_grad_norm / (||g|| + 1e-6))      (torch.nn.utils.clip_grad_norm_'s rule)
so an item's gradient never rescales another's. It comes after the regularizer and the tie, as
ReNO clips the gradient of its whole loss (regularizer included).
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor

from .update import REGULARIZERS, DOODLOptimizer, LatentUpdate, NormRegularizer, PairUpdate, item_norm

CLIP_EPS = 1e-6  # as torch.nn.utils.clip_grad_norm_


def clip_item_norm(g: Tensor, max_norm: float | None) -> Tensor:
    """Scale each item of ``g`` (leading dim) to a Frobenius norm of at most ``max_norm``."""
    if max_norm is None:
        return g
    coef = (max_norm / (item_norm(g) + CLIP_EPS)).clamp(max=1.0)
    return g * coef


def _check_positive(name: str, value: float | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0{' or None' if allow_none else ''}, got {value}")


class _ClippedUpdate(PairUpdate):
    """A ``PairUpdate`` with a step size ``lr`` whose gradient is clipped per item to ``max_grad_norm``
    (``clip_item_norm``; None: no clip) before its optimizer's step: what DNO's and ReNO's updates share."""

    def __init__(self, pairs: Sequence[tuple[Tensor, Tensor]], generator: torch.Generator | None = None, *,
                 lr: float, max_grad_norm: float | None, **shared: Any):
        _check_positive("lr", lr)
        _check_positive("max_grad_norm", max_grad_norm, allow_none=True)
        self.lr, self.max_grad_norm = lr, max_grad_norm
        super().__init__(pairs, generator, **shared)

    def _transform(self, g: Tensor) -> Tensor:
        return clip_item_norm(g, self.max_grad_norm)


class AdamWUpdate(_ClippedUpdate):
    """DNO's update: AdamW on the latents after per-item gradient-norm clipping.

        g = clip_norm(grad);  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
        latent <- latent (1 - lr wd) - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)

    Args:
        pairs, generator: see ``PairUpdate``.
        lr, betas, eps, weight_decay: ``torch.optim.AdamW``'s (0.01; torch's defaults otherwise).
        max_grad_norm: per-item gradient-norm clip (1.0); None disables it.
        perturb, tied, renormalize, regularizer, regularizer_weight: see ``PairUpdate``; None
            takes DNO's: no perturbation (0), no projection (False), no regularizer ("none").
    """

    DEFAULTS = {"perturb": 0.0, "renormalize": False, "regularizer": "none"}

    def __init__(
        self,
        pairs: Sequence[tuple[Tensor, Tensor]],
        generator: torch.Generator | None = None,
        *,
        lr: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        max_grad_norm: float | None = 1.0,
        perturb: float | None = None,
        tied: bool = True,
        renormalize: bool | None = None,
        regularizer: str | None = None,
        regularizer_weight: float = 0.01,
    ):
        _check_positive("eps", eps)
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas}")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        self.betas, self.eps, self.weight_decay = tuple(betas), eps, weight_decay
        super().__init__(pairs, generator, lr=lr, max_grad_norm=max_grad_norm, perturb=perturb, tied=tied,
                         renormalize=renormalize, regularizer=regularizer, regularizer_weight=regularizer_weight)

    def _make_optimizer(self, params: list[Tensor]) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=self.lr, betas=self.betas, eps=self.eps, weight_decay=self.weight_decay)


class NesterovSGDUpdate(_ClippedUpdate):
    """ReNO's update: SGD with Nesterov momentum after per-item gradient-norm clipping, with its
    noise-norm regularizer (``NormRegularizer``) added to the gradient.

        g = clip_norm(grad + dR/dlatent);  b = momentum b + g;  latent <- latent - lr (g + momentum b)

    Args:
        pairs, generator: see ``PairUpdate``.
        lr: step size (5.0).
        momentum: Nesterov momentum, no dampening (0.9); must be > 0.
        max_grad_norm: per-item gradient-norm clip (0.1); None disables it.
        perturb, tied, renormalize: see ``PairUpdate``; None takes ReNO's: no perturbation (0),
            no projection (False).
        regularizer, regularizer_weight: None takes ReNO's, "norm" (lambda 0.01); "none" for none.
    """

    DEFAULTS = {"perturb": 0.0, "renormalize": False, "regularizer": "norm"}

    def __init__(
        self,
        pairs: Sequence[tuple[Tensor, Tensor]],
        generator: torch.Generator | None = None,
        *,
        lr: float = 5.0,
        momentum: float = 0.9,
        max_grad_norm: float | None = 0.1,
        perturb: float | None = None,
        tied: bool = True,
        renormalize: bool | None = None,
        regularizer: str | None = None,
        regularizer_weight: float = 0.01,
    ):
        if not 0 < momentum < 1:
            raise ValueError(f"momentum must be in (0, 1) for Nesterov momentum, got {momentum}")
        self.momentum = momentum
        super().__init__(pairs, generator, lr=lr, max_grad_norm=max_grad_norm, perturb=perturb, tied=tied,
                         renormalize=renormalize, regularizer=regularizer, regularizer_weight=regularizer_weight)

    def _make_optimizer(self, params: list[Tensor]) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, dampening=0.0, nesterov=True)


# the type of a config's update: ``factory(pairs, generator)`` (a class above, or update_preset's)
UpdateFactory = Callable[[Sequence[tuple[Tensor, Tensor]], Optional[torch.Generator]], LatentUpdate]

PRESETS: dict[str, type[PairUpdate]] = {"paper": DOODLOptimizer, "dno": AdamWUpdate, "reno": NesterovSGDUpdate}


def settings_of(cls: type) -> list[str]:
    """The keyword settings an update class takes (all but pairs and generator)."""
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def update_preset(name: str, **overrides: Any) -> UpdateFactory:
    """A factory ``factory(pairs, generator) -> LatentUpdate`` of the preset ``name`` ("paper",
    "dno", "reno": the published defaults of SPEC sections 4 and 10) with ``overrides`` applied.
    Unknown preset, setting or regularizer names raise a ValueError listing the known ones."""
    if name not in PRESETS:
        known = ", ".join(repr(k) for k in PRESETS)
        raise ValueError(f"unknown update preset {name!r}: known presets are {known}")
    cls = PRESETS[name]
    known_settings = settings_of(cls)
    unknown = sorted(set(overrides) - set(known_settings))
    if unknown:
        raise ValueError(f"preset {name!r} ({cls.__name__}) has no setting {', '.join(map(repr, unknown))}: "
                         f"its settings are {', '.join(known_settings)}")
    factory = functools.partial(cls, **overrides)
    probe = torch.ones(1, 1)  # builds the update once on a dummy pair: bad values fail here, not mid-run
    factory([(torch.nn.Parameter(probe.clone()), torch.nn.Parameter(probe.clone()))], None)
    return factory


__all__ = [
    "AdamWUpdate", "DOODLOptimizer", "LatentUpdate", "NesterovSGDUpdate", "NormRegularizer", "PRESETS",
    "PairUpdate", "REGULARIZERS", "UpdateFactory", "clip_item_norm", "settings_of", "update_preset",
]
