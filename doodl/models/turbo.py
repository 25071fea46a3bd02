"""Turbo: few-step distilled Stable Diffusion models (SD-Turbo, SDXL-Turbo) for DOODL.

They sample with their own Euler scheduler over "trailing" timesteps, without classifier-free
guidance, from sigma_max down to sigma = 0 (SPEC.md section 9). The deterministic Euler step in
sigma is the DDIM step between the same timesteps (x / sqrt(abar) moves linearly in
sigma = sqrt((1 - abar) / abar)), so the backend keeps ``StableDiffusion``'s DDIM chain with:
    - the timestep spacing of the model's own scheduler config ("trailing"),
    - abar = 1 after the last step (the Euler schedule's terminal sigma 0: ``set_alpha_to_one``),
    - the starting noise the pipeline feeds the model: its Euler scheduler draws x_T with std
      ``init_noise_sigma`` (sigma_max for "trailing") and scales the model input by
      1 / sqrt(sigma^2 + 1), so in DDIM's variable x_T = N(0, I) * init_noise_sigma / sqrt(sigma_max^2 + 1)
      (= sqrt(1 - abar_T) N(0, I) for "trailing": pure noise with no signal left),
    - no CFG by default (``guidance_scale=None``), 1 step by default.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from ..core.sampler import DEFAULT_MIX, EDICTSampler
from .loading import PipelineParts
from .stable_diffusion import StableDiffusion
from .text import Conditioning

DEFAULT_TURBO_STEPS = 1


def turbo_scheduler(scheduler):
    """A DDIMScheduler with ``scheduler``'s betas and timestep spacing, ending at abar = 1."""
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(_plain_config(scheduler), set_alpha_to_one=True)


def _plain_config(scheduler) -> dict:
    return {k: v for k, v in scheduler.config.items() if not k.startswith("_")}


def own_noise_scale(scheduler) -> float:
    """init_noise_sigma / sqrt(sigma_max^2 + 1) of a sigma-parameterised (Euler-like) scheduler: the
    std of the pipeline's first model input; 1 for a scheduler without sigmas (DDIM)."""
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is None or not hasattr(scheduler, "init_noise_sigma"):
        return 1.0
    sigma_max = float(torch.as_tensor(sigmas).max())
    return float(scheduler.init_noise_sigma) / math.sqrt(sigma_max**2 + 1.0)


class Turbo(StableDiffusion):
    """A frozen SD-Turbo / SDXL-Turbo backend: ``StableDiffusion`` with the few-step schedule.

    Takes the arguments of ``StableDiffusion`` (a diffusers folder or hub id, e.g.
    "stabilityai/sd-turbo" or "stabilityai/sdxl-turbo").
    """

    def _build(self, parts: PipelineParts, checkpoint_vae: bool) -> None:
        spacing = parts.scheduler.config.get("timestep_spacing", "leading")
        if spacing != "trailing":
            raise ValueError(
                f"the scheduler config's timestep_spacing is {spacing!r}: Turbo models sample from the last training "
                "timestep ('trailing', as in stabilityai/sd-turbo and sdxl-turbo); use doodl.models.StableDiffusion "
                "for other models"
            )
        from diffusers import EulerDiscreteScheduler

        # the Turbo models' own scheduler (Euler; SDXL-Turbo's Euler ancestral starts alike), from the same config
        self.noise_scale = own_noise_scale(EulerDiscreteScheduler.from_config(_plain_config(parts.scheduler)))
        parts = PipelineParts(parts.unet, parts.vae, turbo_scheduler(parts.scheduler), parts.text_encoders,
                              parts.tokenizers, parts.force_zeros_for_empty_prompt)
        super()._build(parts, checkpoint_vae)

    def initial_noise(self, batch: int, height: int, width: int, generator: torch.Generator | int | None = None,
                      dtype: torch.dtype = torch.float32) -> Tensor:
        """x_T as the model's own pipeline starts it: N(0, I) times ``noise_scale`` (see the module doc)."""
        return super().initial_noise(batch, height, width, generator, dtype) * self.noise_scale

    def eps_fn(self, conditioning: Conditioning, guidance_scale: float | None = None) -> Callable[[Tensor, int], Tensor]:
        """eps(latents, t), CFG off by default (Turbo models are distilled without it)."""
        return super().eps_fn(conditioning, guidance_scale)

    def sampler(self, num_steps: int = DEFAULT_TURBO_STEPS, mix: float = DEFAULT_MIX, leapfrog: bool = True) -> EDICTSampler:
        """The EDICT chain over the model's trailing timesteps (1 to 4 steps is what it was distilled for)."""
        return super().sampler(num_steps, mix, leapfrog)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", turbo=True"
