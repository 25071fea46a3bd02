"""One-step guidance baseline (SPEC.md section 7)."""

import math

import torch

import doodl
from doodl.core.onestep import guided_eps, one_step_guided_sample

from .conftest import make_eps_fn, noise


def test_guided_eps_analytic():
    """Linear eps = c*l makes s = k*l; for loss 0.5||s - m||^2, g = k*(k*l - m)."""
    c, abar, t = 0.3, 0.4, 10
    l, m = noise(seed=1), noise(seed=2)
    s1 = math.sqrt(1 - abar)
    k = (1 - s1 * c) / math.sqrt(abar) * s1 + (1 - s1)
    eps_hat, loss = guided_eps(lambda v, t: c * v, lambda s: 0.5 * (s - m).square().flatten(1).sum(1), l, t, abar)
    torch.testing.assert_close(eps_hat, c * l + s1 * k * (k * l - m), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(loss, 0.5 * (k * l - m).square().flatten(1).sum(1))


def test_no_loss_is_plain_ddim(unet64, scheduler):
    eps_fn = make_eps_fn(unet64)
    sampler = doodl.EDICTSampler(scheduler, num_steps=5)
    xT = noise(seed=3)
    out = one_step_guided_sample(sampler, eps_fn, None, xT)
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.double()
    scheduler.final_alpha_cumprod = scheduler.final_alpha_cumprod.double()
    ref = xT
    for t in scheduler.timesteps:
        ref = scheduler.step(eps_fn(ref, int(t)), int(t), ref, eta=0.0).prev_sample
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def test_guidance_lowers_the_loss(unet32, scheduler):
    eps_fn = make_eps_fn(unet32)
    sampler = doodl.EDICTSampler(scheduler, num_steps=10)
    xT = noise(dtype=torch.float32, seed=4)
    loss = lambda s: 50.0 * s.mean(dim=(1, 2, 3))  # push the mean latent down
    plain = one_step_guided_sample(sampler, eps_fn, None, xT)
    seen = []
    guided = one_step_guided_sample(sampler, eps_fn, loss, xT, callback=lambda i, x, l: seen.append(i))
    assert guided.mean() < plain.mean() - 0.05
    assert seen == list(range(10)) and not guided.requires_grad
