"""doodl: Direct Optimization Of Diffusion Latents (Wallace et al., ICCV 2023).

Public API: ``EDICTSampler``, ``sample_with_grad``, ``DOODLOptimizer``, ``one_step_guided_sample``;
the Lightning application is ``doodl.app`` (``DOODL``, ``PromptDataModule``, ``main``), the
Stable Diffusion backend ``doodl.models.StableDiffusion``, the losses ``doodl.guidance``.
Importing doodl has no side effects: no model is loaded and no global torch setting is changed.
"""

from .core import EDICTSampler, sample_with_grad
from .core.onestep import one_step_guided_sample
from .core.update import DOODLOptimizer

__all__ = ["DOODLOptimizer", "EDICTSampler", "one_step_guided_sample", "sample_with_grad"]
__version__ = "0.1.0"
