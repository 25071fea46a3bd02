"""Exact gradient of the final pair w.r.t. the starting pair (SPEC.md section 5).

Three modes behind ``sample_with_grad``:
    "invert"     the paper's method: forward keeps only the final pair; backward rebuilds each
                 step's input with the exact inverse (``edict.noise_step``) while it
                 recomputes the step, then takes the vector-Jacobian product (VJP).
    "checkpoint" forward keeps the two points where each step evaluates eps; backward reads
                 them instead of inverting (no inversion drift).
    "naive"      plain autograd through the unrolled chain: the reference, memory grows with T.

Backward of one step, by half-steps. A half-step u' = a*u + b*eps(v) leaves v unchanged and has
    du = a * du'        dv = dv' + b * J_eps(v)^T du'
and its inverse u = (u' - b*eps(v)) / a needs eps at the same point v. So one evaluation of eps
at v with a graph serves both the inverse and the VJP: "invert" costs exactly the UNet calls of
"checkpoint" (2 evaluations with graph and 2 input-only backward passes per step), and only
one UNet graph is alive at any time. No gradient is ever computed for model weights.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .edict import EpsFn, coupled_update, eps_at, mix, noise_half, swaps, unmix
from .sampler import EDICTSampler, check_pair

MODES = ("invert", "checkpoint", "naive")


def _eps_vjp(eps_fn: EpsFn, v: Tensor, t: int, grad: Tensor) -> tuple[Tensor, Tensor]:
    """(eps(v, t), J_eps(v)^T grad): one evaluation with a graph, one input-only backward."""
    with torch.enable_grad():
        leaf = v.detach().requires_grad_(True)
        e = eps_at(eps_fn, leaf, t)
        (g,) = torch.autograd.grad(e, leaf, grad)
    return e.detach(), g


def _mix_vjp(gx2: Tensor, gy2: Tensor, p: float) -> tuple[Tensor, Tensor]:
    """Transpose of ``mix``: x2 = p*x1 + (1-p)*y1, y2 = p*y1 + (1-p)*x2."""
    gx2 = gx2 + (1.0 - p) * gy2
    return p * gx2, p * gy2 + (1.0 - p) * gx2


def step_backward(
    sampler: EDICTSampler,
    eps_fn: EpsFn,
    i: int,
    grads: tuple[Tensor, Tensor],
    out: tuple[Tensor, Tensor] | None = None,
    points: tuple[Tensor, Tensor] | None = None,
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor] | None]:
    """VJP of step i. Give ``out`` (the step's output pair) to rebuild its input by inversion,
    or ``points`` (u1, v), the two points where the step evaluated eps (checkpoint).
    Returns (grads w.r.t. the step's input pair, the rebuilt input pair or None)."""
    s, p, swap = sampler.steps[i], sampler.mix, swaps(i, sampler.leapfrog)
    gx1, gy1 = _mix_vjp(*grads, p)
    gu1, gv1 = (gy1, gx1) if swap else (gx1, gy1)
    if points is None:
        x1, y1 = unmix(*out, p)
        u1, v1 = (y1, x1) if swap else (x1, y1)
    else:
        u1, v = points
    # second half-step: v1 = a*v + b*eps(u1)
    e_u1, j = _eps_vjp(eps_fn, u1, s.t, gv1)
    gu1, gv = gu1 + s.b * j, s.a * gv1
    if points is None:
        v = noise_half(v1, e_u1, s.a, s.b)
    # first half-step: u1 = a*u + b*eps(v)
    e_v, j = _eps_vjp(eps_fn, v, s.t, gu1)
    gv, gu = gv + s.b * j, s.a * gu1
    rebuilt = None
    if points is None:
        u = noise_half(u1, e_v, s.a, s.b)
        rebuilt = (v, u) if swap else (u, v)
    return ((gv, gu) if swap else (gu, gv)), rebuilt


class _EDICTChain(torch.autograd.Function):
    """Constant-memory chain (private: use ``sample_with_grad``, which validates input)."""

    @staticmethod
    def forward(ctx: Any, sampler: EDICTSampler, eps_fn: EpsFn, steps: range, keep_points: bool, xT: Tensor, yT: Tensor):
        x, y = xT.detach(), yT.detach()
        points = []
        for i in steps:
            s, swap = sampler.steps[i], swaps(i, sampler.leapfrog)
            x1, y1 = coupled_update(eps_fn, x, y, s.t, s.a, s.b, swap)
            if keep_points:  # (u1, v): where this step evaluates eps
                points.append((y1, x) if swap else (x1, y))
            x, y = mix(x1, y1, sampler.mix)
        ctx.sampler, ctx.eps_fn, ctx.steps, ctx.points = sampler, eps_fn, steps, points
        ctx.save_for_backward(x, y)
        return x, y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, gx: Tensor, gy: Tensor):
        out = ctx.saved_tensors
        grads = (gx, gy)
        for k, i in enumerate(reversed(ctx.steps)):
            if ctx.points:
                grads, _ = step_backward(ctx.sampler, ctx.eps_fn, i, grads, points=ctx.points[-1 - k])
            else:
                grads, out = step_backward(ctx.sampler, ctx.eps_fn, i, grads, out=out)
        return None, None, None, None, grads[0], grads[1]


def sample_with_grad(
    sampler: EDICTSampler,
    eps_fn: EpsFn,
    xT: Tensor,
    yT: Tensor,
    mode: str = "invert",
    start: int = 0,
    stop: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Run steps [start, stop) of ``sampler`` from (xT, yT) so that autograd reaches (xT, yT).

    ``mode`` is "invert" (constant memory, the paper's method), "checkpoint" (constant memory,
    stores 2 latents per step) or "naive" (plain autograd, memory linear in T). ``eps_fn`` must
    hold frozen models: the constant-memory modes only ever differentiate w.r.t. latents.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
    check_pair(xT, yT, ("xT", "yT"))
    steps = sampler.step_range(start, stop)
    if mode == "naive":
        x, y = xT, yT
        for i in steps:
            x, y = sampler.denoise(eps_fn, x, y, i)
        return x, y
    return _EDICTChain.apply(sampler, eps_fn, steps, mode == "checkpoint", xT, yT)
