"""Model backends: adapters over diffusers pipelines that give the core its ``eps_fn``.

``StableDiffusion`` loads SD 1.x / 2.x / SDXL, ``Turbo`` SD-Turbo / SDXL-Turbo, ``SD3`` SD3 / SD3.5 and
``Flux`` FLUX.1 (dev, schnell) from a diffusers folder or hub id; ``tiny`` builds
tiny random components and pipeline folders for tests. Importing this package loads no model.
"""

from .flow import FlowBackend, FlowConditioning
from .flux import Flux
from .loading import DTYPES, PipelineParts, load_pipeline, resolve_pretrained
from .stable_diffusion import DEFAULT_GUIDANCE_SCALE, PREDICTION_TYPES, StableDiffusion, v_to_eps
from .sd3 import SD3
from .text import EMPTY_PROMPT, Conditioning
from .turbo import Turbo
from .tokenizer import clip_tokenizer_from_open_clip, clip_vocab_and_merges

__all__ = [
    "DEFAULT_GUIDANCE_SCALE", "DTYPES", "EMPTY_PROMPT", "PREDICTION_TYPES", "Conditioning", "FlowBackend", "FlowConditioning",
    "Flux", "PipelineParts", "SD3", "Turbo",
    "StableDiffusion", "clip_tokenizer_from_open_clip", "clip_vocab_and_merges", "load_pipeline",
    "resolve_pretrained", "v_to_eps",
]
