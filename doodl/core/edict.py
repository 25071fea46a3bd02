"""EDICT coupled steps and their exact inverses (SPEC.md section 3), as pure functions.

Notation: variable -> paper symbol
    x, y      -> the coupled pair (x_t, y_t); generation starts from x_T = y_T = noise
    eps(., t) -> the model with guidance already applied (``eps_fn``): the noise eps for DDIM, the
                 velocity v for flow matching (SPEC.md section 9); t is the model's timestep
    a, b      -> coefficients of the step x' = a*x + b*eps (``schedule``: DDIM, or a = 1 and
                 b = sigma_next - sigma for the flow's Euler step)
    p         -> the mixing weight (``mix``, 0.93 by default)

A step is two *half-steps* "u <- a * u + b * eps(v, t)" (v is left unchanged, so it is always
readable from the output) followed by the mixing layer. With leapfrog on, odd steps swap the
roles of x and y. Every function here has its exact inverse right beside it.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

EpsFn = Callable[[Tensor, int], Tensor]  # t: an int timestep (DDIM) or a float one (flow)


def eps_at(eps_fn: EpsFn, v: Tensor, t: int) -> Tensor:
    """eps(v, t) in v's dtype: the coupling arithmetic stays in the latents' precision."""
    return eps_fn(v, t).to(v.dtype)


def denoise_half(u: Tensor, eps_v: Tensor, a: float, b: float) -> Tensor:
    """u' = a * u + b * eps(v, t)."""
    return a * u + b * eps_v


def noise_half(u_new: Tensor, eps_v: Tensor, a: float, b: float) -> Tensor:
    """Inverse of ``denoise_half``: u = (u' - b * eps(v, t)) / a."""
    return (u_new - b * eps_v) / a


def mix(x1: Tensor, y1: Tensor, p: float) -> tuple[Tensor, Tensor]:
    """x2 = p*x1 + (1-p)*y1;  y2 = p*y1 + (1-p)*x2."""
    x2 = p * x1 + (1.0 - p) * y1
    y2 = p * y1 + (1.0 - p) * x2
    return x2, y2


def unmix(x2: Tensor, y2: Tensor, p: float) -> tuple[Tensor, Tensor]:
    """Inverse of ``mix``: y1 = (y2 - (1-p)*x2)/p;  x1 = (x2 - (1-p)*y1)/p."""
    y1 = (y2 - (1.0 - p) * x2) / p
    x1 = (x2 - (1.0 - p) * y1) / p
    return x1, y1


def swaps(i: int, leapfrog: bool) -> bool:
    """True where step i updates y first (odd steps with leapfrog)."""
    return leapfrog and i % 2 == 1


def coupled_update(
    eps_fn: EpsFn, x: Tensor, y: Tensor, t: int, a: float, b: float, swap: bool
) -> tuple[Tensor, Tensor]:
    """The two half-steps of an EDICT step, before mixing.
    Even (swap=False): x1 = a*x + b*eps(y); y1 = a*y + b*eps(x1).
    Odd (swap=True):   y1 = a*y + b*eps(x); x1 = a*x + b*eps(y1)."""
    u, v = (y, x) if swap else (x, y)
    u1 = denoise_half(u, eps_at(eps_fn, v, t), a, b)
    v1 = denoise_half(v, eps_at(eps_fn, u1, t), a, b)
    return (v1, u1) if swap else (u1, v1)


def coupled_update_inverse(
    eps_fn: EpsFn, x1: Tensor, y1: Tensor, t: int, a: float, b: float, swap: bool
) -> tuple[Tensor, Tensor]:
    """Exact inverse of ``coupled_update``: the half-steps undone in reverse order."""
    u1, v1 = (y1, x1) if swap else (x1, y1)
    v = noise_half(v1, eps_at(eps_fn, u1, t), a, b)
    u = noise_half(u1, eps_at(eps_fn, v, t), a, b)
    return (v, u) if swap else (u, v)


def denoise_step(
    eps_fn: EpsFn, x: Tensor, y: Tensor, t: int, a: float, b: float, p: float, swap: bool
) -> tuple[Tensor, Tensor]:
    """One EDICT step i: ``coupled_update`` then ``mix`` (swap = odd i with leapfrog)."""
    return mix(*coupled_update(eps_fn, x, y, t, a, b, swap), p)


def noise_step(
    eps_fn: EpsFn, x2: Tensor, y2: Tensor, t: int, a: float, b: float, p: float, swap: bool
) -> tuple[Tensor, Tensor]:
    """Exact inverse of ``denoise_step``: ``unmix`` then ``coupled_update_inverse``."""
    return coupled_update_inverse(eps_fn, *unmix(x2, y2, p), t, a, b, swap)
