"""Updates of the starting pair (SPEC.md section 4, step 5; peers' rules in section 10).

Every update implements ``LatentUpdate`` and is built as ``Update(pairs, generator, **settings)``:
the item's latent pairs first, its perturbation generator second (so a config can inject the
class as a factory the runner calls with those two), everything else by keyword.

The frame shared by every strategy (``PairUpdate``), per latent pair (x, y), per step:
    1. a pair without a gradient, or with a NaN/inf in it, is skipped (latents and state kept)
    2. regularizer (optional): grad_v += dR/dv for v in (x, y): the gradient of R(x) + R(y)
       added to the loss, computed analytically; it then goes through steps 3-4 as the loss's does
    3. tied: grad_x, grad_y <- (grad_x + grad_y) / 2
    4. the strategy's own scaling/clipping, then its torch.optim step
    5. latent += perturb * n,  n ~ N(0, I), the same n for x and y
    6. tied: x, y <- (x + y) / 2
    7. renormalize (optional): latent <- latent * ||z|| / ||latent|| (z: the first noise, per item)

The paper's update (``DOODLOptimizer``):
    g = clip(-grad_scale * grad, +-clip_grad_val);  m = momentum * m + g (no dampening);
    latent += m.  Here: SGD(lr=1, momentum, dampening=0) fed with clip(grad_scale * grad).
"""

from __future__ import annotations

import math
from typing import Any, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor


def item_norm(v: Tensor) -> Tensor:
    """Frobenius norm of each item (leading dim), shaped to broadcast: (B, 1, 1, 1)."""
    return v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))


@runtime_checkable
class LatentUpdate(Protocol):
    """What the runner needs of an update: built as ``Update(pairs, generator, **settings)``."""

    def step(self) -> list[bool]:
        """Update every pair from its ``.grad``; per pair, whether it was updated."""
        ...

    def zero_grad(self) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class NormRegularizer:
    """ReNO's noise-norm regularizer (SPEC section 10), per item of d entries:
        R(v) = weight * (0.5 * ||v||^2 - (d - 1) * log ||v||)
    the negative log-density of the norm of a d-dimensional standard normal (up to a constant),
    smallest at ||v|| = sqrt(d - 1). Its gradient, used by the updates, is analytic:
        dR/dv = weight * v * (1 - (d - 1) / ||v||^2).
    Computed in at least float32 (ReNO computes it in float32), returned in v's dtype."""

    def __init__(self, weight: float = 0.01):
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"regularizer_weight must be a finite number > 0, got {weight}")
        self.weight = float(weight)

    @staticmethod
    def _wide(v: Tensor) -> Tensor:
        return v.to(torch.promote_types(v.dtype, torch.float32))

    def value(self, v: Tensor) -> Tensor:
        """R(v) per item, shape (B,)."""
        w = self._wide(v).flatten(1)
        d = w.shape[1]
        sq = (w * w).sum(dim=1)
        return (self.weight * (0.5 * sq - 0.5 * (d - 1) * torch.log(sq))).to(v.dtype)

    def grad(self, v: Tensor) -> Tensor:
        """dR/dv, shape of v."""
        w = self._wide(v)
        d = w[0].numel()
        sq = item_norm(w) ** 2
        return (self.weight * w * (1 - (d - 1) / sq)).to(v.dtype)


REGULARIZERS: dict[str, type | None] = {"norm": NormRegularizer, "none": None}


def make_regularizer(name: str, weight: float) -> NormRegularizer | None:
    """The regularizer called ``name`` ("none": no regularizer); unknown names list the known ones."""
    if name not in REGULARIZERS:
        known = ", ".join(repr(k) for k in REGULARIZERS)
        raise ValueError(f"unknown regularizer {name!r}: known regularizers are {known}")
    cls = REGULARIZERS[name]
    return None if cls is None else cls(weight)


class PairUpdate(LatentUpdate):
    """Shared frame of the updates (steps 1-3 and 5-7 of the module docstring).

    ``perturb``, ``renormalize`` and ``regularizer`` left None take the strategy's published value
    (``DEFAULTS``): a config that switches ``class_path`` from one strategy to another (jsonargparse
    then keeps the earlier class's values of same-named settings) so gets the new one's defaults.

    A subclass supplies ``DEFAULTS``, ``_make_optimizer(params)`` (a torch.optim optimizer, one state per
    latent, so an item's state never moves another's latents) and ``_transform(g)`` (step 4's
    scaling/clipping of one latent's gradient, per item).

    Args:
        pairs: (x, y) leaf tensors of shape (B, C, H, W) with ``requires_grad``.
        generator: the ``torch.Generator`` of the perturbation noise (seeded runs).
        perturb: std of the Gaussian perturbation added after each step; 0 disables it.
        tied: average gradients over the pair and the pair itself after each step.
        renormalize: project each latent back to the per-item norm it had at construction.
        regularizer: name of a loss term on the noise whose gradient is added (``REGULARIZERS``:
            "norm", ReNO's; "none"). Exclusive with ``renormalize`` (which undoes the norm).
        regularizer_weight: its weight lambda.
    """

    DEFAULTS: dict[str, Any] = {}  # the strategy's published perturb, renormalize, regularizer

    def __init__(
        self,
        pairs: Sequence[tuple[Tensor, Tensor]],
        generator: torch.Generator | None = None,
        *,
        perturb: float | None,
        tied: bool,
        renormalize: bool | None,
        regularizer: str | None,
        regularizer_weight: float,
    ):
        perturb = self.DEFAULTS["perturb"] if perturb is None else perturb
        renormalize = self.DEFAULTS["renormalize"] if renormalize is None else renormalize
        regularizer = self.DEFAULTS["regularizer"] if regularizer is None else regularizer
        pairs = [tuple(p) for p in pairs]
        if not pairs:
            raise ValueError("pairs is empty: pass at least one (x, y) pair of latents")
        for k, pair in enumerate(pairs):
            if len(pair) != 2 or not all(isinstance(v, Tensor) and v.is_leaf and v.requires_grad for v in pair):
                raise ValueError(f"pairs[{k}] must be two leaf tensors with requires_grad=True (use nn.Parameter)")
            if pair[0].shape != pair[1].shape or pair[0].dim() < 2:
                raise ValueError(f"pairs[{k}]: x and y need one shape (B, ...), got {tuple(pair[0].shape)} and {tuple(pair[1].shape)}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__} "
                             "(pass the update's settings by keyword)")
        if not (perturb >= 0 and math.isfinite(perturb)):
            raise ValueError(f"perturb must be >= 0, got {perturb}")
        if renormalize and regularizer != "none":
            raise ValueError(f"renormalize=True with regularizer={regularizer!r}: the projection undoes the norm the "
                             "regularizer acts on; set renormalize=False to use the regularizer, or regularizer='none'")
        self.pairs = pairs
        self.perturb, self.tied, self.renormalize, self.generator = perturb, tied, renormalize, generator
        self.regularizer_name, self.regularizer = regularizer, make_regularizer(regularizer, regularizer_weight)
        self.target_norms = [item_norm(x.detach()).clone() for x, _ in pairs]
        self.optimizer = self._make_optimizer([v for pair in pairs for v in pair])

    def _make_optimizer(self, params: list[Tensor]) -> torch.optim.Optimizer:
        raise NotImplementedError

    def _transform(self, g: Tensor) -> Tensor:
        raise NotImplementedError

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def _prepare_grads(self, x: Tensor, y: Tensor) -> bool:
        """Regularize, tie and transform a pair's gradients in place. False (grads dropped, so
        the optimizer leaves the pair and its state as they are) where the pair has no gradient
        or a non-finite one."""
        if x.grad is None and y.grad is None:
            return False
        gx = torch.zeros_like(x) if x.grad is None else x.grad
        gy = torch.zeros_like(y) if y.grad is None else y.grad
        if not (torch.isfinite(gx).all() and torch.isfinite(gy).all()):
            x.grad = y.grad = None
            return False
        if self.regularizer is not None:
            gx, gy = gx + self.regularizer.grad(x.detach()), gy + self.regularizer.grad(y.detach())
            if not (torch.isfinite(gx).all() and torch.isfinite(gy).all()):
                x.grad = y.grad = None
                return False
        if self.tied:
            gx = gy = 0.5 * (gx + gy)
        x.grad, y.grad = self._transform(gx), self._transform(gy)
        return True

    @torch.no_grad()
    def step(self) -> list[bool]:
        """One update of every pair; returns, per pair, whether it was updated (a pair without a
        gradient, or whose gradient holds NaN or inf, keeps its latents and optimizer state)."""
        updated = [self._prepare_grads(x, y) for x, y in self.pairs]
        self.optimizer.step()
        for ok, (x, y), norm in zip(updated, self.pairs, self.target_norms):
            if not ok:
                continue
            if self.perturb > 0:
                n = torch.randn(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
                x.add_(n, alpha=self.perturb)
                y.add_(n, alpha=self.perturb)
            if self.tied:
                mean = 0.5 * (x + y)
                x.copy_(mean)
                y.copy_(mean)
            if self.renormalize:
                for v in (x, y):
                    v.mul_(norm / item_norm(v))
        return updated

    def regularizer_value(self) -> list[Tensor]:
        """Per pair, R(x) + R(y) per item (zeros without a regularizer): the loss term for logs."""
        if self.regularizer is None:
            return [torch.zeros(x.shape[0], dtype=x.dtype, device=x.device) for x, _ in self.pairs]
        return [self.regularizer.value(x.detach()) + self.regularizer.value(y.detach()) for x, y in self.pairs]

    def state_dict(self) -> dict[str, Any]:
        state = {"kind": type(self).__name__, "optimizer": self.optimizer.state_dict(),
                 "target_norms": [n.clone() for n in self.target_norms]}
        if self.generator is not None:
            state["generator"] = self.generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        kind = state.get("kind", "DOODLOptimizer")  # states from before the strategies were the paper's
        if kind != type(self).__name__:
            raise ValueError(f"this state is of a {kind} update, not of a {type(self).__name__}: "
                             "resume with the update the run was started with")
        if len(state["target_norms"]) != len(self.pairs):
            raise ValueError(f"the state holds {len(state['target_norms'])} pairs, this update {len(self.pairs)}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.target_norms = [n.to(x.device, x.dtype) for n, (x, _) in zip(state["target_norms"], self.pairs)]
        if self.generator is not None and "generator" in state:
            self.generator.set_state(state["generator"])


class DOODLOptimizer(PairUpdate):
    """The paper's update: momentum sign-like SGD with clip, perturb, tie and renormalize.

    Args:
        pairs, generator: see ``PairUpdate``; each pair is updated independently.
        grad_scale: the gradient is scaled by this before clipping (0.5 in the reference).
        clip_grad_val: elementwise clip of the scaled gradient (1e-3); None disables it.
        momentum: SGD momentum without dampening (0.9).
        perturb: std of the Gaussian perturbation added after each step (None: 1e-4); 0 disables it.
        tied: average gradients over the pair and the pair itself after each step (True).
        renormalize: project each latent back to the per-item norm it had at construction (None: True).
        regularizer, regularizer_weight: see ``PairUpdate`` (None: "none", the paper has none).
    """

    DEFAULTS = {"perturb": 1e-4, "renormalize": True, "regularizer": "none"}

    def __init__(
        self,
        pairs: Sequence[tuple[Tensor, Tensor]],
        generator: torch.Generator | None = None,
        *,
        grad_scale: float = 0.5,
        clip_grad_val: float | None = 1e-3,
        momentum: float = 0.9,
        perturb: float | None = None,
        tied: bool = True,
        renormalize: bool | None = None,
        regularizer: str | None = None,
        regularizer_weight: float = 0.01,
    ):
        if clip_grad_val is not None and not clip_grad_val > 0:
            raise ValueError(f"clip_grad_val must be > 0 or None, got {clip_grad_val}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.grad_scale, self.clip_grad_val, self.momentum = grad_scale, clip_grad_val, momentum
        super().__init__(pairs, generator, perturb=perturb, tied=tied, renormalize=renormalize,
                         regularizer=regularizer, regularizer_weight=regularizer_weight)

    def _make_optimizer(self, params: list[Tensor]) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=1.0, momentum=self.momentum, dampening=0.0)

    def _transform(self, g: Tensor) -> Tensor:
        g = self.grad_scale * g
        if self.clip_grad_val is not None:
            g = g.clamp(-self.clip_grad_val, self.clip_grad_val)
        return g
