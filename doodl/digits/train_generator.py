"""Training of the tiny text-to-image Stable Diffusion (VAE, then text encoder + UNet) on
digits 0-7, and its export as a diffusers pipeline folder."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from . import data
from .train_guidance import cosine_lr

CFG_DROPOUT = 0.1  # probability of the empty caption (classifier-free guidance training)
KL_WEIGHT = 1e-4  # per-element KL weight relative to the per-element squared error


def build_vae(seed: int) -> AutoencoderKL:
    """16x16 RGB <-> 4x8x8 latents."""
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=data.IMAGE_SIZE,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(32, 32), layers_per_block=1, norm_num_groups=8,
    )


def build_unet(seed: int, cross_attention_dim: int = 64) -> UNet2DConditionModel:
    """A cross-attention UNet on 4x8x8 latents, under 1M parameters."""
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=data.IMAGE_SIZE // 2, in_channels=4, out_channels=4,
        block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim, attention_head_dim=8, norm_num_groups=16, time_embedding_dim=64,
    )


def build_text_encoder(tokenizer: CLIPTokenizer, seed: int, hidden: int = 64) -> CLIPTextModel:
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def sd_scheduler() -> DDIMScheduler:
    """Stable Diffusion 1.x's DDIM configuration."""
    return DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def train_vae(images: torch.Tensor, steps: int, seed: int, batch: int = 64, lr: float = 2e-3) -> AutoencoderKL:
    """Plain autoencoder training (squared error on [-1, 1] pixels) with a small KL term; then
    records ``scaling_factor`` = 1 / std of the posterior samples of ``images`` in its config."""
    vae = build_vae(seed)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = cosine_lr(opt, steps)
    vae.train()
    for _ in range(steps):
        x = 2 * images[torch.randint(len(images), (batch,), generator=g)] - 1
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=g)
        rec = vae.decode(z).sample
        kl = 0.5 * (post.mean.pow(2) + post.var - 1 - post.logvar).mean()
        loss = F.mse_loss(rec, x) + KL_WEIGHT * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    vae.eval().requires_grad_(False)
    mean, std = encode_stats(vae, images)
    z = mean + std * torch.randn(mean.shape, generator=g)
    vae.register_to_config(scaling_factor=float(1.0 / z.std()))
    return vae


@torch.no_grad()
def encode_stats(vae: AutoencoderKL, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of images in [0, 1], (N, 4, 8, 8) each."""
    post = vae.encode(2 * images - 1).latent_dist
    return post.mean, post.std


@torch.no_grad()
def reconstruct(vae: AutoencoderKL, images: torch.Tensor) -> torch.Tensor:
    """Decode of the posterior mean, back in [0, 1]."""
    return (vae.decode(encode_stats(vae, images)[0]).sample / 2 + 0.5).clamp(0, 1)


def encode_text(text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer, captions: list[str]) -> torch.Tensor:
    """As StableDiffusionPipeline does: pad to model_max_length, last hidden state, (B, L, D)."""
    ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    return text_encoder(ids)[0]


def train_unet(vae: AutoencoderKL, tokenizer: CLIPTokenizer, images: torch.Tensor, labels: torch.Tensor, steps: int,
               seed: int, batch: int = 64, lr: float = 1e-3) -> tuple[UNet2DConditionModel, CLIPTextModel]:
    """Epsilon-prediction training of the UNet and, jointly, the text encoder; captions from a few
    templates, replaced by "" with probability CFG_DROPOUT."""
    if int(labels.max()) >= 8:
        raise ValueError("the generator is trained on digits 0-7 only")
    text_encoder = build_text_encoder(tokenizer, seed)
    unet = build_unet(seed + 1, text_encoder.config.hidden_size)
    scheduler = sd_scheduler()
    abar = scheduler.alphas_cumprod
    mean, std = encode_stats(vae, images)
    scale = vae.config.scaling_factor
    g = torch.Generator().manual_seed(seed)
    params = [*unet.parameters(), *text_encoder.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    sched = cosine_lr(opt, steps, warmup=100)
    unet.train()
    text_encoder.train()
    for _ in range(steps):
        idx = torch.randint(len(images), (batch,), generator=g)
        z0 = scale * (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=g))  # (B, 4, 8, 8)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=g)
        eps = torch.randn(z0.shape, generator=g)
        a = abar[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * eps
        context = encode_text(text_encoder, tokenizer, data.random_captions(labels[idx], g, drop=CFG_DROPOUT))
        loss = F.mse_loss(unet(zt, t, encoder_hidden_states=context).sample, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
    return unet.eval().requires_grad_(False), text_encoder.eval().requires_grad_(False)


def save_pipeline(folder: Path, vae: AutoencoderKL, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer,
                  unet: UNet2DConditionModel, vocab: dict[str, int], merges: list[str]) -> None:
    """Writes a Stable Diffusion pipeline folder (model_index.json, vae/, unet/, text_encoder/,
    tokenizer/, scheduler/) with each library's save_pretrained; the tokenizer folder also gets
    the classic vocab.json / merges.txt pair."""
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=sd_scheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    (folder / "tokenizer" / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False) + "\n", encoding="utf-8")
    (folder / "tokenizer" / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


@torch.no_grad()
def sample(pipe: StableDiffusionPipeline, prompts: list[str], seed: int, steps: int = 50,
           guidance_scale: float = 7.5, batch: int = 200) -> torch.Tensor:
    """Plain DDIM sampling with classifier-free guidance through the diffusers pipeline; (N, 3, 16, 16) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(prompts), batch):
        res = pipe(prompts[i : i + batch], num_inference_steps=steps, guidance_scale=guidance_scale, eta=0.0,
                   generator=g, output_type="pt")
        out.append(res.images)
    return torch.cat(out)
