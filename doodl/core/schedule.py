"""Deterministic DDIM coefficients (SPEC.md section 2).

Notation: variable -> paper symbol
    abar_t   -> alpha-bar at timestep t (``scheduler.alphas_cumprod[t]``)
    abar_p   -> alpha-bar at the previous, less noisy timestep p
    a, b     -> the DDIM step x_p = a * x_t + b * eps(x_t, t)

    a = sqrt(abar_p / abar_t)
    b = sqrt(1 - abar_p) - sqrt(abar_p / abar_t) * sqrt(1 - abar_t)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch


@dataclass(frozen=True)
class StepCoefficients:
    """One denoising step t -> p of the DDIM sampler with eta = 0."""

    t: int  # timestep handed to the noise model
    a: float
    b: float
    abar_t: float
    abar_p: float


def ddim_coefficients(abar_t: float, abar_p: float) -> tuple[float, float]:
    """(a, b) of the DDIM step x_p = a * x_t + b * eps (SPEC eq. of section 2)."""
    a = math.sqrt(abar_p / abar_t)
    b = math.sqrt(1.0 - abar_p) - a * math.sqrt(1.0 - abar_t)
    return a, b


def ddim_schedule(
    alphas_cumprod: torch.Tensor | Sequence[float],
    timesteps: torch.Tensor | Sequence[int],
    final_alpha_cumprod: float,
) -> list[StepCoefficients]:
    """Coefficients for each step of ``timesteps`` (noisiest first).

    The previous timestep of ``timesteps[i]`` is ``timesteps[i + 1]``; after the last step
    abar_p is ``final_alpha_cumprod``. Computed in float64 whatever the input dtype.
    """
    abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64).cpu()
    ts = [int(t) for t in torch.as_tensor(timesteps).flatten().tolist()]
    if not ts:
        raise ValueError("timesteps is empty: call scheduler.set_timesteps(num_steps) first")
    if any(t < 0 or t >= abar.numel() for t in ts):
        raise ValueError(f"timesteps must lie in [0, {abar.numel()}), got {ts}")
    if any(later >= earlier for earlier, later in zip(ts, ts[1:])):
        raise ValueError(f"timesteps must decrease strictly (noisiest first), got {ts}")
    steps = []
    for i, t in enumerate(ts):
        abar_t = float(abar[t])
        abar_p = float(abar[ts[i + 1]]) if i + 1 < len(ts) else float(final_alpha_cumprod)
        a, b = ddim_coefficients(abar_t, abar_p)
        steps.append(StepCoefficients(t=t, a=a, b=b, abar_t=abar_t, abar_p=abar_p))
    return steps


def schedule_from_scheduler(scheduler: Any, num_steps: int) -> list[StepCoefficients]:
    """Coefficients from any diffusers scheduler: its ``alphas_cumprod`` and its timesteps.

    Calls ``scheduler.set_timesteps(num_steps)``, which sets the scheduler's state as a
    diffusers pipeline would. abar after the
    last step is ``scheduler.final_alpha_cumprod`` where the scheduler has one (DDIM), else
    ``alphas_cumprod[0]``.
    """
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f"num_steps must be an integer >= 1, got {num_steps!r}")
    for attr in ("alphas_cumprod", "set_timesteps"):
        if not hasattr(scheduler, attr):
            raise ValueError(
                f"scheduler has no {attr!r}: pass a diffusers scheduler such as "
                "diffusers.DDIMScheduler.from_pretrained(path, subfolder='scheduler')"
            )
    n_train = len(scheduler.alphas_cumprod)
    if num_steps > n_train:
        raise ValueError(f"num_steps={num_steps} exceeds the scheduler's {n_train} training steps")
    scheduler.set_timesteps(num_steps)
    final = getattr(scheduler, "final_alpha_cumprod", None)
    if final is None:
        final = scheduler.alphas_cumprod[0]
    return ddim_schedule(scheduler.alphas_cumprod, scheduler.timesteps, float(final))
