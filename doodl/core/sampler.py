"""EDICTSampler: the coupled chain over a diffusers schedule, DDIM or flow-matching Euler
(SPEC.md sections 2, 3 and 9)."""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor

from .edict import EpsFn, denoise_step, noise_step, swaps
from .schedule import FlowStep, StepCoefficients, schedule_from_scheduler

DEFAULT_MIX = 0.93  # EDICT mixing weight p (range 0.9 to 0.97 in the paper)


def check_pair(x: Tensor, y: Tensor, names: tuple[str, str] = ("x", "y")) -> None:
    """ValueError unless x and y are finite floating tensors of one shape, dtype and device."""
    nx, ny = names
    for name, v in ((nx, x), (ny, y)):
        if not isinstance(v, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(v).__name__}")
        if not v.is_floating_point():
            raise ValueError(f"{name} must be a floating tensor, got dtype {v.dtype}")
    if x.shape != y.shape:
        raise ValueError(f"{nx} and {ny} must have one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.dtype != y.dtype:
        raise ValueError(f"{nx} and {ny} must have one dtype, got {x.dtype} and {y.dtype}")
    if x.device != y.device:
        raise ValueError(f"{nx} and {ny} must be on one device, got {x.device} and {y.device}")
    for name, v in ((nx, x), (ny, y)):
        if not bool(torch.isfinite(v.detach()).all()):
            raise ValueError(f"{name} holds NaN or infinite values: start from finite latents")


class EDICTSampler:
    """Exactly invertible EDICT sampling over ``num_steps`` steps x' = a*x + b*f(x, t).

    Args:
        scheduler: a DDIM-like diffusers scheduler with ``alphas_cumprod`` and ``set_timesteps``
            (``DDIMScheduler`` for Stable Diffusion; f = eps), or ``FlowMatchEulerDiscreteScheduler``
            (SD3, FLUX.1; f = the velocity, a = 1, b = sigma_next - sigma); its timesteps give
            the chain. Any other kind is refused with the supported ones named.
        num_steps: T, the number of denoising steps (50 in DOODL).
        mix: p, the EDICT mixing weight, in (0, 1] (0.93 in DOODL).
        leapfrog: swap the roles of x and y on odd steps (on in the reference code).
        mu, sigmas: flow-matching only, passed to ``scheduler.set_timesteps`` as a diffusers
            pipeline passes them (``mu``: the dynamic shift for the image size; a backend's
            ``sampler(num_steps, height=, width=)`` computes both).

    Steps are indexed i = 0 (noisiest, t = T) ... T-1. ``sample`` and ``invert`` take an
    optional ``[start, stop)`` range of steps for partial chains (editing, or optimizing from
    an intermediate timestep).
    """

    def __init__(
        self, scheduler: Any, num_steps: int = 50, mix: float = DEFAULT_MIX, leapfrog: bool = True,
        mu: float | None = None, sigmas: Sequence[float] | None = None,
    ):
        steps = schedule_from_scheduler(scheduler, num_steps, mu=mu, sigmas=sigmas)
        self._init(steps, mix, leapfrog)

    @classmethod
    def from_steps(
        cls, steps: Sequence[StepCoefficients | FlowStep], mix: float = DEFAULT_MIX, leapfrog: bool = True
    ) -> "EDICTSampler":
        """Build from precomputed steps (``schedule.ddim_schedule`` or ``schedule.flow_schedule``)."""
        if len(steps) < 1:
            raise ValueError("steps must hold at least one StepCoefficients")
        if len({type(s) for s in steps}) != 1 or not isinstance(steps[0], (StepCoefficients, FlowStep)):
            raise ValueError("steps must be all StepCoefficients (DDIM) or all FlowStep (flow matching)")
        self = cls.__new__(cls)
        self._init(list(steps), mix, leapfrog)
        return self

    def _init(self, steps: list[StepCoefficients], mix: float, leapfrog: bool) -> None:
        if not isinstance(mix, (int, float)) or not math.isfinite(mix) or not 0.0 < mix <= 1.0:
            raise ValueError(f"mix must lie in (0, 1] (the paper uses 0.93), got {mix!r}")
        self.steps = steps
        self.mix = float(mix)
        self.leapfrog = bool(leapfrog)

    @property
    def num_steps(self) -> int:
        return len(self.steps)

    @property
    def kind(self) -> str:
        """"ddim" (f = eps) or "flow" (f = the velocity)."""
        return self.steps[0].kind

    @property
    def timesteps(self) -> list[int] | list[float]:
        return [s.t for s in self.steps]

    def __repr__(self) -> str:
        return f"EDICTSampler(kind={self.kind!r}, num_steps={self.num_steps}, mix={self.mix}, leapfrog={self.leapfrog})"

    def step_range(self, start: int = 0, stop: int | None = None) -> range:
        """Validated range of step indices [start, stop)."""
        stop = self.num_steps if stop is None else stop
        for name, v in (("start", start), ("stop", stop)):
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError(f"{name} must be an int, got {v!r}")
        if not 0 <= start < stop <= self.num_steps:
            raise ValueError(f"need 0 <= start < stop <= num_steps={self.num_steps}, got start={start}, stop={stop}")
        return range(start, stop)

    def denoise(self, eps_fn: EpsFn, x: Tensor, y: Tensor, i: int) -> tuple[Tensor, Tensor]:
        """Step i forward (no grad context is imposed here)."""
        s = self.steps[i]
        return denoise_step(eps_fn, x, y, s.t, s.a, s.b, self.mix, swaps(i, self.leapfrog))

    def renoise(self, eps_fn: EpsFn, x: Tensor, y: Tensor, i: int) -> tuple[Tensor, Tensor]:
        """Exact inverse of step i."""
        s = self.steps[i]
        return noise_step(eps_fn, x, y, s.t, s.a, s.b, self.mix, swaps(i, self.leapfrog))

    @torch.no_grad()
    def sample(self, eps_fn: EpsFn, xT: Tensor, yT: Tensor, start: int = 0, stop: int | None = None) -> tuple[Tensor, Tensor]:
        """Run steps [start, stop) from (x, y); no graph is kept. Returns the final pair."""
        check_pair(xT, yT, ("xT", "yT"))
        x, y = xT.detach(), yT.detach()
        for i in self.step_range(start, stop):
            x, y = self.denoise(eps_fn, x, y, i)
        return x, y

    @torch.no_grad()
    def invert(self, eps_fn: EpsFn, x0: Tensor, y0: Tensor, start: int = 0, stop: int | None = None) -> tuple[Tensor, Tensor]:
        """Exact inverse of ``sample`` over the same [start, stop): steps run stop-1 ... start.

        To invert a real image, pass (z0, z0) with z0 its VAE latent (times the VAE's
        scaling factor); run in float64 for a round trip at rounding level.
        """
        check_pair(x0, y0, ("x0", "y0"))
        x, y = x0.detach(), y0.detach()
        for i in reversed(self.step_range(start, stop)):
            x, y = self.renoise(eps_fn, x, y, i)
        return x, y
