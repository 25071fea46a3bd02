"""EDICT steps and their exact inverses (SPEC.md section 3)."""

import pytest
import torch

import doodl
from doodl.core.edict import coupled_update, denoise_step, mix, noise_step, unmix

from .conftest import make_eps_fn, noise


def rel(a, b):
    return float((a - b).norm() / b.norm())


def test_unmix_inverts_mix():
    x, y = noise(seed=1), noise(seed=2)
    for p in (0.9, 0.93, 0.97, 1.0):
        x1, y1 = unmix(*mix(x, y, p), p)
        assert rel(x1, x) < 1e-14 and rel(y1, y) < 1e-14


def test_mix_weights():
    x, y = torch.ones(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    x2, y2 = mix(x, y, 0.93)
    torch.testing.assert_close(x2, torch.full_like(x, 0.93))
    torch.testing.assert_close(y2, torch.full_like(x, 0.07 * 0.93))


@pytest.mark.parametrize("swap", [False, True])
def test_step_inverse(unet64, swap):
    eps_fn = make_eps_fn(unet64)
    x, y = noise(seed=1), noise(seed=2)
    x2, y2 = denoise_step(eps_fn, x, y, 500, 0.9, -0.3, 0.93, swap)
    xb, yb = noise_step(eps_fn, x2, y2, 500, 0.9, -0.3, 0.93, swap)
    assert rel(xb, x) < 1e-13 and rel(yb, y) < 1e-13


def test_leapfrog_order(unet64):
    """Even steps update x from y first; odd steps (leapfrog) update y from x first."""
    eps_fn = make_eps_fn(unet64)
    x, y = noise(seed=1), noise(seed=2)
    a, b, t = 0.9, -0.3, 700
    e = lambda v: eps_fn(v, t)
    x1 = a * x + b * e(y)
    torch.testing.assert_close(coupled_update(eps_fn, x, y, t, a, b, False), (x1, a * y + b * e(x1)))
    y1 = a * y + b * e(x)
    torch.testing.assert_close(coupled_update(eps_fn, x, y, t, a, b, True), (a * x + b * e(y1), y1))


def test_first_step_is_ddim(unet64, scheduler):
    """From x_T = y_T, the first half-step is exactly diffusers' DDIM step (eta = 0)."""
    eps_fn = make_eps_fn(unet64)
    sampler = doodl.EDICTSampler(scheduler, num_steps=10)
    s, xT = sampler.steps[0], noise()
    x1, _ = coupled_update(eps_fn, xT, xT, s.t, s.a, s.b, False)
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.double()
    ref = scheduler.step(eps_fn(xT, s.t), s.t, xT, eta=0.0).prev_sample
    torch.testing.assert_close(x1, ref, rtol=1e-12, atol=1e-12)


def test_round_trip_50_steps_float64(unet64, scheduler):
    """invert(sample(x)) == x to ~1e-10 relative at 50 steps in float64."""
    eps_fn = make_eps_fn(unet64)
    sampler = doodl.EDICTSampler(scheduler, num_steps=50, mix=0.93)
    xT, yT = noise(seed=3), noise(seed=3)
    x0, y0 = sampler.sample(eps_fn, xT, yT)
    assert rel(x0, xT) > 0.1  # the chain did something
    xb, yb = sampler.invert(eps_fn, x0, y0)
    assert rel(xb, xT) < 1e-10 and rel(yb, yT) < 1e-10


def test_partial_chain_round_trip_and_composition(unet64, scheduler):
    eps_fn = make_eps_fn(unet64)
    sampler = doodl.EDICTSampler(scheduler, num_steps=12)
    xT = noise(seed=4)
    xm, ym = sampler.sample(eps_fn, xT, xT, stop=5)
    full = sampler.sample(eps_fn, xT, xT)
    torch.testing.assert_close(sampler.sample(eps_fn, xm, ym, start=5), full, rtol=0, atol=0)
    xb, yb = sampler.invert(eps_fn, *full, start=5)
    assert rel(xb, xm) < 1e-11 and rel(yb, ym) < 1e-11


def test_sample_keeps_no_graph(unet32, scheduler):
    eps_fn = make_eps_fn(unet32)
    sampler = doodl.EDICTSampler(scheduler, num_steps=3)
    xT = noise(dtype=torch.float32).requires_grad_(True)
    x0, y0 = sampler.sample(eps_fn, xT, xT)
    assert not x0.requires_grad and x0.grad_fn is None


def test_float32_round_trip_drift_is_small(unet32, scheduler):
    """In float32 the 50-step round trip drifts; it stays far below the latents' scale."""
    eps_fn = make_eps_fn(unet32)
    sampler = doodl.EDICTSampler(scheduler, num_steps=50)
    xT = noise(dtype=torch.float32, seed=5)
    xb, _ = sampler.invert(eps_fn, *sampler.sample(eps_fn, xT, xT))
    assert rel(xb, xT) < 1e-3
