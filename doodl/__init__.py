"""doodl: Direct Optimization Of Diffusion Latents (Wallace et al., ICCV 2023).

Public API: ``EDICTSampler``, ``sample_with_grad``, ``DOODLOptimizer``. Importing doodl has no
side effects: no model is loaded and no global torch setting is changed.
"""

from .core import EDICTSampler, sample_with_grad
from .core.update import DOODLOptimizer

__all__ = ["DOODLOptimizer", "EDICTSampler", "sample_with_grad"]
__version__ = "0.1.0"
