"""eps_fn: batched classifier-free guidance, v-prediction, SDXL conditioning, precision."""

import pytest
import torch
from diffusers import DDIMScheduler

from doodl.models import StableDiffusion, v_to_eps

from .helpers import CountCalls, latents


def unet_eps(backend, x, t, ctx, added=None):
    """One plain UNet call on a given context (the reference for the guidance tests)."""
    return backend.unet(x, t, encoder_hidden_states=ctx, added_cond_kwargs=added).sample


def test_cfg_is_one_batched_call(sd64):
    cond = sd64.encode_prompt(["a cat", "a red car"])
    x = latents(sd64, batch=2)
    scale = 7.5
    eps_fn = sd64.eps_fn(cond, guidance_scale=scale)
    with CountCalls(sd64.unet) as calls:
        eps = eps_fn(x, 761)
    assert calls.batches == [4]  # [uncond, cond] of both latents, one call
    e_u = unet_eps(sd64, x, 761, cond.uncond)
    e_c = unet_eps(sd64, x, 761, cond.cond)
    torch.testing.assert_close(eps, e_u + scale * (e_c - e_u), rtol=1e-10, atol=1e-10)
    assert not torch.allclose(e_u, e_c)  # the two branches really differ


def test_unconditional_branch_is_the_empty_prompt(sd64):
    cond = sd64.encode_prompt(["a cat", "a dog"])
    empty = sd64.encode_prompt([""]).cond
    assert torch.equal(cond.uncond, empty.expand(2, -1, -1))
    assert not torch.equal(cond.cond[0], cond.cond[1])


@pytest.mark.parametrize("scale", [1.0, None])
def test_no_guidance_is_one_conditional_call(sd64, scale):
    cond = sd64.encode_prompt("a cat")
    x = latents(sd64, batch=3)
    with CountCalls(sd64.unet) as calls:
        eps = sd64.eps_fn(cond, guidance_scale=scale)(x, 501)
    assert calls.batches == [3]  # one prompt serves the whole batch
    # eps_fn repeats the context into a contiguous batch, the reference passes a stride-0 view: the
    # UNet may take other kernels (another summation order) for each, so the two agree to float64
    # rounding only (1.8e-15 seen on an AMD EPYC); a wrong branch or context is off by far more
    ref = unet_eps(sd64, x, 501, cond.cond.expand(3, -1, -1))
    torch.testing.assert_close(eps, ref, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(eps, unet_eps(sd64, x, 501, cond.uncond.expand(3, -1, -1)), rtol=1e-6, atol=1e-6)


def test_guidance_scale_zero_is_unconditional(sd64):
    cond = sd64.encode_prompt("a cat")
    x = latents(sd64)
    torch.testing.assert_close(sd64.eps_fn(cond, 0.0)(x, 301), unet_eps(sd64, x, 301, cond.uncond), rtol=1e-12, atol=1e-12)


def test_v_prediction_matches_diffusers_ddim_step(sdv64):
    """DDIM's own v-prediction step equals its epsilon step fed with our converted eps."""
    cond = sdv64.encode_prompt("a cat")
    x = latents(sdv64)
    sched_v = DDIMScheduler.from_config(sdv64.scheduler.config)
    sched_e = DDIMScheduler.from_config(sdv64.scheduler.config, prediction_type="epsilon")
    assert sched_v.config.prediction_type == "v_prediction"
    for s in (sched_v, sched_e):
        s.set_timesteps(10)
        s.alphas_cumprod = s.alphas_cumprod.double()  # its step math in float64, like ours
    eps_fn = sdv64.eps_fn(cond, guidance_scale=None)
    for t in sched_v.timesteps[[0, 4, 9]]:
        v = unet_eps(sdv64, x, t, cond.cond)
        prev_v = sched_v.step(v, t, x).prev_sample
        prev_e = sched_e.step(eps_fn(x, int(t)), t, x).prev_sample
        torch.testing.assert_close(prev_e, prev_v, rtol=1e-12, atol=1e-12)
    # the conversion itself: x_t = sqrt(abar) x0 + sqrt(1-abar) eps and v = sqrt(abar) eps - sqrt(1-abar) x0
    abar, x0, e = 0.3, torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    x_t = abar ** 0.5 * x0 + (1 - abar) ** 0.5 * e
    torch.testing.assert_close(v_to_eps(abar ** 0.5 * e - (1 - abar) ** 0.5 * x0, x_t, abar), e)


def test_v_prediction_guidance(sdv64):
    """CFG on v then conversion equals CFG on the converted eps of each branch."""
    cond = sdv64.encode_prompt("a cat")
    x, t, s = latents(sdv64), 641, 5.0
    abar = float(sdv64.scheduler.alphas_cumprod[t])
    e_u = v_to_eps(unet_eps(sdv64, x, t, cond.uncond), x, abar)
    e_c = v_to_eps(unet_eps(sdv64, x, t, cond.cond), x, abar)
    torch.testing.assert_close(sdv64.eps_fn(cond, s)(x, t), e_u + s * (e_c - e_u), rtol=1e-10, atol=1e-10)


def test_sdxl_added_conditioning(sdxl64):
    cond = sdxl64.encode_prompt(["a cat", "a dog"])
    assert cond.is_sdxl and cond.cond.shape == (2, 77, 64) and cond.pooled.shape == (2, 32)
    # force_zeros_for_empty_prompt (written by StableDiffusionXLPipeline): zero unconditional branch
    assert sdxl64.zeros_for_empty_prompt
    assert not cond.uncond.any() and not cond.uncond_pooled.any()
    x, t, s = latents(sdxl64, batch=2), 901, 7.5
    with CountCalls(sdxl64.unet) as calls:
        eps = sdxl64.eps_fn(cond, s)(x, t)
    assert calls.batches == [4]
    ids = torch.tensor([[16, 16, 0, 0, 16, 16]] * 2, dtype=torch.float64)

    def ref(ctx, pooled):
        return unet_eps(sdxl64, x, t, ctx, {"text_embeds": pooled, "time_ids": ids})

    e_u, e_c = ref(cond.uncond, cond.uncond_pooled), ref(cond.cond, cond.pooled)
    torch.testing.assert_close(eps, e_u + s * (e_c - e_u), rtol=1e-10, atol=1e-10)
    # size conditioning reaches the UNet
    other = sdxl64.encode_prompt(["a cat", "a dog"], original_size=(1024, 1024), crop_top_left=(8, 0))
    assert other.time_ids(16, 16) == (1024, 1024, 8, 0, 16, 16)
    assert not torch.allclose(sdxl64.eps_fn(other, s)(x, t), eps)


def test_sdxl_empty_prompt_encoded_when_not_forced(sdxl_folder, tmp_path):
    import json
    import shutil

    folder = tmp_path / "xl"
    shutil.copytree(sdxl_folder, folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["force_zeros_for_empty_prompt"] = False
    (folder / "model_index.json").write_text(json.dumps(index))
    backend = StableDiffusion(folder, dtype="float64", device="cpu")
    cond = backend.encode_prompt("a cat")
    empty = backend.encode_prompt("")
    assert cond.uncond.abs().sum() > 0
    assert torch.equal(cond.uncond, empty.cond) and torch.equal(cond.uncond_pooled, empty.pooled)


def test_precision_latents_dtype_kept(sd, sd64):
    """float64 latents through a float32 UNet: eps comes back in float64 and matches float32."""
    cond = sd.encode_prompt("a cat")
    x = latents(sd, dtype=torch.float64)
    eps = sd.eps_fn(cond)(x, 401)
    assert eps.dtype == torch.float64
    ref = sd64.eps_fn(sd64.encode_prompt("a cat"))(x, 401)
    torch.testing.assert_close(eps, ref, rtol=1e-4, atol=1e-4)


def test_eps_fn_errors(sd64, sdxl64):
    cond = sd64.encode_prompt(["a", "b"])
    x = latents(sd64, batch=3)
    with pytest.raises(ValueError, match="batch 3 does not match the 2 encoded prompts"):
        sd64.eps_fn(cond)(x, 1)
    with pytest.raises(ValueError, match="channels"):
        sd64.eps_fn(cond)(torch.zeros(2, 3, 8, 8, dtype=torch.float64), 1)
    with pytest.raises(ValueError, match="another kind of model"):
        sdxl64.eps_fn(cond)
    with pytest.raises(ValueError, match="encode_prompt"):
        sd64.eps_fn(torch.zeros(1, 77, 32))
    with pytest.raises(ValueError, match="guidance_scale"):
        sd64.eps_fn(cond, float("nan"))
    with pytest.raises(ValueError, match="non-empty list"):
        sd64.encode_prompt([])
    with pytest.raises(ValueError, match="must be a str"):
        sd64.encode_prompt(["a", 3])
    with pytest.raises(ValueError, match="original_size"):
        sdxl64.encode_prompt("a", original_size=(64,))
    with pytest.warns(UserWarning, match="longer than 77 tokens"):
        sd64.encode_prompt("word " * 100)


def test_low_precision_unet_with_float32_latents(sd_folder, sd):
    """bfloat16 UNet, float32 coupling: eps returns in float32, close to the float32 model's."""
    low = StableDiffusion(sd_folder, dtype="bfloat16", device="cpu")
    assert low.unet.dtype == torch.bfloat16
    cond = low.encode_prompt("a cat")
    assert cond.cond.dtype == torch.bfloat16
    x = latents(low, dtype=torch.float32)
    eps = low.eps_fn(cond, guidance_scale=None)(x, 501)  # (guidance would amplify bf16 rounding)
    assert eps.dtype == torch.float32
    ref = sd.eps_fn(sd.encode_prompt("a cat"), guidance_scale=None)(x, 501)
    assert (eps - ref).abs().max() < 0.05 * ref.abs().max()
    # float16 models keep a VAE that asks for it (config force_upcast) in float32
    half = StableDiffusion(sd_folder, dtype="float16", device="cpu")
    assert half.unet.dtype == torch.float16 and half.vae.dtype == torch.float32
    assert StableDiffusion(sd_folder, dtype="float16", vae_dtype="float16", device="cpu").vae.dtype == torch.float16


@pytest.mark.gpu
def test_cuda_half_precision(sd_folder):
    backend = StableDiffusion(sd_folder, device="cuda")
    assert backend.unet.dtype == torch.float16
    x = latents(backend, dtype=torch.float32).requires_grad_(True)
    assert x.device.type == "cuda"
    eps = backend.eps_fn(backend.encode_prompt("a cat"))(x, 501)
    assert eps.dtype == torch.float32 and eps.device.type == "cuda"
    backend.decode(x).mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
