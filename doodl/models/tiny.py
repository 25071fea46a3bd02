"""Tiny random diffusers components (under 1M parameters) for tests and CPU benchmarks."""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, UNet2DConditionModel


def tiny_unet(seed: int = 0, cross_attention_dim: int = 32, sample_size: int = 16) -> UNet2DConditionModel:
    """A UNet2DConditionModel with cross-attention, 4 latent channels, frozen and in eval mode."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    return unet.eval().requires_grad_(False)


def sd_scheduler() -> DDIMScheduler:
    """Stable Diffusion 1.x's DDIM scheduler configuration (SPEC.md section 2)."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
