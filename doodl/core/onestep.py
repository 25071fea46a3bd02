"""One-step classifier guidance, the baseline DOODL is compared against (SPEC.md sections 7, 9).

Notation: variable -> paper symbol
    l        -> the model input latent at timestep t
DDIM (f = eps):
    x0_hat   -> (l - sqrt(1 - abar_t) * eps) / sqrt(abar_t), the one-step estimate of x_0
    s        -> x0_hat * sqrt(1 - abar_t) + l * (1 - sqrt(1 - abar_t)), what is decoded
    g        -> d loss(s) / d l, through the UNet
    eps_hat  -> eps + sqrt(1 - abar_t) * g, used for the DDIM step x_p = a*l + b*eps_hat
Flow matching (f = v, the velocity; sigma the step's noise level):
    x0_hat   -> l - sigma * v, the one-step estimate of x_0 (SPEC.md section 9), what is decoded
    g        -> d loss(x0_hat) / d l, through the transformer
    v_hat    -> v + sigma * g (the DDIM rule with the noise level sqrt(1 - abar_t) read as sigma),
                used for the Euler step x' = l + (sigma_next - sigma) * v_hat
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
    s1 = math.sqrt(1.0 - abar_t)
    return _guided(eps_fn, loss_fn, l, t, lambda leaf, eps: (leaf - s1 * eps) / math.sqrt(abar_t) * s1 + leaf * (1.0 - s1), s1)


def guided_velocity(v_fn: EpsFn, loss_fn: LossFn, l: Tensor, t: float, sigma: float) -> tuple[Tensor, Tensor]:
    """(v_hat, per-item loss) at latent l for a flow model: loss on x0_hat = l - sigma * v."""
    return _guided(v_fn, loss_fn, l, t, lambda leaf, v: leaf - sigma * v, sigma)


def _guided(fn: EpsFn, loss_fn: LossFn, l: Tensor, t, decoded: Callable[[Tensor, Tensor], Tensor], weight: float):
    """(f + weight * d loss(decoded(l, f(l))) / d l, loss): one evaluation with a graph, one backward."""
    with torch.enable_grad():
        leaf = l.detach().requires_grad_(True)
        out = fn(leaf, t).to(l.dtype)
        loss = loss_fn(decoded(leaf, out))
        (g,) = torch.autograd.grad(loss.sum(), leaf)
    return out.detach() + weight * g, loss.detach()


def one_step_guided_sample(
    sampler: EDICTSampler,
    eps_fn: EpsFn,
    loss_fn: LossFn | None,
    xT: Tensor,
    start: int = 0,
    stop: int | None = None,
    callback: Callable[[int, Tensor, Tensor | None], None] | None = None,
) -> Tensor:
    """The plain (uncoupled) chain over ``sampler``'s schedule with one-step guidance at every step:
    deterministic DDIM, or the flow's Euler steps where ``sampler.kind == "flow"``.

    ``loss_fn`` maps the latents s to a per-item loss (decode and the guidance scale inside);
    None gives the unguided chain. ``callback(i, latents, loss)`` is called after each step.
    """
    check_pair(xT, xT, ("xT", "xT"))
    x = xT.detach()
    for i in sampler.step_range(start, stop):
        s = sampler.steps[i]
        if loss_fn is None:
            with torch.no_grad():
                f, loss = eps_fn(x, s.t).to(x.dtype), None
        elif s.kind == "flow":
            f, loss = guided_velocity(eps_fn, loss_fn, x, s.t, s.sigma)
        else:
            f, loss = guided_eps(eps_fn, loss_fn, x, s.t, s.abar_t)
        x = denoise_half(x, f, s.a, s.b).detach()
        if callback is not None:
            callback(i, x, loss)
    return x
