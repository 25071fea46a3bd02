"""doodl: Direct Optimization Of Diffusion Latents (Wallace et al., ICCV 2023).

Public API: ``EDICTSampler``, ``sample_with_grad``, ``DOODLOptimizer``, ``update_preset``,
``one_step_guided_sample``; the Lightning-free runs of ``doodl.run`` (``RunContext``, ``Chain``,
``DOODLRunner``, the methods ``Unguided`` / ``OneStep`` / ``SeedSearch`` (and ``doodl.run.DOODL``),
``ItemResult``, ``Comparison``);
the Lightning application is ``doodl.app`` (``DOODL``, ``PromptDataModule``, ``main``), the
Stable Diffusion backend ``doodl.models.StableDiffusion``, the losses ``doodl.guidance``.
Importing doodl has no side effects: no model is loaded and no global torch setting is changed.
The names are imported on first use, so ``import doodl`` (and ``doodl --help``) does not load torch.
"""

from __future__ import annotations

from doodl._lazy import lazy_exports

_PUBLIC = {
    "Chain": "doodl.run.context",
    "Comparison": "doodl.run.compare",
    "DOODLRunner": "doodl.run.runner",
    "ItemResult": "doodl.run.result",
    "OneStep": "doodl.run.methods",
    "RunContext": "doodl.run.context",
    "SeedSearch": "doodl.run.methods",
    "Unguided": "doodl.run.methods",
    "update_preset": "doodl.core.updates",
    "DOODLOptimizer": "doodl.core.update",
    "EDICTSampler": "doodl.core",
    "one_step_guided_sample": "doodl.core.onestep",
    "sample_with_grad": "doodl.core",
}

__all__ = sorted(_PUBLIC)
__version__ = "0.1.0"

__getattr__, __dir__ = lazy_exports(globals(), _PUBLIC)
