"""The paper's equations: EDICT steps, the constant-memory gradient, the DOODL update.

Imports torch and nothing else of the project; it only ever sees ``eps_fn(latents, t)`` (the
noise eps for DDIM, the velocity v for flow matching: SPEC.md section 9).
"""

from .edict import coupled_update, coupled_update_inverse, denoise_step, mix, noise_step, unmix
from .grad import MODES, sample_with_grad
from .sampler import EDICTSampler, check_pair
from .schedule import (
    FlowStep, StepCoefficients, ddim_coefficients, ddim_schedule, flow_schedule, schedule_from_scheduler, scheduler_kind,
)

__all__ = [
    "EDICTSampler", "FlowStep", "MODES", "StepCoefficients", "check_pair", "coupled_update",
    "coupled_update_inverse", "ddim_coefficients", "ddim_schedule", "denoise_step", "flow_schedule", "mix",
    "noise_step", "sample_with_grad", "schedule_from_scheduler", "scheduler_kind", "unmix",
]
