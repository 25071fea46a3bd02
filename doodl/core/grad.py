"""Exact gradient of the final pair w.r.t. the starting pair (SPEC.md section 5).

Three modes behind ``sample_with_grad``:
    "invert"     the paper's method: forward keeps only the final pair; backward rebuilds each
                 step's input with the exact inverse (``edict.noise_step``) while it
                 recomputes the step, then takes the vector-Jacobian product (VJP).
    "checkpoint" forward keeps the two points where each step evaluates eps; backward reads
                 them instead of inverting (no inversion drift).
    "naive"      plain autograd through the unrolled chain: the reference, memory grows with T.
    "auto"       memory-budgeted: the first K steps keep their autograd graph (naive's cost),
                 the other T-K go through the "checkpoint" route, K as large as
                 ``memory_budget`` allows (``graph_steps``): naive's time when the whole graph
                 fits, "checkpoint"'s constant memory when none of it does, smooth in between.

Backward of one step, by half-steps. A half-step u' = a*u + b*eps(v) leaves v unchanged and has
    du = a * du'        dv = dv' + b * J_eps(v)^T du'
and its inverse u = (u' - b*eps(v)) / a needs eps at the same point v. So one evaluation of eps
at v with a graph serves both the inverse and the VJP: "invert" costs exactly the UNet calls of
"checkpoint" (2 evaluations with graph and 2 input-only backward passes per step), and only
one UNet graph is alive at any time. No gradient is ever computed for model weights.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

from .edict import EpsFn, coupled_update, eps_at, mix, noise_half, swaps, unmix
from .sampler import EDICTSampler, check_pair

MODES = ("invert", "checkpoint", "naive", "auto")
LOW_PRECISION = (torch.bfloat16, torch.float16)


def default_mode(network_dtype: torch.dtype, latent_dtype: torch.dtype) -> str:
    """The gradient mode chosen when none is given, by precision (README "Precision",
    benchmarks/results/speed_precision.json): "invert" (the paper's) where the exact inverse's
    round trip stays at rounding level (float32 / float64 networks, or float64 latents: 1.8e-16 on
    the digits world with a bfloat16 UNet), "checkpoint" for a bfloat16 / float16 network with
    float32 latents, where the inverse drifts (4.2e-2 on the digits world) and checkpoint never inverts."""
    if network_dtype in LOW_PRECISION and latent_dtype != torch.float64:
        return "checkpoint"
    return "invert"


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
    # the cotangent is scaled by b before the VJP, as autograd does in naive: a low-precision
    # UNet then sees the very cotangent it sees in naive (bf16 rounds gv1 and b*gv1 differently)
    e_u1, j = _eps_vjp(eps_fn, u1, s.t, s.b * gv1)
    gu1, gv = gu1 + j, s.a * gv1
    if points is None:
        v = noise_half(v1, e_u1, s.a, s.b)
    # first half-step: u1 = a*u + b*eps(v)
    e_v, j = _eps_vjp(eps_fn, v, s.t, s.b * gu1)
    gv, gu = gv + j, s.a * gu1
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
        with torch.inference_mode():  # no graph, no version counters: ~10% off each eps call
            for i in steps:
                s, swap = sampler.steps[i], swaps(i, sampler.leapfrog)
                x1, y1 = coupled_update(eps_fn, x, y, s.t, s.a, s.b, swap)
                if keep_points:  # (u1, v): where this step evaluates eps
                    points.append((y1, x) if swap else (x1, y))
                x, y = mix(x1, y1, sampler.mix)
        # inference tensors cannot enter autograd: plain copies of the few latents kept
        points = [(u.clone(), v.clone()) for u, v in points]
        x, y = x.clone(), y.clone()
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


def graph_steps(n: int, step_bytes: int, latent_bytes: int, budget: int) -> int:
    """K, how many of n steps keep their graph within ``budget`` bytes of peak chain memory.

    Model of the peak (forward + backward of the chain): the K graphs (``step_bytes`` each,
    what step 0 saved), the checkpoint points of the other n-K steps (2 latents each), the pairs
    in flight (4 latents) and a working reserve: 5/4 of one step's graph when K < n (step 0 is
    run with its graph to measure it, and one step is recomputed with its graph in backward), a
    quarter of one for naive's own backward (K = n). Returns -1 when even K = 0 does not fit."""
    def need(k: int) -> int:
        reserve = step_bytes + step_bytes // 4 if k < n else step_bytes // 4
        return k * step_bytes + 2 * latent_bytes * (n - k) + 4 * latent_bytes + reserve

    if need(n) <= budget:
        return n
    if need(0) > budget:
        return -1
    per_step = max(step_bytes - 2 * latent_bytes, 1)
    return min(n - 1, (budget - need(0)) // per_step)


def default_budget(device: torch.device) -> int:
    """Half the memory free on ``device`` at the call (CUDA: ``mem_get_info``; CPU: the
    kernel's MemAvailable), leaving the other half to decoding, the loss and their backward."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] // 2
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    return avail // 2


def graph_bytes(outputs: tuple[Tensor, ...], inputs: tuple[Tensor, ...]) -> int:
    """Bytes of the distinct storages saved for backward in the graph from ``inputs`` to
    ``outputs`` that depend on the latents (frozen weights and constants are not counted).
    Read from the nodes' ``_saved_*`` attributes: saved-tensor hooks would tie saved outputs
    into reference cycles that outlive the backward."""
    stop = {t.grad_fn for t in inputs if t.grad_fn is not None}
    seen, storages, names = set(stop), {}, {}
    stack = [t.grad_fn for t in outputs if t.grad_fn is not None]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        attrs = names.setdefault(type(node), [a for a in dir(node) if a.startswith("_saved_")])
        for a in attrs:
            try:
                v = getattr(node, a)
            except RuntimeError:  # already freed
                continue
            for t in v if isinstance(v, (tuple, list)) else (v,):
                if isinstance(t, Tensor) and (t.requires_grad or t.grad_fn is not None):
                    st = t.untyped_storage()
                    storages[st.data_ptr()] = st.nbytes()
        stack.extend(f for f, _ in node.next_functions)
    return sum(storages.values())


def _measured_step(sampler: EDICTSampler, eps_fn: EpsFn, x: Tensor, y: Tensor, i: int) -> tuple[Tensor, Tensor, int]:
    """Step i with autograd as usual, and the bytes its graph keeps (``graph_bytes``; on CUDA at
    least the allocator's growth over the step)."""
    cuda = x.device.type == "cuda"
    before = torch.cuda.memory_allocated(x.device) if cuda else 0
    x1, y1 = sampler.denoise(eps_fn, x, y, i)
    step_bytes = graph_bytes((x1, y1), (x, y))
    if cuda and step_bytes:
        step_bytes = max(step_bytes, torch.cuda.memory_allocated(x.device) - before)
    return x1, y1, step_bytes


def _budgeted(sampler: EDICTSampler, eps_fn: EpsFn, xT: Tensor, yT: Tensor, steps: range, budget: int | None):
    budget = default_budget(xT.device) if budget is None else budget
    n, latent = len(steps), xT.numel() * xT.element_size()
    x, y, step_bytes = _measured_step(sampler, eps_fn, xT, yT, steps[0])
    keep = graph_steps(n, step_bytes, latent, budget)
    if keep < 0:
        raise ValueError(
            f"memory_budget={budget} bytes is below what one step's recompute needs here "
            f"({step_bytes} bytes of graph per step, latents of {latent} bytes): raise it, or use "
            f"mode='invert' (the least memory of all modes)")
    if keep == 0:  # not even step 0's graph may stay: every step through the checkpoint route
        del x, y
        return _EDICTChain.apply(sampler, eps_fn, steps, True, xT, yT)
    for i in steps[1:keep]:
        x, y = sampler.denoise(eps_fn, x, y, i)
    if keep == n:
        return x, y
    return _EDICTChain.apply(sampler, eps_fn, steps[keep:], True, x, y)


def sample_with_grad(
    sampler: EDICTSampler,
    eps_fn: EpsFn,
    xT: Tensor,
    yT: Tensor,
    mode: str = "invert",
    start: int = 0,
    stop: int | None = None,
    memory_budget: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Run steps [start, stop) of ``sampler`` from (xT, yT) so that autograd reaches (xT, yT).

    ``mode`` is "invert" (constant memory, the paper's method), "checkpoint" (constant memory,
    stores 2 latents per step), "naive" (plain autograd, memory linear in T) or "auto" (as much
    of naive's graph as ``memory_budget`` bytes of peak chain memory hold, the rest checkpointed;
    None: half the device's free memory, see ``default_budget``). ``eps_fn`` must hold frozen
    models: the constant-memory modes only ever differentiate w.r.t. latents.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
    if memory_budget is not None:
        if mode != "auto":
            raise ValueError(f"memory_budget is for mode='auto' only, got mode={mode!r}")
        if isinstance(memory_budget, bool) or not isinstance(memory_budget, int) or memory_budget <= 0:
            raise ValueError(f"memory_budget must be a positive int of bytes, got {memory_budget!r}")
    check_pair(xT, yT, ("xT", "yT"))
    steps = sampler.step_range(start, stop)
    if mode == "auto":
        return _budgeted(sampler, eps_fn, xT, yT, steps, memory_budget)
    if mode == "naive":
        x, y = xT, yT
        for i in steps:
            x, y = sampler.denoise(eps_fn, x, y, i)
        return x, y
    return _EDICTChain.apply(sampler, eps_fn, steps, mode == "checkpoint", xT, yT)
