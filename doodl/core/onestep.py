"""One-step classifier guidance, the baseline DOODL is compared against (SPEC.md section 7).

Notation: variable -> paper symbol
    l        -> the model input latent at timestep t
    x0_hat   -> (l - sqrt(1 - abar_t) * eps) / sqrt(abar_t), the one-step estimate of x_0
    s        -> x0_hat * sqrt(1 - abar_t) + l * (1 - sqrt(1 - abar_t)), what is decoded
    g        -> d loss(s) / d l, through the UNet
    eps_hat  -> eps + sqrt(1 - abar_t) * g, used for the DDIM step x_p = a*l + b*eps_hat
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from .edict import EpsFn, denoise_half
from .sampler import EDICTSampler, check_pair

LossFn = Callable[[Tensor], Tensor]  # latents s (B, C, H, W) -> per-item loss (B,)


def guided_eps(eps_fn: EpsFn, loss_fn: LossFn, l: Tensor, t: int, abar_t: float) -> tuple[Tensor, Tensor]:
    """(eps_hat, per-item loss) at latent l: one eps evaluation with a graph, one backward."""
    with torch.enable_grad():
        leaf = l.detach().requires_grad_(True)
        eps = eps_fn(leaf, t).to(l.dtype)
        s1 = math.sqrt(1.0 - abar_t)
        x0_hat = (leaf - s1 * eps) / math.sqrt(abar_t)
        s = x0_hat * s1 + leaf * (1.0 - s1)
        loss = loss_fn(s)
        (g,) = torch.autograd.grad(loss.sum(), leaf)
    return eps.detach() + s1 * g, loss.detach()


def one_step_guided_sample(
    sampler: EDICTSampler,
    eps_fn: EpsFn,
    loss_fn: LossFn | None,
    xT: Tensor,
    start: int = 0,
    stop: int | None = None,
    callback: Callable[[int, Tensor, Tensor | None], None] | None = None,
) -> Tensor:
    """Deterministic DDIM over ``sampler``'s schedule with one-step guidance at every step.

    ``loss_fn`` maps the latents s to a per-item loss (decode and the guidance scale inside);
    None gives plain DDIM. ``callback(i, latents, loss)`` is called after each step.
    """
    check_pair(xT, xT, ("xT", "xT"))
    x = xT.detach()
    for i in sampler.step_range(start, stop):
        s = sampler.steps[i]
        if loss_fn is None:
            with torch.no_grad():
                eps, loss = eps_fn(x, s.t).to(x.dtype), None
        else:
            eps, loss = guided_eps(eps_fn, loss_fn, x, s.t, s.abar_t)
        x = denoise_half(x, eps, s.a, s.b).detach()
        if callback is not None:
            callback(i, x, loss)
    return x
