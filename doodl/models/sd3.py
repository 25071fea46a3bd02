"""SD3: what the DOODL core needs from a diffusers Stable Diffusion 3 / 3.5 pipeline.

Notation: variable -> paper symbol (SPEC.md section 9)
    eps_fn  -> the velocity with classifier-free guidance v = v_u + s * (v_c - v_u), both
               branches in one batched transformer call (s about 7 for SD3, 4.5 for SD3.5)
    t       -> the scheduler's timestep sigma * 1000, handed to the transformer as is
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import torch
from torch import Tensor

from .flow import FlowBackend, FlowConditioning, check_scale, repeat
from .flow_text import encode_sd3
from .text import EMPTY_PROMPT, check_prompts

DEFAULT_SD3_GUIDANCE = 7.0  # SD3 medium; SD3.5 uses about 4.5


class SD3(FlowBackend):
    """A frozen SD3 / SD3.5 backend (SD3Transformer2DModel, CLIP-L + CLIP-G + optional T5).

    Args:
        pretrained: a diffusers-format folder, or a hub id "owner/name" (local cache first).
        dtype: transformer and text encoder precision; default float16 on cuda, float32 on cpu.
        device: default cuda when available.
        vae_dtype: VAE precision (default ``dtype``).
        checkpoint_vae: recompute the VAE decoder in backward to save memory.
        t5: load the T5-XXL text encoder (False: its tokens are zeros, as diffusers without it).
        max_sequence_length: T5 tokens of the context (256, the pipeline's default; at most 512).
        local_files_only, cache_dir, revision, variant: passed to the hub lookup / loaders.
    """

    kind = "sd3"
    MAX_SHIFT_DEFAULT = 1.16  # StableDiffusion3Pipeline's default where a config shifts dynamically

    def __init__(
        self,
        pretrained: str | os.PathLike,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        vae_dtype: str | torch.dtype | None = None,
        checkpoint_vae: bool = False,
        t5: bool = True,
        max_sequence_length: int = 256,
        local_files_only: bool | None = None,
        cache_dir: str | os.PathLike | None = None,
        revision: str | None = None,
        variant: str | None = None,
    ):
        self._load(pretrained, dtype, device, vae_dtype, checkpoint_vae, local_files_only, cache_dir, revision,
                   variant, t5, max_sequence_length)

    def _check_parts(self) -> None:
        if type(self.transformer).__name__ != "SD3Transformer2DModel":
            raise ValueError(f"SD3 needs an SD3Transformer2DModel, got {type(self.transformer).__name__}")
        if len(self.encoder_slots) != 3 or not all(self.encoder_slots[:2]):
            raise ValueError("SD3 needs CLIP-L and CLIP-G text encoders (and T5, or None in its place)")

    @property
    def patch(self) -> int:
        return int(self.transformer.config.patch_size)

    @property
    def latent_channels(self) -> int:
        return int(self.transformer.config.in_channels)

    @property
    def default_size(self) -> int:
        """The pipeline's default: the transformer's sample_size latents."""
        return int(self.transformer.config.sample_size) * self.vae_scale_factor

    def encode_prompt(self, prompts: str | Sequence[str]) -> FlowConditioning:
        """Both CFG branches for a batch of prompts; the unconditional one is the empty prompt."""
        prompts = check_prompts(prompts)
        args = (self.encoder(0), self.tokenizers[0], self.encoder(1), self.tokenizers[1], self.encoder(2),
                self.tokenizers[2])
        joint = int(self.transformer.config.joint_attention_dim)
        cond, pooled = encode_sd3(*args, prompts, self.max_sequence_length, joint)
        uncond, uncond_pooled = encode_sd3(*args, [EMPTY_PROMPT], self.max_sequence_length, joint)
        return FlowConditioning(self.kind, cond, pooled, uncond.expand_as(cond).clone(),
                                uncond_pooled.expand_as(pooled).clone(), tuple(prompts))

    def eps_fn(
        self, conditioning: FlowConditioning, guidance_scale: float | None = DEFAULT_SD3_GUIDANCE
    ) -> Callable[[Tensor, float], Tensor]:
        """v(latents, t) with classifier-free guidance, both branches in ONE batched transformer
        call; s = None or 1.0 runs the conditional branch only. Latents of batch N meet a
        conditioning of batch N (or 1, repeated); v comes back in their dtype."""
        check_scale("guidance_scale", guidance_scale)
        cond = self._conditioning(conditioning)
        cfg = guidance_scale is not None and float(guidance_scale) != 1.0
        scale = 1.0 if guidance_scale is None else float(guidance_scale)

        def eps_fn(latents: Tensor, t: float) -> Tensor:
            n = self._check_latents(latents, len(cond))
            ctx = [cond.uncond, cond.cond] if cfg else [cond.cond]
            pooled = [cond.uncond_pooled, cond.pooled] if cfg else [cond.pooled]
            x_in = latents.to(self.dtype)
            x_in = torch.cat([x_in, x_in]) if cfg else x_in
            timestep = torch.full((x_in.shape[0],), float(t), device=self.device)  # float32, as the pipeline's
            out = self.transformer(
                hidden_states=x_in, timestep=timestep, encoder_hidden_states=torch.cat([repeat(c, n) for c in ctx]),
                pooled_projections=torch.cat([repeat(p, n) for p in pooled]), return_dict=False,
            )[0].to(latents.dtype)
            if cfg:
                out_u, out_c = out.chunk(2)
                out = out_u + scale * (out_c - out_u)
            return out

        return eps_fn
