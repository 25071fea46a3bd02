"""What the SD3 and FLUX backends share: conditioning, the pipeline's schedule, VAE, latents.

Notation: variable -> paper symbol (SPEC.md section 9)
    latents   -> x_t, (B, C, H, W) for every model (FLUX's 2x2 packing stays inside its backend)
    eps_fn    -> the velocity v(x_t, t) with its guidance applied; t = sigma * num_train_timesteps
    mu        -> the dynamic shift of the sigmas for the image size (diffusers' calculate_shift)
    sf, shift -> ``vae.config.scaling_factor`` / ``shift_factor``: z = (E(x) - shift) * sf

The transformer, text encoders and VAE run in their dtype; latents are cast in and results back.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from ..core.sampler import DEFAULT_MIX, EDICTSampler
from ..core.schedule import scheduler_kind
from .flow_loading import FlowParts, load_flow_pipeline, resolve_flow_pretrained
from .loading import resolve_device, resolve_dtype
from .stable_diffusion import LatentBackend


@dataclass(frozen=True)
class FlowConditioning:
    """Text conditioning of a flow model for B prompts.

    cond:   (B, L, D) context (SD3: CLIP-L | CLIP-G padded, then T5 tokens; FLUX: T5 tokens)
    pooled: (B, P) pooled CLIP embeddings
    uncond, uncond_pooled: the empty prompt's, for classifier-free guidance (SD3); None for FLUX
    """

    kind: str
    cond: Tensor
    pooled: Tensor
    uncond: Tensor | None = None
    uncond_pooled: Tensor | None = None
    prompts: tuple[str, ...] = ()

    def __len__(self) -> int:
        return self.cond.shape[0]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "FlowConditioning":
        def move(v):
            return None if v is None else v.to(device=device, dtype=dtype)

        return replace(self, cond=move(self.cond), pooled=move(self.pooled), uncond=move(self.uncond),
                       uncond_pooled=move(self.uncond_pooled))


def calculate_shift(image_seq_len: int, base_seq_len: int, max_seq_len: int, base_shift: float, max_shift: float) -> float:
    """mu, linear in the number of image tokens: base_shift at base_seq_len, max_shift at max_seq_len."""
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return base_shift + slope * (image_seq_len - base_seq_len)


def repeat(t: Tensor, n: int) -> Tensor:
    """(1, ...) -> (n, ...); (n, ...) unchanged."""
    return t if t.shape[0] == n else t.expand(n, *t.shape[1:])


def check_scale(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number or None, got {value!r}")


class FlowBackend(LatentBackend):
    """Base of ``SD3`` and ``Flux``: loading, VAE, latents and the EDICT sampler of a flow model.

    Subclasses set ``kind``, ``MAX_SHIFT_DEFAULT`` (the pipeline's default for max_shift),
    ``patch`` and ``latent_channels``, and implement ``encode_prompt``, ``eps_fn`` and
    ``pipeline_sigmas``.
    """

    kind = ""
    MAX_SHIFT_DEFAULT = 1.15
    DEFAULT_STEPS = 28

    def _load(
        self, pretrained: str | os.PathLike, dtype: Any, device: Any, vae_dtype: Any, checkpoint_vae: bool,
        local_files_only: bool | None, cache_dir: Any, revision: str | None, variant: str | None, t5: bool,
        max_sequence_length: int,
    ) -> None:
        nn.Module.__init__(self)
        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
        vdt = None if vae_dtype is None else resolve_dtype(vae_dtype, dev)
        folder = resolve_flow_pretrained(pretrained, self.kind, local_files_only, cache_dir, revision, variant, t5)
        parts = load_flow_pipeline(folder, self.kind, dt, dev, vdt, variant, t5)
        self._build(parts, checkpoint_vae, max_sequence_length)
        self.source = str(pretrained)

    @classmethod
    def from_components(cls, parts: FlowParts, checkpoint_vae: bool = False, max_sequence_length: int = 256):
        """Wrap already-built components (frozen here as well)."""
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        self._build(parts, checkpoint_vae, max_sequence_length)
        self.source = "components"
        return self

    def _build(self, parts: FlowParts, checkpoint_vae: bool, max_sequence_length: int) -> None:
        if scheduler_kind(parts.scheduler) != "flow":
            raise ValueError(
                f"a {type(self).__name__} backend samples with diffusers.FlowMatchEulerDiscreteScheduler, got "
                f"{type(parts.scheduler).__name__}: build one with FlowMatchEulerDiscreteScheduler.from_config(config)"
            )
        if not isinstance(max_sequence_length, int) or isinstance(max_sequence_length, bool) or not 1 <= max_sequence_length <= 512:
            raise ValueError(f"max_sequence_length must be an int in [1, 512] (T5 tokens), got {max_sequence_length!r}")
        self.transformer = parts.transformer.eval().requires_grad_(False)
        self.vae = parts.vae.eval().requires_grad_(False)
        self.text_encoders = nn.ModuleList([e.eval().requires_grad_(False) for e in parts.text_encoders if e is not None])
        self.encoder_slots = [e is not None for e in parts.text_encoders]
        self.tokenizers = list(parts.tokenizers)
        self.scheduler = parts.scheduler
        self.max_sequence_length = max_sequence_length
        self.checkpoint_vae = bool(checkpoint_vae)
        self._check_parts()

    def _check_parts(self) -> None:
        """Subclasses check their components fit together."""

    def encoder(self, slot: int):
        """The text encoder of ``LAYOUTS[kind]`` slot ``slot`` (None where it was left out)."""
        if not self.encoder_slots[slot]:
            return None
        return self.text_encoders[sum(self.encoder_slots[:slot])]

    # ---- properties ------------------------------------------------------------------------
    @property
    def denoiser(self) -> nn.Module:
        return self.transformer

    @property
    def patch(self) -> int:
        """Latents per transformer token along each side."""
        raise NotImplementedError

    @property
    def latent_channels(self) -> int:
        raise NotImplementedError

    # ---- latents, VAE ----------------------------------------------------------------------
    def _check_latents(self, latents: Tensor, batch: int) -> int:
        if not isinstance(latents, Tensor) or not latents.is_floating_point() or latents.dim() != 4:
            raise ValueError(f"latents must be a floating (N, {self.latent_channels}, h, w) tensor")
        n, c, h, w = latents.shape
        if c != self.latent_channels:
            raise ValueError(f"latents have {c} channels, the transformer reads {self.latent_channels}")
        if h % self.patch or w % self.patch:
            raise ValueError(
                f"latent size {h}x{w} is not divisible by the transformer's {self.patch}x{self.patch} patch packing: "
                f"use latents of even size, i.e. images whose sides are multiples of {self.vae_scale_factor * self.patch} pixels"
            )
        if batch not in (1, n):
            raise ValueError(f"latents batch {n} does not match the {batch} encoded prompts (use 1 prompt or {n})")
        return n

    def latent_shape(self, height: int, width: int, batch: int = 1) -> tuple[int, int, int, int]:
        """(batch, C, height / f, width / f); height and width multiples of f * patch."""
        f = self.vae_scale_factor * self.patch
        for name, v in (("height", height), ("width", width), ("batch", batch)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if height % f or width % f:
            raise ValueError(
                f"height and width must be multiples of {f} (the VAE's {self.vae_scale_factor}x downsampling times the "
                f"transformer's {self.patch}x{self.patch} patches), got {height}x{width}"
            )
        return (batch, self.latent_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)

    # ---- schedule --------------------------------------------------------------------------
    @property
    def default_size(self) -> int:
        """The pipeline's default image side in pixels (1024 for SD3 and FLUX)."""
        return 128 * self.vae_scale_factor

    def mu(self, height: int, width: int) -> float | None:
        """The dynamic shift for an image of height x width pixels, as the diffusers pipeline computes
        it from the scheduler config (None where the scheduler does not shift dynamically)."""
        _, _, h, w = self.latent_shape(height, width)
        config = self.scheduler.config
        if not config.get("use_dynamic_shifting", False):
            return None
        tokens = (h // self.patch) * (w // self.patch)
        return calculate_shift(tokens, config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096),
                               config.get("base_shift", 0.5), config.get("max_shift", self.MAX_SHIFT_DEFAULT))

    def pipeline_sigmas(self, num_steps: int) -> list[float] | None:
        """Sigmas the pipeline hands to ``set_timesteps`` (None: the scheduler's own spacing)."""
        return None

    def sampler(
        self, num_steps: int = DEFAULT_STEPS, mix: float = DEFAULT_MIX, leapfrog: bool = True,
        height: int | None = None, width: int | None = None,
    ) -> EDICTSampler:
        """The EDICT chain over this model's flow schedule for images of height x width pixels
        (default ``default_size``, as the pipeline), with the pipeline's shift."""
        height = self.default_size if height is None else height
        width = self.default_size if width is None else width
        if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
            raise ValueError(f"num_steps must be an integer >= 1, got {num_steps!r}")
        return EDICTSampler(self.scheduler, num_steps=num_steps, mix=mix, leapfrog=leapfrog,
                            mu=self.mu(height, width), sigmas=self.pipeline_sigmas(num_steps))

    def _conditioning(self, conditioning: Any) -> FlowConditioning:
        if not isinstance(conditioning, FlowConditioning) or conditioning.kind != self.kind:
            raise ValueError(f"conditioning must come from this {type(self).__name__} backend's encode_prompt(prompts)")
        return conditioning.to(self.device, self.dtype)

    def extra_repr(self) -> str:
        return f"source={self.source!r}, kind={self.kind}, dtype={self.dtype}"

