"""The backend inside the core: EDICT chain -> decode -> loss -> exact gradient at x_T."""

import pytest
import torch

import doodl

from .helpers import latents


def chain_loss(backend, sampler, eps_fn, x, mode):
    xT = x.clone().requires_grad_(True)
    yT = x.clone().requires_grad_(True)
    x0, y0 = doodl.sample_with_grad(sampler, eps_fn, xT, yT, mode=mode)
    images = backend.decode(torch.cat([x0, y0]))
    target = torch.linspace(0, 1, images.numel(), dtype=images.dtype).reshape(images.shape)
    loss = (images - target).square().mean()
    loss.backward()
    return loss.detach(), xT.grad, yT.grad


@pytest.mark.parametrize("backend_name", ["sd64", "sdv64", "sdxl64"])
def test_invert_gradient_equals_naive(backend_name, request):
    backend = request.getfixturevalue(backend_name)
    sampler = backend.sampler(num_steps=3)
    assert isinstance(sampler, doodl.EDICTSampler) and sampler.mix == 0.93 and sampler.leapfrog
    assert sampler.timesteps == [int(t) for t in backend.scheduler.timesteps]
    eps_fn = backend.eps_fn(backend.encode_prompt("a cat"), guidance_scale=7.5)
    x = latents(backend)
    loss, gx, gy = chain_loss(backend, sampler, eps_fn, x, "invert")
    ref_loss, ref_gx, ref_gy = chain_loss(backend, sampler, eps_fn, x, "naive")
    assert gx.abs().sum() > 0 and gy.abs().sum() > 0
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx, ref_gx, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(gy, ref_gy, rtol=1e-7, atol=1e-9)
    modules = [backend.unet, backend.vae, *backend.text_encoders]
    assert all(p.grad is None for m in modules for p in m.parameters())


def test_float32_chain_with_float32_models(sd):
    """The default precision: float32 latents and models, gradient reaches x_T."""
    sampler = sd.sampler(num_steps=2, mix=0.9, leapfrog=False)
    eps_fn = sd.eps_fn(sd.encode_prompt(["a cat", "a dog"]))
    x = latents(sd, batch=2, dtype=torch.float32)
    loss, gx, gy = chain_loss(sd, sampler, eps_fn, x, "checkpoint")
    assert torch.isfinite(loss) and gx.dtype == torch.float32 and gx.shape == x.shape
    assert gx.abs().sum() > 0 and gy.abs().sum() > 0


def test_real_image_inversion_round_trip(sd64):
    """Encode an image, invert with EDICT, sample back: the latents return (float64)."""
    images = torch.rand(1, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    z0 = sd64.encode(images, dtype=torch.float64)
    sampler = sd64.sampler(num_steps=4)
    eps_fn = sd64.eps_fn(sd64.encode_prompt("a photo"), guidance_scale=3.0)
    xT, yT = sampler.invert(eps_fn, z0, z0)
    assert not torch.allclose(xT, z0)
    x0, y0 = sampler.sample(eps_fn, xT, yT)
    torch.testing.assert_close(x0, z0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(y0, z0, rtol=1e-9, atol=1e-9)
