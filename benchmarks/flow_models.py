"""Flow-matching worlds for the speed benchmarks: SD3-medium size and FLUX.1-dev size (and tiny ones).

The transformer and VAE configurations are the published ones (``transformer/config.json`` and
``vae/config.json`` of stabilityai/stable-diffusion-3-medium-diffusers and black-forest-labs/FLUX.1-dev),
written out here so nothing is downloaded; the weights are random (timing needs no trained weights).
The velocity, the schedule (with the pipeline's shift for the image size) and the decode are
doodl's own backends (``doodl.models.SD3`` / ``Flux`` built with ``from_components``); only the
text conditioning is a fixed random tensor of the published widths (SD3: 77 CLIP + 256 T5 tokens,
FLUX: 512 T5 tokens), so the text encoders are tiny placeholders that never run.

``FlowWorld`` has the interface of ``speed_models.World`` the benchmarks use: eps (the guided
velocity), decode, latents, sampler(T), calls; no ``eps_ref`` (the reference code is SD-only).
"""

from __future__ import annotations

import torch

SD3_MEDIUM = dict(
    sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24, attention_head_dim=64,
    num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536, pooled_projection_dim=2048,
    pos_embed_max_size=192,
)
FLUX_DEV = dict(
    patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128, num_attention_heads=24,
    joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56),
)
FLOW_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=16, act_fn="silu", norm_num_groups=32, layers_per_block=2,
    block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, sample_size=1024, use_quant_conv=False, use_post_quant_conv=False,
)
SD3_VAE = {**FLOW_VAE, "scaling_factor": 1.5305, "shift_factor": 0.0609}
FLUX_VAE = {**FLOW_VAE, "scaling_factor": 0.3611, "shift_factor": 0.1159}

FLOW_SCALES = {
    # name: (transformer config, vae config, text tokens, guidance (SD3: CFG scale, FLUX: its input), latent side on CPU)
    "sd3": (SD3_MEDIUM, SD3_VAE, 77 + 256, 7.0, 8),
    "flux": (FLUX_DEV, FLUX_VAE, 512, 3.5, 8),
}
TINY_FLOW = ("tiny-sd3", "tiny-flux")


class FlowWorld:
    """One frozen flow backend, a fixed random conditioning, the guided velocity as ``eps``."""

    def __init__(self, backend, tokens: int, guidance: float, latent: int, seed: int = 0):
        from doodl.models.flow import FlowConditioning

        self.backend, self.latent, self.tokens = backend, latent, tokens
        self.dtype, self.device = backend.dtype, backend.device
        cfg = backend.transformer.config
        g = torch.Generator().manual_seed(seed)

        def rand(*shape):
            return torch.randn(*shape, generator=g).to(self.device, self.dtype)

        ctx, pooled = (1, tokens, cfg.joint_attention_dim), (1, cfg.pooled_projection_dim)
        if backend.kind == "sd3":
            cond = FlowConditioning("sd3", rand(*ctx), rand(*pooled), rand(*ctx), rand(*pooled))
        else:
            cond = FlowConditioning(backend.kind, rand(*ctx), rand(*pooled))
        self._velocity = backend.eps_fn(cond, guidance)
        self.batch_per_call = 2 if backend.kind == "sd3" else 1  # SD3: both CFG branches in one call
        self.calls = {"plain": 0, "graph": 0, "ref_plain": 0, "ref_graph": 0}

    @property
    def pixels(self) -> int:
        return self.latent * self.backend.vae_scale_factor

    def sampler(self, T: int):
        """The backend's EDICT chain over its flow schedule, shifted for this image size."""
        return self.backend.sampler(T, height=self.pixels, width=self.pixels)

    def eps(self, latents, t):
        """v(x_t, t) with the model's guidance (SD3: CFG in one batched call; FLUX: its guidance input)."""
        graph = torch.is_grad_enabled() and latents.requires_grad
        self.calls["graph" if graph else "plain"] += 1
        return self._velocity(latents, t)

    def decode(self, latents):
        return self.backend.decode(latents)

    def latents(self, batch: int = 1, seed: int = 0, dtype=torch.float32):
        g = torch.Generator().manual_seed(seed)
        c = self.backend.latent_channels
        return torch.randn(batch, c, self.latent, self.latent, generator=g, dtype=dtype).to(self.device)


def _placeholders(kind: str):
    """Tiny text encoders in the slots the backend checks (the conditioning never comes from them)."""
    from doodl.models.tiny import tiny_clip_text
    from doodl.models.tiny_flow import tiny_t5

    if kind == "sd3":
        return [tiny_clip_text(1, projection=True), tiny_clip_text(2, projection=True), None], [None] * 3
    return [tiny_clip_text(1), tiny_t5(2)], [None] * 2


def build_flow(scale: str, device: str = "cpu", dtype=torch.float32, latent: int | None = None, seed: int = 0,
               tokens: int | None = None) -> FlowWorld:
    """The FlowWorld of ``scale``: "sd3" / "flux" (published sizes) or "tiny-sd3" / "tiny-flux";
    ``tokens``: context tokens instead of the pipeline's default (e.g. SD3 with max_sequence_length=77)."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel, SD3Transformer2DModel

    from doodl.models import SD3, Flux
    from doodl.models.flow_loading import FlowParts
    from doodl.models.tiny_flow import flow_scheduler, tiny_flow_vae, tiny_flux_transformer, tiny_sd3_transformer

    kind = scale.removeprefix("tiny-")
    torch.manual_seed(seed)
    if scale == "tiny-sd3":
        transformer, vae, default_tokens, guidance, side = tiny_sd3_transformer(seed), tiny_flow_vae(seed), 12, 7.0, 8
    elif scale == "tiny-flux":
        transformer, default_tokens, guidance, side = tiny_flux_transformer(seed), 12, 3.5, 8
        vae = tiny_flow_vae(seed, scaling_factor=0.3611, shift_factor=0.1159)
    elif scale in FLOW_SCALES:
        tcfg, vcfg, default_tokens, guidance, side = FLOW_SCALES[scale]
        transformer = (SD3Transformer2DModel if kind == "sd3" else FluxTransformer2DModel)(**tcfg)
        vae = AutoencoderKL(**vcfg)
    else:
        raise ValueError(f"unknown flow scale {scale!r}: choose {', '.join([*FLOW_SCALES, *TINY_FLOW])}")
    transformer = transformer.to(device, dtype).eval().requires_grad_(False)
    vae = vae.to(device, dtype).eval().requires_grad_(False)
    encoders, tokenizers = _placeholders(kind)
    scheduler = flow_scheduler("sd3" if kind == "sd3" else "flux-dev")
    backend = (SD3 if kind == "sd3" else Flux).from_components(FlowParts(transformer, vae, scheduler, encoders, tokenizers))
    return FlowWorld(backend, tokens or default_tokens, guidance, latent or side, seed=seed)
