"""The noise models and decoders the speed benchmarks time: tiny, SD-1.5 size, SDXL size (the flow
models, SD3 and FLUX size: ``flow_models.py``).

The SD-1.5 and SDXL configurations are the published ones (``unet/config.json`` and
``vae/config.json`` of runwayml/stable-diffusion-v1-5 and stabilityai/stable-diffusion-xl-base-1.0),
written out here so nothing is downloaded; the weights are random (timing needs no trained weights).

``World`` holds one frozen UNet and VAE with a fixed random text conditioning and gives:
    eps(latents, t)      classifier-free guidance, both branches in ONE batched UNet call (doodl)
    eps_ref(latents, t)  the same value from two batch-1 calls per item, as the reference code runs it
    decode(latents)      images in [0, 1], differentiable
Both eps functions count their calls (``calls``: without a graph, with one).
"""

from __future__ import annotations

import torch

SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True, freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, downsample_padding=1, mid_block_scale_factor=1,
    act_fn="silu", norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=768, attention_head_dim=8,
)
SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True, freq_shift=0,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(320, 640, 1280), layers_per_block=2, downsample_padding=1, mid_block_scale_factor=1,
    act_fn="silu", norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=2048, attention_head_dim=(5, 10, 20),
    transformer_layers_per_block=(1, 2, 10), use_linear_projection=True, addition_embed_type="text_time",
    addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
)
SD_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, act_fn="silu", norm_num_groups=32, layers_per_block=2,
    block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512, scaling_factor=0.18215,
)
SDXL_VAE = {**SD_VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True}

SCALES = {
    # name: (unet config, vae config, text tokens, pooled dim or None, latent side on CPU)
    "sd15": (SD15_UNET, SD_VAE, 77, None, 16),
    "sdxl": (SDXL_UNET, SDXL_VAE, 77, 1280, 16),
}


class World:
    """One frozen UNet + VAE, a fixed random (uncond, cond) text pair, CFG scale ``cfg``."""

    def __init__(self, unet, vae, tokens: int, pooled: int | None, latent: int, cfg: float = 7.5, seed: int = 0):
        self.unet, self.vae, self.cfg, self.latent = unet, vae, cfg, latent
        self.dtype, self.device = unet.dtype, unet.device
        g = torch.Generator().manual_seed(seed)
        dim = unet.config.cross_attention_dim
        self.ctx = torch.randn(2, tokens, dim, generator=g).to(self.device, self.dtype)  # (uncond, cond)
        self.added = None
        if pooled is not None:
            px = 8 * latent
            ids = torch.tensor([[px, px, 0, 0, px, px]] * 2, dtype=torch.float32)
            self.added = {"text_embeds": torch.randn(2, pooled, generator=g).to(self.device, self.dtype),
                          "time_ids": ids.to(self.device, self.dtype)}
        self.calls = {"plain": 0, "graph": 0, "ref_plain": 0, "ref_graph": 0}
        self.batch_per_call = 2  # both CFG branches in one call

    def _count(self, kind: str, latents, n: int = 1) -> None:
        graph = torch.is_grad_enabled() and (latents.requires_grad or any(p.requires_grad for p in self.unet.parameters()))
        self.calls[("ref_" if kind == "ref" else "") + ("graph" if graph else "plain")] += n

    def _unet(self, l, t, ctx, added):
        return self.unet(l, t, encoder_hidden_states=ctx, added_cond_kwargs=added).sample

    def _cond(self, idx, n):
        ctx = self.ctx[idx].repeat_interleave(n, 0)
        added = None if self.added is None else {k: v[idx].repeat_interleave(n, 0) for k, v in self.added.items()}
        return ctx, added

    def eps(self, latents, t):
        """eps_u + s (eps_c - eps_u) from one UNet call on the batch [uncond items; cond items]."""
        self._count("doodl", latents)
        n = latents.shape[0]
        ctx, added = self._cond(torch.tensor([0, 1]), n)
        l = latents.to(self.dtype)
        e_u, e_c = self._unet(torch.cat([l, l]), t, ctx, added).float().chunk(2)
        return (e_u + self.cfg * (e_c - e_u)).to(latents.dtype)

    def eps_ref(self, latents, t):
        """The same guidance from two batch-1 UNet calls per item (uncond, then cond)."""
        out = []
        for k in range(latents.shape[0]):
            l = latents[k:k + 1].to(self.dtype)
            e = []
            for idx in (0, 1):
                self._count("ref", latents)
                ctx, added = self._cond(torch.tensor([idx]), 1)
                e.append(self._unet(l, t, ctx, added).float())
            out.append(e[0] + self.cfg * (e[1] - e[0]))
        return torch.cat(out).to(latents.dtype)

    def decode(self, latents):
        """(D(z / sf) + 1) / 2 in the latents' dtype, computed in the VAE's dtype."""
        z = latents.to(self.vae.dtype) / self.vae.config.scaling_factor
        return ((self.vae.decode(z).sample + 1) / 2).to(latents.dtype)

    def latents(self, batch: int = 1, seed: int = 0, dtype=torch.float32):
        g = torch.Generator().manual_seed(seed)
        return torch.randn(batch, 4, self.latent, self.latent, generator=g, dtype=dtype).to(self.device)

    def sampler(self, T: int):
        """The EDICT chain of T DDIM steps over Stable Diffusion's schedule."""
        import doodl
        from doodl.models.tiny import sd_scheduler

        return doodl.EDICTSampler(sd_scheduler(), num_steps=T)


def build(scale: str = "tiny", device: str = "cpu", dtype=torch.float32, latent: int | None = None, seed: int = 0,
          **flow_options):
    """The World of ``scale``: "tiny" (doodl.models.tiny, 16x16 latents), "sd15" or "sdxl"; the
    flow scales ("sd3", "flux", "tiny-sd3", "tiny-flux") give a ``flow_models.FlowWorld``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from flow_models import FLOW_SCALES, TINY_FLOW, build_flow

    if scale in FLOW_SCALES or scale in TINY_FLOW:
        return build_flow(scale, device, dtype, latent, seed, **flow_options)
    if scale == "tiny":
        from doodl.models.tiny import tiny_unet, tiny_vae

        unet, vae, tokens, pooled, side = tiny_unet(seed), tiny_vae(seed), 8, None, 16
    elif scale in SCALES:
        ucfg, vcfg, tokens, pooled, side = SCALES[scale]
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**ucfg)
        vae = AutoencoderKL(**vcfg)
    else:
        raise ValueError(f"unknown scale {scale!r}: choose tiny, {', '.join([*SCALES, *FLOW_SCALES, *TINY_FLOW])}")
    upcast = dtype == torch.float16 and vae.config.get("force_upcast", False)  # SDXL's VAE overflows in fp16
    vae_dtype = torch.float32 if upcast else dtype
    unet = (unet.to(device) if dtype == torch.float32 else unet.to(device, dtype)).eval().requires_grad_(False)
    vae = (vae.to(device) if vae_dtype == torch.float32 else vae.to(device, vae_dtype)).eval().requires_grad_(False)
    return World(unet, vae, tokens, pooled, latent or side, seed=seed)
