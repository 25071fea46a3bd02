"""The FLUX.1 backend (dev, schnell) on tiny random pipelines written by diffusers'
save_pretrained and loaded back through the public path, checked against diffusers' FluxPipeline."""

import shutil

import pytest
import torch

import doodl
from doodl.models import Flux
from doodl.models.flux import image_ids, pack, unpack
from doodl.models.tiny_flow import save_tiny_flow_pipeline

from .helpers import quiet

SEQ = 16  # T5 tokens (FLUX.1-dev's default is 512, schnell's 256; tiny models, short prompts)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("flux")
    return {k: quiet(save_tiny_flow_pipeline, root / k, k) for k in ("flux-dev", "flux-schnell")}


@pytest.fixture(scope="module")
def dev(folders):
    return quiet(Flux, folders["flux-dev"], dtype="float64", device="cpu", max_sequence_length=SEQ)


@pytest.fixture(scope="module")
def schnell(folders):
    return quiet(Flux, folders["flux-schnell"], dtype="float64", device="cpu", max_sequence_length=SEQ)


def pipeline(folder):
    from diffusers import FluxPipeline

    return quiet(FluxPipeline.from_pretrained, folder, torch_dtype=torch.float64, local_files_only=True)


def test_packing_is_the_pipelines():
    from diffusers import FluxPipeline

    z = torch.randn(2, 4, 6, 10, generator=torch.Generator().manual_seed(0))
    tokens = pack(z)
    torch.testing.assert_close(tokens, FluxPipeline._pack_latents(z, 2, 4, 6, 10), rtol=0, atol=0)
    # the pipeline's unpack takes the image size in pixels (vae_scale_factor 8 here)
    torch.testing.assert_close(unpack(tokens, 6, 10), FluxPipeline._unpack_latents(tokens, 48, 80, 8), rtol=0, atol=0)
    torch.testing.assert_close(unpack(tokens, 6, 10), z, rtol=0, atol=0)
    ref = FluxPipeline._prepare_latent_image_ids(2, 3, 5, "cpu", torch.float64)
    torch.testing.assert_close(image_ids(6, 10, "cpu", torch.float64), ref, rtol=0, atol=0)


def test_encode_prompt_matches_diffusers(dev, folders):
    pipe = pipeline(folders["flux-dev"])
    embeds, pooled, _ = pipe.encode_prompt(["a red cat", "two dogs"], device="cpu", max_sequence_length=SEQ)
    c = dev.encode_prompt(["a red cat", "two dogs"])
    assert c.uncond is None  # one branch: FLUX has no CFG
    torch.testing.assert_close(c.cond, embeds, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c.pooled, pooled, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind,guidance", [("flux-dev", 3.5), ("flux-schnell", None)])
@pytest.mark.parametrize("steps", [1, 4])
def test_first_half_step_is_the_pipelines_step(folders, kind, guidance, steps):
    """diffusers' FluxPipeline (packing, mu, its sigmas, guidance input, Euler step) from x_T: its
    first step equals the EDICT chain's first half-step x1 = x_T + b * v(x_T)."""
    model = quiet(Flux, folders[kind], dtype="float64", device="cpu", max_sequence_length=SEQ)
    pipe = pipeline(folders[kind])
    xT = model.initial_noise(1, 16, 16, generator=0, dtype=torch.float64)
    first = []

    def keep(pipe, i, t, kwargs):
        if i == 0:
            first.append(kwargs["latents"].clone())
        return kwargs

    pipe("a cat", num_inference_steps=steps, height=16, width=16, latents=pack(xT), guidance_scale=guidance or 0.0,
         output_type="latent", max_sequence_length=SEQ, callback_on_step_end=keep,
         callback_on_step_end_tensor_inputs=["latents"])
    sampler = model.sampler(steps, height=16, width=16)
    pipe.scheduler.set_timesteps(sigmas=model.pipeline_sigmas(steps), mu=model.mu(16, 16))
    assert [s.t for s in sampler.steps] == pytest.approx(pipe.scheduler.timesteps.tolist(), abs=0)
    s = sampler.steps[0]
    x1 = xT + s.b * model.eps_fn(model.encode_prompt("a cat"), guidance)(xT, s.t)
    torch.testing.assert_close(pack(x1), first[0], rtol=1e-6, atol=1e-6)


def test_mu_is_the_pipelines(dev, schnell):
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    c = dev.scheduler.config
    for h, w in ((16, 16), (32, 64)):
        tokens = (h // 2 // 2) * (w // 2 // 2)
        want = calculate_shift(tokens, c.base_image_seq_len, c.max_image_seq_len, c.base_shift, c.max_shift)
        assert dev.mu(h, w) == pytest.approx(want, rel=1e-12)
    assert schnell.mu(16, 16) is None  # schnell: a fixed shift, mu unused
    assert dev.sampler(4, height=16, width=16).steps[1].sigma < dev.sampler(4, height=64, width=64).steps[1].sigma


def test_transformer_calls_per_step(dev):
    """One call per evaluation, batch N, packed tokens; 2 per step forward, 2 more backward."""
    seen = []
    hook = dev.transformer.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(tuple(kwargs["hidden_states"].shape)), with_kwargs=True)
    try:
        T, n = 3, 2
        sampler = dev.sampler(T, height=16, width=16)
        v_fn = dev.eps_fn(dev.encode_prompt(["a", "b"]), 3.5)
        xT = dev.initial_noise(n, 16, 16, generator=0, dtype=torch.float64).requires_grad_(True)
        x0, y0 = doodl.sample_with_grad(sampler, v_fn, xT, xT, mode="checkpoint")
        assert x0.shape == xT.shape == (n, 4, 8, 8)
        assert seen == [(n, 16, 16)] * (2 * T)
        (x0.sum() + y0.sum()).backward()
        assert seen == [(n, 16, 16)] * (4 * T)
    finally:
        hook.remove()


def test_decode_uses_scaling_and_shift(dev):
    z = torch.randn(1, 4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sf, shift = dev.vae.config.scaling_factor, dev.vae.config.shift_factor
    assert (sf, shift) == (0.3611, 0.1159)
    torch.testing.assert_close(dev.decode(z), (dev.vae.decode(z / sf + shift).sample + 1) / 2)


def test_guidance_errors(dev, schnell):
    c = schnell.encode_prompt("a")
    with pytest.raises(ValueError, match="no guidance input.*guidance_scale=None"):
        schnell.eps_fn(c, 3.5)
    with pytest.raises(ValueError, match="needs its guidance input"):
        dev.eps_fn(dev.encode_prompt("a"), None)
    with pytest.raises(ValueError, match="this Flux backend's encode_prompt"):
        dev.eps_fn(c.__class__("sd3", c.cond, c.pooled), 3.5)


def test_bad_latent_sizes(dev):
    v_fn = dev.eps_fn(dev.encode_prompt("a"), 3.5)
    with pytest.raises(ValueError, match="2x2 patch packing"):
        v_fn(torch.zeros(1, 4, 7, 8, dtype=torch.float64), 500.0)
    with pytest.raises(ValueError, match="multiples of 4"):
        dev.latent_shape(16, 18)
    with pytest.raises(ValueError, match="latents batch 3"):
        dev.eps_fn(dev.encode_prompt(["a", "b"]), 3.5)(torch.zeros(3, 4, 8, 8, dtype=torch.float64), 500.0)


def test_missing_parts_are_named(folders, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(folders["flux-schnell"], broken)
    shutil.rmtree(broken / "tokenizer_2")
    with pytest.raises(FileNotFoundError, match="tokenizer_2/"):
        Flux(broken, dtype="float64", device="cpu")
    shutil.rmtree(broken / "text_encoder_2")
    with pytest.raises(FileNotFoundError, match="text_encoder_2/"):
        Flux(broken, dtype="float64", device="cpu")
    with pytest.raises(FileNotFoundError, match="hf download nobody-owns/this-flux"):
        Flux("nobody-owns/this-flux", device="cpu")


def test_loading_an_sd3_folder_names_the_right_backend(tmp_path):
    folder = quiet(save_tiny_flow_pipeline, tmp_path / "sd3", "sd3")
    with pytest.raises(ValueError, match="doodl.models.SD3"):
        Flux(folder, device="cpu")
