"""The DOODL update of the starting pair (SPEC.md section 4, step 5), built on torch.optim.

The reference rule, per latent pair (x_T, y_T), with the first sampled noise z:
    g = clip(-grad_scale * grad, +-clip_grad_val)     (tied: grad averaged over the pair)
    m = momentum * m + g                              (no dampening)
    latent += m + perturb * n,  n ~ N(0, I), the same n for x and y
    tied: x, y <- (x + y) / 2
    renormalize: latent <- latent * ||z|| / ||latent||   (Frobenius norm per item)
Here: SGD(lr=1, momentum, dampening=0) fed with clip(grad_scale * grad), which is the same
update, followed by perturb, tie and project as explicit steps under no_grad.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor


def item_norm(v: Tensor) -> Tensor:
    """Frobenius norm of each item (leading dim), shaped to broadcast: (B, 1, 1, 1)."""
    return v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))


class DOODLOptimizer:
    """Momentum sign-like SGD on latent pairs with clip, perturb, tie and renormalize.

    Args:
        pairs: (x, y) leaf tensors of shape (B, C, H, W) with ``requires_grad``; each pair is
            updated independently (an item's momentum never moves another's latents).
        grad_scale: the gradient is scaled by this before clipping (0.5 in the reference).
        clip_grad_val: elementwise clip of the scaled gradient (1e-3); None disables it.
        momentum: SGD momentum without dampening (0.9).
        perturb: std of the Gaussian perturbation added after each step (1e-4); 0 disables it.
        tied: average gradients over the pair and the pair itself after each step (True).
        renormalize: project each latent back to the per-item norm it had at construction.
        generator: the ``torch.Generator`` for the perturbation noise (seeded runs).
    """

    def __init__(
        self,
        pairs: Sequence[tuple[Tensor, Tensor]],
        grad_scale: float = 0.5,
        clip_grad_val: float | None = 1e-3,
        momentum: float = 0.9,
        perturb: float = 1e-4,
        tied: bool = True,
        renormalize: bool = True,
        generator: torch.Generator | None = None,
    ):
        pairs = [tuple(p) for p in pairs]
        if not pairs:
            raise ValueError("pairs is empty: pass at least one (x, y) pair of latents")
        for k, pair in enumerate(pairs):
            if len(pair) != 2 or not all(isinstance(v, Tensor) and v.is_leaf and v.requires_grad for v in pair):
                raise ValueError(f"pairs[{k}] must be two leaf tensors with requires_grad=True (use nn.Parameter)")
            if pair[0].shape != pair[1].shape or pair[0].dim() < 2:
                raise ValueError(f"pairs[{k}]: x and y need one shape (B, ...), got {tuple(pair[0].shape)} and {tuple(pair[1].shape)}")
        if clip_grad_val is not None and not clip_grad_val > 0:
            raise ValueError(f"clip_grad_val must be > 0 or None, got {clip_grad_val}")
        if perturb < 0:
            raise ValueError(f"perturb must be >= 0, got {perturb}")
        self.pairs = pairs
        self.grad_scale, self.clip_grad_val, self.perturb = grad_scale, clip_grad_val, perturb
        self.tied, self.renormalize, self.generator = tied, renormalize, generator
        self.target_norms = [item_norm(x.detach()).clone() for x, _ in pairs]
        params = [v for pair in pairs for v in pair]
        self.optimizer = torch.optim.SGD(params, lr=1.0, momentum=momentum, dampening=0.0)

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def _prepare_grads(self, x: Tensor, y: Tensor) -> bool:
        """Tie, scale and clip a pair's gradients in place. False (grads dropped, so SGD leaves
        the pair and its momentum as they are) where the pair has no gradient or a non-finite one."""
        if x.grad is None and y.grad is None:
            return False
        gx = torch.zeros_like(x) if x.grad is None else x.grad
        gy = torch.zeros_like(y) if y.grad is None else y.grad
        if not (torch.isfinite(gx).all() and torch.isfinite(gy).all()):
            x.grad = y.grad = None
            return False
        if self.tied:
            gx = gy = 0.5 * (gx + gy)
        grads = []
        for g in (gx, gy):
            g = self.grad_scale * g
            if self.clip_grad_val is not None:
                g = g.clamp(-self.clip_grad_val, self.clip_grad_val)
            grads.append(g)
        x.grad, y.grad = grads
        return True

    @torch.no_grad()
    def step(self) -> list[bool]:
        """One DOODL update of every pair; returns, per pair, whether it was updated (a pair
        without a gradient, or whose gradient holds NaN or inf, keeps its latents and momentum)."""
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

    def state_dict(self) -> dict[str, Any]:
        state = {"optimizer": self.optimizer.state_dict(), "target_norms": [n.clone() for n in self.target_norms]}
        if self.generator is not None:
            state["generator"] = self.generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.target_norms = [n.to(x.device, x.dtype) for n, (x, _) in zip(state["target_norms"], self.pairs)]
        if self.generator is not None and "generator" in state:
            self.generator.set_state(state["generator"])
