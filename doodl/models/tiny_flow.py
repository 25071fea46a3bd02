"""Tiny random flow-matching pipelines (SD3 / SD3.5 / FLUX.1) and few-step (Turbo) folders for tests.

Written by diffusers' own ``save_pretrained``; every component is a few hundred thousand
parameters (the CLIP text encoders keep CLIP's full vocabulary, as in ``tiny.py``). The
schedulers carry the published configurations' flow settings (SD3: shift 3; FLUX.1-dev: dynamic
shifting; FLUX.1-schnell: shift 1), so loading them exercises what the real models do.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch

from .tiny import tiny_clip_text

FLOW_KINDS = ("sd3", "sd3-no-t5", "sd3.5", "flux-dev", "flux-schnell")
TURBO_KINDS = ("sd-turbo", "sdxl-turbo")
TINY_T5_DIM = 64  # T5 width = the transformer's joint_attention_dim (SD3: also >= the two CLIP widths together)
TINY_LATENT_CHANNELS = 4


def tiny_t5_tokenizer():
    """A T5 tokenizer (Unigram over letters and digits, "</s>" appended, "<pad>" = 0), built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(c, -3.0) for c in string.ascii_lowercase + string.digits]
    pieces += [("\u2581" + c, -2.5) for c in string.ascii_lowercase]
    tok = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    return T5TokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", extra_ids=0)


def tiny_t5(seed: int = 0, vocab_size: int = 66, d_model: int = TINY_T5_DIM):
    """A 2-layer T5EncoderModel, frozen."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                      relative_attention_num_buckets=8, relative_attention_max_distance=16)
    torch.manual_seed(seed)
    return T5EncoderModel(config).eval().requires_grad_(False)


def tiny_flow_vae(seed: int = 0, scaling_factor: float = 1.5305, shift_factor: float = 0.0609):
    """An AutoencoderKL like SD3's / FLUX's (no quant convs, a shift factor), downsampling by 2."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
        latent_channels=TINY_LATENT_CHANNELS, norm_num_groups=8, sample_size=32,
        scaling_factor=scaling_factor, shift_factor=shift_factor, use_quant_conv=False, use_post_quant_conv=False,
    )
    return vae.eval().requires_grad_(False)


def tiny_sd3_transformer(seed: int = 0, sd35: bool = False, pooled_dim: int = 64):
    """An SD3Transformer2DModel (SD3.5: dual attention in block 0 and RMS q/k norm)."""
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    model = SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=TINY_LATENT_CHANNELS, out_channels=TINY_LATENT_CHANNELS,
        num_layers=2, attention_head_dim=8, num_attention_heads=2, joint_attention_dim=TINY_T5_DIM,
        caption_projection_dim=16, pooled_projection_dim=pooled_dim, pos_embed_max_size=16,
        dual_attention_layers=(0,) if sd35 else (), qk_norm="rms_norm" if sd35 else None,
    )
    return model.eval().requires_grad_(False)


def tiny_flux_transformer(seed: int = 0, guidance_embeds: bool = True, pooled_dim: int = 32):
    """A FluxTransformer2DModel over 2x2-packed latents (in_channels = 4 * latent channels)."""
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    model = FluxTransformer2DModel(
        patch_size=1, in_channels=4 * TINY_LATENT_CHANNELS, num_layers=1, num_single_layers=1,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=TINY_T5_DIM,
        pooled_projection_dim=pooled_dim, guidance_embeds=guidance_embeds, axes_dims_rope=(4, 6, 6),
    )
    return model.eval().requires_grad_(False)


def flow_scheduler(kind: str):
    """FlowMatchEulerDiscreteScheduler with the flow settings of the published model configs."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    if kind.startswith("sd3"):
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    if kind == "flux-dev":
        return FlowMatchEulerDiscreteScheduler(
            num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
            base_image_seq_len=256, max_image_seq_len=4096,
        )
    if kind == "flux-schnell":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False)
    raise ValueError(f"unknown kind {kind!r}: choose one of {', '.join(FLOW_KINDS)}")


def tiny_flow_pipeline(kind: str = "sd3", seed: int = 0):
    """A diffusers StableDiffusion3Pipeline or FluxPipeline of tiny random components."""
    from .tokenizer import EOS_TOKEN, clip_tokenizer_from_open_clip

    if kind not in FLOW_KINDS:
        raise ValueError(f"unknown kind {kind!r}: choose one of {', '.join(FLOW_KINDS)}")
    scheduler = flow_scheduler(kind)
    if kind.startswith("sd3"):
        from diffusers import StableDiffusion3Pipeline

        t5 = kind != "sd3-no-t5"
        return StableDiffusion3Pipeline(
            transformer=tiny_sd3_transformer(seed, sd35=kind == "sd3.5", pooled_dim=64),
            scheduler=scheduler,
            vae=tiny_flow_vae(seed),
            text_encoder=tiny_clip_text(seed + 1, projection=True),
            tokenizer=clip_tokenizer_from_open_clip(pad_token=EOS_TOKEN),
            text_encoder_2=tiny_clip_text(seed + 2, projection=True, hidden_act="gelu"),
            tokenizer_2=clip_tokenizer_from_open_clip(pad_token="!"),
            text_encoder_3=tiny_t5(seed + 3) if t5 else None,
            tokenizer_3=tiny_t5_tokenizer() if t5 else None,
        )
    from diffusers import FluxPipeline

    return FluxPipeline(
        transformer=tiny_flux_transformer(seed, guidance_embeds=kind == "flux-dev", pooled_dim=32),
        scheduler=scheduler,
        vae=tiny_flow_vae(seed, scaling_factor=0.3611, shift_factor=0.1159),
        text_encoder=tiny_clip_text(seed + 1),
        tokenizer=clip_tokenizer_from_open_clip(pad_token=EOS_TOKEN),
        text_encoder_2=tiny_t5(seed + 2),
        tokenizer_2=tiny_t5_tokenizer(),
    )


def save_tiny_flow_pipeline(folder, kind: str = "sd3", seed: int = 0) -> Path:
    """Write ``tiny_flow_pipeline(kind)`` with ``save_pretrained``; returns the folder."""
    folder = Path(folder)
    tiny_flow_pipeline(kind, seed).save_pretrained(folder)
    return folder


def save_tiny_turbo_pipeline(folder, kind: str = "sd-turbo", seed: int = 0) -> Path:
    """A tiny SD-Turbo / SDXL-Turbo-like folder: the SD / SDXL tiny pipeline with the Turbo models'
    own scheduler config (Euler / Euler ancestral with "trailing" timestep spacing)."""
    from diffusers import EulerAncestralDiscreteScheduler, EulerDiscreteScheduler

    from .tiny import save_tiny_pipeline, sd_scheduler

    if kind not in TURBO_KINDS:
        raise ValueError(f"unknown kind {kind!r}: choose one of {', '.join(TURBO_KINDS)}")
    folder = save_tiny_pipeline(folder, "sd" if kind == "sd-turbo" else "sdxl", seed)
    cls = EulerDiscreteScheduler if kind == "sd-turbo" else EulerAncestralDiscreteScheduler
    config = {k: v for k, v in sd_scheduler().config.items() if not k.startswith("_")}
    cls.from_config(config, timestep_spacing="trailing").save_pretrained(folder / "scheduler")
    index = json.loads((folder / "model_index.json").read_text())
    index["scheduler"] = ["diffusers", cls.__name__]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder
