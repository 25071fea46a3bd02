"""StableDiffusion: what the DOODL core needs from a diffusers Stable Diffusion pipeline.

Notation: variable -> paper symbol
    latents      -> x_t (the EDICT pair members), in their own dtype (float32, or float64)
    eps_fn       -> eps(x_t, t) with classifier-free guidance: eps_u + s * (eps_c - eps_u)
    abar_t       -> ``scheduler.alphas_cumprod[t]``
    sf           -> ``vae.config.scaling_factor`` (0.18215 for SD 1.x)

The UNet and VAE run in ``dtype`` (float16/bfloat16 on GPU, float32 on CPU); latents are cast in
and every result is cast back, so the coupling arithmetic of the core stays in the latents' dtype.
"""

from __future__ import annotations

import math
import os
from typing import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..core.sampler import DEFAULT_MIX, EDICTSampler
from .loading import PipelineParts, load_pipeline, resolve_device, resolve_dtype, resolve_pretrained
from .text import Conditioning, encode_prompts

PREDICTION_TYPES = ("epsilon", "v_prediction")
DEFAULT_GUIDANCE_SCALE = 7.5  # s in DOODL (SPEC.md section 2)


def v_to_eps(v: Tensor, x_t: Tensor, abar_t: float) -> Tensor:
    """eps from a v-prediction: eps = sqrt(abar_t) * v + sqrt(1 - abar_t) * x_t."""
    return math.sqrt(abar_t) * v + math.sqrt(1.0 - abar_t) * x_t


class LatentBackend(nn.Module):
    """What the Stable Diffusion and flow backends share: frozen networks, the VAE's decode/encode
    and the initial noise. A subclass builds ``vae``, ``scheduler`` and ``checkpoint_vae``, names its
    noise/velocity network in ``denoiser`` and implements ``latent_shape`` and ``_check_latents``."""

    @property
    def denoiser(self) -> nn.Module:
        """The UNet or transformer: its device and dtype are the backend's."""
        raise NotImplementedError

    def train(self, mode: bool = True) -> "LatentBackend":
        """Always eval: the networks are frozen (no dropout, no norm-statistics updates)."""
        return super().train(False)

    # ---- properties ------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.denoiser.device

    @property
    def dtype(self) -> torch.dtype:
        return self.denoiser.dtype

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent along each side (8 for Stable Diffusion, SD3 and FLUX)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    # ---- VAE -------------------------------------------------------------------------------
    def decode(self, latents: Tensor, clamp: str = "none") -> Tensor:
        """Images in [0, 1], (N, 3, H, W), differentiable w.r.t. ``latents``, in their dtype.

        x = (D(z / sf + shift) + 1) / 2. ``clamp``: "none" (straight mapping, the default: no
        gradient is zeroed) or "straight" (values clamped to [0, 1], gradient passed as if not).
        """
        if clamp not in ("none", "straight"):
            raise ValueError(f"clamp must be 'none' or 'straight', got {clamp!r}")
        self._check_latents(latents, latents.shape[0] if latents.dim() == 4 else 1)
        z = latents.to(self.vae.dtype) / self.scaling_factor
        shift = self.vae.config.get("shift_factor", None)
        if shift is not None:
            z = z + shift
        if self.checkpoint_vae and torch.is_grad_enabled() and latents.requires_grad:
            images = checkpoint(self._decode_raw, z, use_reentrant=False)
        else:
            images = self._decode_raw(z)
        images = (images.to(latents.dtype) + 1.0) / 2.0
        if clamp == "straight":
            images = images + (images.clamp(0.0, 1.0) - images).detach()
        return images

    def _decode_raw(self, z: Tensor) -> Tensor:
        return self.vae.decode(z).sample

    def encode(self, images: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """Latents of images in [0, 1]: the mean of the VAE posterior times sf, in ``dtype``."""
        if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError("images must be a floating (N, 3, H, W) tensor with values in [0, 1]")
        lo, hi = float(images.min()), float(images.max())
        if lo < -1e-3 or hi > 1.0 + 1e-3:
            raise ValueError(f"images must lie in [0, 1], got values in [{lo:.3g}, {hi:.3g}] (divide uint8 images by 255)")
        f = self.vae_scale_factor
        if images.shape[-2] % f or images.shape[-1] % f:
            raise ValueError(f"image height and width must be multiples of {f}, got {tuple(images.shape[-2:])}")
        x = images.to(device=self.device, dtype=self.vae.dtype) * 2.0 - 1.0
        mean = self.vae.encode(x).latent_dist.mean
        shift = self.vae.config.get("shift_factor", None)
        if shift is not None:
            mean = mean - shift
        return (mean * self.scaling_factor).to(dtype)

    # ---- latents ---------------------------------------------------------------------------
    def initial_noise(
        self, batch: int, height: int, width: int,
        generator: torch.Generator | int | None = None, dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """x_T ~ N(0, I) of ``latent_shape``, drawn on ``generator``'s device (an int is a seed for a
        CPU generator, so a seed gives the same noise on every device), then moved to the model."""
        if isinstance(generator, int) and not isinstance(generator, bool):
            generator = torch.Generator().manual_seed(generator)
        elif generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator, an int seed or None, got {generator!r}")
        shape = self.latent_shape(height, width, batch)
        where = generator.device if generator is not None else torch.device("cpu")
        sigma = float(getattr(self.scheduler, "init_noise_sigma", 1.0))
        return (sigma * torch.randn(shape, generator=generator, dtype=dtype, device=where)).to(self.device)


class StableDiffusion(LatentBackend):
    """A frozen Stable Diffusion 1.x / 2.x / SDXL backend for DOODL.

    Args:
        pretrained: a diffusers-format folder, or a hub id "owner/name" (read from the local
            cache first; downloaded only when ``HF_HUB_OFFLINE`` is unset).
        dtype: UNet and text encoder precision ("float16", "bfloat16", "float32", "float64");
            default float16 on cuda, float32 on cpu.
        device: default cuda when available.
        vae_dtype: VAE precision; default ``dtype``, except float32 where the VAE config asks
            for ``force_upcast`` and ``dtype`` is float16 (SDXL's VAE overflows in float16).
        checkpoint_vae: recompute the VAE decoder in backward (torch.utils.checkpoint) to save
            memory at large image sizes.
        local_files_only, cache_dir, revision, variant: passed to the hub lookup / loaders.
        tokenizer_pad_token: padding token of the tokenizer built from open_clip's vocabulary
            when the folder has no tokenizer/ (default: from the text encoder, see loading.py).
    """

    def __init__(
        self,
        pretrained: str | os.PathLike,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        vae_dtype: str | torch.dtype | None = None,
        checkpoint_vae: bool = False,
        local_files_only: bool | None = None,
        cache_dir: str | os.PathLike | None = None,
        revision: str | None = None,
        variant: str | None = None,
        tokenizer_pad_token: str | None = None,
    ):
        super().__init__()
        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
        vdt = None if vae_dtype is None else resolve_dtype(vae_dtype, dev)
        folder = resolve_pretrained(pretrained, local_files_only, cache_dir, revision, variant)
        parts = load_pipeline(folder, dt, dev, vdt, variant, tokenizer_pad_token)
        self._build(parts, checkpoint_vae)
        self.source = str(pretrained)

    @classmethod
    def from_components(cls, parts: PipelineParts, checkpoint_vae: bool = False) -> "StableDiffusion":
        """Wrap already-built components (frozen here as well)."""
        self = cls.__new__(cls)
        nn.Module.__init__(self)
        self._build(parts, checkpoint_vae)
        self.source = "components"
        return self

    def _build(self, parts: PipelineParts, checkpoint_vae: bool) -> None:
        pred = parts.scheduler.config.prediction_type
        if pred not in PREDICTION_TYPES:
            raise ValueError(f"scheduler prediction_type {pred!r} is not supported: use one of {PREDICTION_TYPES}")
        if parts.unet.config.out_channels != parts.unet.config.in_channels:
            raise ValueError("the UNet must predict as many channels as it reads (no learned variance)")
        self.unet = parts.unet.eval().requires_grad_(False)
        self.vae = parts.vae.eval().requires_grad_(False)
        self.text_encoders = nn.ModuleList([e.eval().requires_grad_(False) for e in parts.text_encoders])
        self.tokenizers = list(parts.tokenizers)
        self.scheduler = parts.scheduler
        self.prediction_type = pred
        self.is_sdxl = parts.unet.config.get("addition_embed_type") == "text_time"
        if self.is_sdxl != (len(self.text_encoders) == 2):
            raise ValueError("SDXL needs two text encoders (and its UNet addition_embed_type 'text_time'); SD 1.x/2.x one")
        self.zeros_for_empty_prompt = bool(parts.force_zeros_for_empty_prompt)
        self.checkpoint_vae = bool(checkpoint_vae)
        self.alphas_cumprod = parts.scheduler.alphas_cumprod.to(torch.float64).cpu()

    # ---- properties ------------------------------------------------------------------------
    @property
    def denoiser(self) -> nn.Module:
        return self.unet

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.in_channels)

    # ---- text ------------------------------------------------------------------------------
    def encode_prompt(
        self,
        prompts: str | Sequence[str],
        original_size: tuple[int, int] | None = None,
        crop_top_left: tuple[int, int] = (0, 0),
        target_size: tuple[int, int] | None = None,
    ) -> Conditioning:
        """Both CFG branches for a batch of prompts; the unconditional one is the empty prompt.

        The size arguments are SDXL's micro-conditioning in pixels (default: the image size).
        """
        return encode_prompts(
            list(self.text_encoders), self.tokenizers, prompts, self.is_sdxl, self.zeros_for_empty_prompt,
            original_size, crop_top_left, target_size,
        )

    # ---- noise model -----------------------------------------------------------------------
    def eps_fn(
        self, conditioning: Conditioning, guidance_scale: float | None = DEFAULT_GUIDANCE_SCALE
    ) -> Callable[[Tensor, int], Tensor]:
        """eps(latents, t) with classifier-free guidance, for ``doodl.sample_with_grad``.

        eps = eps_u + s * (eps_c - eps_u), both branches in ONE batched UNet call; s = None or
        1.0 runs the conditional branch only. v-predictions are turned into eps. Latents of
        batch N meet a conditioning of batch N (or 1, repeated); eps comes back in their dtype.
        """
        if not isinstance(conditioning, Conditioning):
            raise ValueError("conditioning must come from encode_prompt(prompts)")
        if conditioning.is_sdxl != self.is_sdxl:
            raise ValueError("conditioning was encoded for another kind of model (SDXL vs SD): re-encode with this backend")
        if guidance_scale is not None and (not isinstance(guidance_scale, (int, float)) or not math.isfinite(guidance_scale)):
            raise ValueError(f"guidance_scale must be a finite number or None, got {guidance_scale!r}")
        cfg = guidance_scale is not None and float(guidance_scale) != 1.0
        scale = 1.0 if guidance_scale is None else float(guidance_scale)
        cond = conditioning.to(self.device, self.dtype)

        def eps_fn(latents: Tensor, t: int) -> Tensor:
            n = self._check_latents(latents, len(cond))
            ctx = [cond.uncond, cond.cond] if cfg else [cond.cond]
            ctx = torch.cat([_repeat(c, n) for c in ctx])
            x_in = latents.to(self.dtype)
            x_in = torch.cat([x_in, x_in]) if cfg else x_in
            out = self.unet(x_in, t, encoder_hidden_states=ctx, added_cond_kwargs=self._added_cond(cond, latents, n, cfg)).sample
            out = out.to(latents.dtype)
            if cfg:
                out_u, out_c = out.chunk(2)
                out = out_u + scale * (out_c - out_u)
            if self.prediction_type == "v_prediction":
                out = v_to_eps(out, latents, float(self.alphas_cumprod[int(t)]))
            return out

        return eps_fn

    def _added_cond(self, cond: Conditioning, latents: Tensor, n: int, cfg: bool) -> dict | None:
        if not self.is_sdxl:
            return None
        f = self.vae_scale_factor
        ids = torch.tensor(cond.time_ids(latents.shape[-2] * f, latents.shape[-1] * f), device=self.device, dtype=self.dtype)
        pooled = [cond.uncond_pooled, cond.pooled] if cfg else [cond.pooled]
        pooled = torch.cat([_repeat(p, n) for p in pooled])
        return {"text_embeds": pooled, "time_ids": ids.expand(pooled.shape[0], -1)}

    def _check_latents(self, latents: Tensor, batch: int) -> int:
        if not isinstance(latents, Tensor) or not latents.is_floating_point() or latents.dim() != 4:
            raise ValueError(f"latents must be a floating (N, {self.latent_channels}, h, w) tensor")
        n, c = latents.shape[:2]
        if c != self.latent_channels:
            raise ValueError(f"latents have {c} channels, the UNet reads {self.latent_channels}")
        if batch not in (1, n):
            raise ValueError(f"latents batch {n} does not match the {batch} encoded prompts (use 1 prompt or {n})")
        return n

    # ---- latents and sampler ---------------------------------------------------------------
    def latent_shape(self, height: int, width: int, batch: int = 1) -> tuple[int, int, int, int]:
        """(batch, C, height / f, width / f) for images of height x width pixels."""
        f = self.vae_scale_factor
        for name, v in (("height", height), ("width", width), ("batch", batch)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if height % f or width % f:
            raise ValueError(f"height and width must be multiples of {f} (the VAE's downsampling), got {height}x{width}")
        return (batch, self.latent_channels, height // f, width // f)

    def sampler(self, num_steps: int = 50, mix: float = DEFAULT_MIX, leapfrog: bool = True) -> EDICTSampler:
        """The EDICT chain over this model's DDIM schedule."""
        return EDICTSampler(self.scheduler, num_steps=num_steps, mix=mix, leapfrog=leapfrog)

    def extra_repr(self) -> str:
        kind = "sdxl" if self.is_sdxl else "sd"
        return f"source={self.source!r}, kind={kind}, prediction_type={self.prediction_type}, dtype={self.dtype}"


def _repeat(t: Tensor, n: int) -> Tensor:
    """(1, ...) -> (n, ...); (n, ...) unchanged."""
    return t if t.shape[0] == n else t.expand(n, *t.shape[1:])
