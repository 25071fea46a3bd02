"""decode / encode: scaling factor, [-1, 1] -> [0, 1], gradients, checkpointing; noise and shapes."""

import pytest
import torch

from doodl.models import StableDiffusion

from .helpers import CountCalls, latents


def test_decode_is_the_vae_mapped_to_unit_range(sd64):
    z = latents(sd64, batch=2)
    raw = sd64.vae.decode(z / sd64.vae.config.scaling_factor).sample
    torch.testing.assert_close(sd64.decode(z), (raw + 1) / 2, rtol=0, atol=0)


def test_encode_is_the_posterior_mean_times_scaling_factor(sd64):
    images = torch.rand(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    mean = sd64.vae.encode(images * 2 - 1).latent_dist.mean
    z = sd64.encode(images, dtype=torch.float64)
    torch.testing.assert_close(z, mean * sd64.scaling_factor, rtol=0, atol=0)
    assert sd64.encode(images).dtype == torch.float32


def test_gradient_reaches_latents_and_no_weight(sd64):
    z = latents(sd64).requires_grad_(True)
    images = sd64.decode(z)
    assert images.min() < 0 or images.max() > 1  # random weights: out-of-range pixels exist
    images.square().mean().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    modules = [sd64.unet, sd64.vae, *sd64.text_encoders]
    assert all(p.grad is None for m in modules for p in m.parameters())


def test_straight_mapping_keeps_gradient_outside_unit_range(sd64):
    """No hard clamp: pixels outside [0, 1] still pass gradient, with or without 'straight'."""
    z = latents(sd64).requires_grad_(True)
    weights = torch.randn(1, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (g_none,) = torch.autograd.grad((sd64.decode(z) * weights).sum(), z)
    images = sd64.decode(z, clamp="straight")
    assert images.min() >= 0 and images.max() <= 1
    (g_straight,) = torch.autograd.grad((images * weights).sum(), z)
    torch.testing.assert_close(g_straight, g_none, rtol=0, atol=0)
    (g_hard,) = torch.autograd.grad((sd64.decode(z).clamp(0, 1) * weights).sum(), z)
    assert not torch.allclose(g_hard, g_none)  # a hard clamp would have changed it
    with pytest.raises(ValueError, match="clamp"):
        sd64.decode(z, clamp="hard")


def test_checkpointed_decode_matches(sd_folder, sd64):
    ckpt = StableDiffusion(sd_folder, dtype="float64", device="cpu", checkpoint_vae=True)
    z = latents(sd64, batch=2)
    outs, runs = [], []
    for backend in (sd64, ckpt):
        leaf = z.clone().requires_grad_(True)
        with CountCalls(backend.vae.decoder) as calls:
            images = backend.decode(leaf)
            (g,) = torch.autograd.grad(images.sin().sum(), leaf)
        outs.append((images.detach(), g))
        runs.append(len(calls.batches))
    assert runs == [1, 2]  # the checkpointed decoder is recomputed in backward
    torch.testing.assert_close(outs[1][0], outs[0][0], rtol=0, atol=0)
    torch.testing.assert_close(outs[1][1], outs[0][1], rtol=1e-12, atol=1e-12)


def test_initial_noise_is_seeded(sd):
    a = sd.initial_noise(2, 16, 24, generator=7)
    b = sd.initial_noise(2, 16, 24, generator=torch.Generator().manual_seed(7))
    assert a.shape == (2, 4, 8, 12) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, sd.initial_noise(2, 16, 24, generator=8))
    assert sd.initial_noise(1, 16, 16, generator=7, dtype=torch.float64).dtype == torch.float64
    with pytest.raises(ValueError, match="generator"):
        sd.initial_noise(1, 16, 16, generator="seed")


def test_shape_and_range_errors(sd):
    with pytest.raises(ValueError, match="multiples of 2"):
        sd.latent_shape(15, 16)
    with pytest.raises(ValueError, match="batch must be a positive int"):
        sd.latent_shape(16, 16, 0)
    with pytest.raises(ValueError, match=r"\[0, 1\].*255"):
        sd.encode(torch.full((1, 3, 16, 16), 255.0))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        sd.encode(torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match="multiples of 2"):
        sd.encode(torch.rand(1, 3, 15, 16))
    with pytest.raises(ValueError, match="channels"):
        sd.decode(torch.zeros(1, 3, 8, 8))
