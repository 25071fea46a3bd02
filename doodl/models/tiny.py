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


# ---- tiny pipeline components (tests of the Stable Diffusion backend) ------------------------

TINY_KINDS = ("sd", "sd-v", "sdxl")
TINY_TIME_EMBED_DIM = 8  # SDXL: each of the 6 time ids is embedded in this many channels


def tiny_sdxl_unet(
    seed: int = 0, cross_attention_dim: int = 64, pooled_dim: int = 32, sample_size: int = 16
) -> UNet2DConditionModel:
    """A UNet2DConditionModel conditioned like SDXL's: text context, pooled text and time ids."""
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
        addition_embed_type="text_time",
        addition_time_embed_dim=TINY_TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=pooled_dim + 6 * TINY_TIME_EMBED_DIM,
    )
    return unet.eval().requires_grad_(False)


def tiny_vae(seed: int = 0, downsample: int = 2):
    """An AutoencoderKL with 4 latent channels that downsamples by 2 or 4, frozen."""
    from diffusers import AutoencoderKL

    if downsample not in (2, 4):
        raise ValueError(f"downsample must be 2 or 4, got {downsample!r}")
    n = 2 if downsample == 2 else 3
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=(8, 16, 16)[:n],
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=16 * downsample,
        scaling_factor=0.18215,
    )
    return vae.eval().requires_grad_(False)


def tiny_clip_text(seed: int = 0, hidden_size: int = 32, projection: bool = False, hidden_act: str = "quick_gelu"):
    """A 2-layer CLIPTextModel (or CLIPTextModelWithProjection) over CLIP's full vocabulary."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        projection_dim=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act=hidden_act,
    )
    torch.manual_seed(seed)
    model = (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)
    return model.eval().requires_grad_(False)


def tiny_scheduler(kind: str = "sd") -> DDIMScheduler:
    """SD's DDIM configuration; "sd-v" predicts v as SD 2.x 768 does."""
    scheduler = sd_scheduler()
    if kind == "sd-v":
        scheduler = DDIMScheduler.from_config(scheduler.config, prediction_type="v_prediction")
    return scheduler


def save_tiny_pipeline(folder, kind: str = "sd", seed: int = 0, tokenizer: bool = True, downsample: int = 2):
    """Write a complete diffusers-format pipeline folder of tiny random components.

    kind: "sd" (SD 1.x-like, epsilon), "sd-v" (SD 2.x-like: v-prediction, OpenCLIP-style text
    encoder padding with '!'), "sdxl" (two text encoders, pooled embeddings, time ids). Written
    by diffusers' own ``save_pretrained``; ``tokenizer=False`` removes tokenizer folders (to test
    the tokenizer built from open_clip's vocabulary). Returns the folder as a Path.
    """
    import shutil
    from pathlib import Path

    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from .tokenizer import EOS_TOKEN, clip_tokenizer_from_open_clip

    if kind not in TINY_KINDS:
        raise ValueError(f"unknown kind {kind!r}: choose one of {', '.join(TINY_KINDS)}")
    folder = Path(folder)
    vae = tiny_vae(seed, downsample)
    scheduler = tiny_scheduler(kind)
    if kind == "sdxl":
        pipe = StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=tiny_clip_text(seed + 1),
            text_encoder_2=tiny_clip_text(seed + 2, projection=True, hidden_act="gelu"),
            tokenizer=clip_tokenizer_from_open_clip(pad_token=EOS_TOKEN),
            tokenizer_2=clip_tokenizer_from_open_clip(pad_token="!"),
            unet=tiny_sdxl_unet(seed, cross_attention_dim=64, pooled_dim=32),
            scheduler=scheduler,
        )
    else:
        openclip = kind == "sd-v"
        pipe = StableDiffusionPipeline(
            vae=vae,
            text_encoder=tiny_clip_text(seed + 1, hidden_act="gelu" if openclip else "quick_gelu"),
            tokenizer=clip_tokenizer_from_open_clip(pad_token="!" if openclip else EOS_TOKEN),
            unet=tiny_unet(seed, cross_attention_dim=32),
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    pipe.save_pretrained(folder)
    if not tokenizer:
        for sub in ("tokenizer", "tokenizer_2"):
            shutil.rmtree(folder / sub, ignore_errors=True)
    return folder
