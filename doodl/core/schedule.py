"""Step coefficients of the two samplers EDICT couples: DDIM (SPEC.md section 2) and
flow-matching Euler (SPEC.md section 9). Both steps have the form x' = a * x + b * f(x, t).

Notation: variable -> paper symbol
    abar_t   -> alpha-bar at timestep t (``scheduler.alphas_cumprod[t]``)
    abar_p   -> alpha-bar at the previous, less noisy timestep p
    sigma    -> the flow's noise level at this step (``scheduler.sigmas[i]``), sigma_next after it
    a, b     -> the step x_p = a * x_t + b * f(x_t, t); f = eps (DDIM) or the velocity v (flow)

    DDIM:  a = sqrt(abar_p / abar_t),  b = sqrt(1 - abar_p) - sqrt(abar_p / abar_t) * sqrt(1 - abar_t)
    flow:  a = 1,                      b = sigma_next - sigma
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch

SUPPORTED = (
    "a DDIM-like diffusers scheduler with alphas_cumprod (DDIMScheduler for Stable Diffusion / SDXL / "
    "SD-Turbo) or diffusers.FlowMatchEulerDiscreteScheduler (SD3, SD3.5, FLUX.1)"
)
FLOW_SCHEDULER = "FlowMatchEulerDiscreteScheduler"


@dataclass(frozen=True)
class StepCoefficients:
    """One denoising step t -> p of the DDIM sampler with eta = 0."""

    kind: ClassVar[str] = "ddim"
    t: int  # timestep handed to the noise model
    a: float
    b: float
    abar_t: float
    abar_p: float


@dataclass(frozen=True)
class FlowStep:
    """One Euler step sigma -> sigma_next of a rectified flow: x' = x + (sigma_next - sigma) * v."""

    kind: ClassVar[str] = "flow"
    t: float  # timestep handed to the velocity model: sigma * num_train_timesteps, as diffusers sets it
    a: float
    b: float
    sigma: float
    sigma_next: float


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


def flow_schedule(sigmas: torch.Tensor | Sequence[float], timesteps: torch.Tensor | Sequence[float]) -> list[FlowStep]:
    """Euler steps over ``sigmas`` (one more than ``timesteps``: the terminal sigma, 0, last).

    a = 1 and b = sigma_next - sigma (SPEC.md section 9), in float64 from the scheduler's values.
    """
    sig = [float(s) for s in torch.as_tensor(sigmas, dtype=torch.float64).flatten().tolist()]
    ts = [float(t) for t in torch.as_tensor(timesteps, dtype=torch.float64).flatten().tolist()]
    if not ts:
        raise ValueError("timesteps is empty: call scheduler.set_timesteps(num_steps) first")
    if len(sig) != len(ts) + 1:
        raise ValueError(f"need one sigma more than timesteps (the terminal one), got {len(sig)} and {len(ts)}")
    if not all(math.isfinite(s) and 0.0 <= s for s in sig) or any(n >= s for s, n in zip(sig, sig[1:])):
        raise ValueError(f"sigmas must be finite, >= 0 and decrease strictly (noisiest first), got {sig}")
    return [FlowStep(t=t, a=1.0, b=sig[i + 1] - sig[i], sigma=sig[i], sigma_next=sig[i + 1]) for i, t in enumerate(ts)]


def scheduler_kind(scheduler: Any) -> str:
    """"flow" for FlowMatchEulerDiscreteScheduler (and subclasses), "ddim" for a scheduler with
    ``alphas_cumprod``; ValueError naming the supported kinds for anything else."""
    if any(c.__name__ == FLOW_SCHEDULER for c in type(scheduler).__mro__):
        config = getattr(scheduler, "config", {})
        for flag, why in (("stochastic_sampling", "draws fresh noise at every step"),
                          ("invert_sigmas", "runs sigma upwards (Mochi)")):
            if config.get(flag, False):
                raise ValueError(
                    f"FlowMatchEulerDiscreteScheduler with {flag}=True {why}: the EDICT chain needs the deterministic "
                    f"Euler step; build it with FlowMatchEulerDiscreteScheduler.from_config(config, {flag}=False)"
                )
        return "flow"
    if hasattr(scheduler, "alphas_cumprod") and hasattr(scheduler, "set_timesteps"):
        return "ddim"
    name = type(scheduler).__name__
    raise ValueError(
        f"scheduler {name} is not supported: pass {SUPPORTED}, e.g. diffusers.DDIMScheduler.from_pretrained(path, "
        "subfolder='scheduler')"
    )


def schedule_from_scheduler(
    scheduler: Any, num_steps: int, mu: float | None = None, sigmas: Sequence[float] | None = None
) -> list[StepCoefficients] | list[FlowStep]:
    """Coefficients from a diffusers scheduler after ``set_timesteps``, as a pipeline sets it.

    DDIM-like (``alphas_cumprod``): ``set_timesteps(num_steps)``; abar after the last step is
    ``scheduler.final_alpha_cumprod`` where the scheduler has one (DDIM), else ``alphas_cumprod[0]``.
    FlowMatchEulerDiscreteScheduler: ``set_timesteps(num_steps, sigmas=sigmas, mu=mu)``, so its
    ``shift`` (or dynamic shifting with ``mu``, which the pipeline computes from the image size)
    and every other option of its config apply; the Euler steps run over ``scheduler.sigmas``.
    """
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f"num_steps must be an integer >= 1, got {num_steps!r}")
    kind = scheduler_kind(scheduler)
    if kind == "flow":
        return _flow_from_scheduler(scheduler, num_steps, mu, sigmas)
    if mu is not None or sigmas is not None:
        raise ValueError("mu and sigmas set a flow-matching schedule: a DDIM-like scheduler takes num_steps only")
    n_train = len(scheduler.alphas_cumprod)
    if num_steps > n_train:
        raise ValueError(f"num_steps={num_steps} exceeds the scheduler's {n_train} training steps")
    scheduler.set_timesteps(num_steps)
    final = getattr(scheduler, "final_alpha_cumprod", None)
    if final is None:
        final = scheduler.alphas_cumprod[0]
    return ddim_schedule(scheduler.alphas_cumprod, scheduler.timesteps, float(final))


def _flow_from_scheduler(scheduler: Any, num_steps: int, mu: float | None, sigmas: Sequence[float] | None) -> list[FlowStep]:
    if scheduler.config.get("use_dynamic_shifting", False) and mu is None:
        raise ValueError(
            "this FlowMatchEulerDiscreteScheduler shifts its sigmas by the image size (use_dynamic_shifting): pass mu, "
            "as the backend's sampler(num_steps, height=..., width=...) computes it (diffusers' calculate_shift)"
        )
    if mu is not None and (not isinstance(mu, (int, float)) or isinstance(mu, bool) or not math.isfinite(mu)):
        raise ValueError(f"mu must be a finite number, got {mu!r}")
    if sigmas is not None and len(sigmas) != num_steps:
        raise ValueError(f"sigmas must hold num_steps={num_steps} values (the terminal 0 is appended), got {len(sigmas)}")
    kwargs = {} if mu is None else {"mu": float(mu)}
    scheduler.set_timesteps(num_steps, sigmas=None if sigmas is None else list(sigmas), **kwargs)
    return flow_schedule(scheduler.sigmas, scheduler.timesteps)
