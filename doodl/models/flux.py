"""Flux: what the DOODL core needs from a diffusers FLUX.1 pipeline (dev, schnell).

Notation: variable -> paper symbol (SPEC.md section 9)
    eps_fn   -> the velocity v(x_t, t); FLUX.1-dev is guidance-distilled: the guidance scale
                (about 3.5) is a transformer input, one branch, no CFG; FLUX.1-schnell has none
    t        -> the scheduler's timestep sigma * 1000; the transformer reads t / 1000
    packing  -> 2x2 latent patches as tokens: (B, C, H, W) -> (B, H/2 * W/2, 4C), channel index
                c*4 + 2*dy + dx, token index row*(W/2) + col; undone on the output, so the core
                (and the EDICT pair) only ever see (B, C, H, W)
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from .flow import FlowBackend, FlowConditioning, check_scale, repeat
from .flow_text import encode_flux
from .text import check_prompts

DEFAULT_FLUX_GUIDANCE = 3.5  # FLUX.1-dev's guidance-embedding input
PACK = 2


def pack(latents: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H/2 * W/2, 4C): each 2x2 patch one token."""
    b, c, h, w = latents.shape
    return latents.view(b, c, h // PACK, PACK, w // PACK, PACK).permute(0, 2, 4, 1, 3, 5).reshape(
        b, (h // PACK) * (w // PACK), c * PACK * PACK)


def unpack(tokens: Tensor, h: int, w: int) -> Tensor:
    """Inverse of ``pack``: (B, h/2 * w/2, 4C) -> (B, C, h, w)."""
    b, _, d = tokens.shape
    c = d // (PACK * PACK)
    return tokens.view(b, h // PACK, w // PACK, c, PACK, PACK).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


def image_ids(h: int, w: int, device, dtype) -> Tensor:
    """(h/2 * w/2, 3) position ids of the packed tokens: (0, row, col)."""
    rows, cols = torch.meshgrid(torch.arange(h // PACK), torch.arange(w // PACK), indexing="ij")
    ids = torch.stack([torch.zeros_like(rows), rows, cols], dim=-1).reshape(-1, 3)
    return ids.to(device=device, dtype=dtype)


class Flux(FlowBackend):
    """A frozen FLUX.1 backend (FluxTransformer2DModel, CLIP-L + T5).

    Args:
        pretrained: a diffusers-format folder, or a hub id "owner/name" (local cache first).
        dtype: transformer and text encoder precision; default float16 on cuda, float32 on cpu
            (bfloat16 is FLUX's own).
        device: default cuda when available.
        vae_dtype: VAE precision (default ``dtype``).
        checkpoint_vae: recompute the VAE decoder in backward to save memory.
        max_sequence_length: T5 tokens of the context (512 for dev, 256 for schnell; at most 512).
        local_files_only, cache_dir, revision, variant: passed to the hub lookup / loaders.
    """

    kind = "flux"
    MAX_SHIFT_DEFAULT = 1.15

    def __init__(
        self,
        pretrained: str | os.PathLike,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        vae_dtype: str | torch.dtype | None = None,
        checkpoint_vae: bool = False,
        max_sequence_length: int = 512,
        local_files_only: bool | None = None,
        cache_dir: str | os.PathLike | None = None,
        revision: str | None = None,
        variant: str | None = None,
    ):
        self._load(pretrained, dtype, device, vae_dtype, checkpoint_vae, local_files_only, cache_dir, revision,
                   variant, True, max_sequence_length)

    def _check_parts(self) -> None:
        if type(self.transformer).__name__ != "FluxTransformer2DModel":
            raise ValueError(f"Flux needs a FluxTransformer2DModel, got {type(self.transformer).__name__}")
        if len(self.encoder_slots) != 2 or not all(self.encoder_slots):
            raise ValueError("Flux needs a CLIP-L and a T5 text encoder")
        if self.transformer.config.in_channels % (PACK * PACK):
            raise ValueError(f"the transformer reads {self.transformer.config.in_channels} channels: not 2x2-packed latents")

    @property
    def patch(self) -> int:
        return PACK

    @property
    def latent_channels(self) -> int:
        return int(self.transformer.config.in_channels) // (PACK * PACK)

    @property
    def has_guidance_input(self) -> bool:
        """True for guidance-distilled FLUX.1-dev (``guidance_embeds``), False for schnell."""
        return bool(self.transformer.config.guidance_embeds)

    def pipeline_sigmas(self, num_steps: int) -> list[float] | None:
        """FluxPipeline's sigmas: evenly from 1 to 1/num_steps (before the scheduler's shift)."""
        if self.scheduler.config.get("use_flow_sigmas", False):
            return None
        return np.linspace(1.0, 1.0 / num_steps, num_steps).tolist()

    def encode_prompt(self, prompts: str | Sequence[str]) -> FlowConditioning:
        """T5 context and CLIP pooled embedding of a batch of prompts (one branch: no CFG)."""
        prompts = check_prompts(prompts)
        cond, pooled = encode_flux(self.encoder(0), self.tokenizers[0], self.encoder(1), self.tokenizers[1],
                                   prompts, self.max_sequence_length)
        return FlowConditioning(self.kind, cond, pooled, prompts=tuple(prompts))

    def eps_fn(
        self, conditioning: FlowConditioning, guidance_scale: float | None = DEFAULT_FLUX_GUIDANCE
    ) -> Callable[[Tensor, float], Tensor]:
        """v(latents, t) for (B, C, H, W) latents (packed and unpacked inside), one transformer
        call. ``guidance_scale`` is FLUX.1-dev's guidance input; it must be None for a transformer
        without one (schnell). Latents of batch N meet a conditioning of batch N (or 1)."""
        check_scale("guidance_scale", guidance_scale)
        if guidance_scale is not None and not self.has_guidance_input:
            raise ValueError(
                f"guidance_scale={guidance_scale} given, but this FLUX transformer has no guidance input "
                "(guidance_embeds=False, e.g. FLUX.1-schnell): pass guidance_scale=None (cfg_scale: null in a config)"
            )
        if guidance_scale is None and self.has_guidance_input:
            raise ValueError(
                "this FLUX transformer is guidance-distilled (guidance_embeds=True, FLUX.1-dev) and needs its "
                f"guidance input: pass guidance_scale, e.g. {DEFAULT_FLUX_GUIDANCE}"
            )
        cond = self._conditioning(conditioning)
        txt_ids = torch.zeros(cond.cond.shape[1], 3, device=self.device, dtype=self.dtype)

        def eps_fn(latents: Tensor, t: float) -> Tensor:
            n = self._check_latents(latents, len(cond))
            h, w = latents.shape[-2:]
            timestep = torch.full((n,), float(t), device=self.device, dtype=self.dtype) / 1000
            guidance = None
            if guidance_scale is not None:
                guidance = torch.full((n,), float(guidance_scale), device=self.device, dtype=torch.float32)
            out = self.transformer(
                hidden_states=pack(latents.to(self.dtype)), timestep=timestep, guidance=guidance,
                pooled_projections=repeat(cond.pooled, n), encoder_hidden_states=repeat(cond.cond, n),
                txt_ids=txt_ids, img_ids=image_ids(h, w, self.device, self.dtype), return_dict=False,
            )[0]
            return unpack(out, h, w).to(latents.dtype)

        return eps_fn
