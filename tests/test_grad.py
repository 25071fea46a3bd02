"""The gradient through the chain: three modes against each other and against gradcheck."""

import pytest
import torch

import doodl
from doodl.core.edict import eps_at

from .conftest import make_eps_fn, noise


def grads(sampler, eps_fn, mode, xT, yT, w, **kw):
    xT = xT.clone().requires_grad_(True)
    yT = yT.clone().requires_grad_(True)
    x0, y0 = doodl.sample_with_grad(sampler, eps_fn, xT, yT, mode=mode, **kw)
    loss = (w * x0).sum() + (x0 * y0).sum() + y0.square().sum()  # couples both outputs, nonlinear
    loss.backward()
    return xT.grad, yT.grad, (x0.detach(), y0.detach())


def rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("leapfrog", [True, False])
def test_modes_agree_float64(unet64, scheduler, leapfrog):
    """All three modes give one gradient to ~1e-8 relative in float64 (T = 10)."""
    eps_fn = make_eps_fn(unet64)
    sampler = doodl.EDICTSampler(scheduler, num_steps=10, leapfrog=leapfrog)
    xT, yT, w = noise(seed=1), noise(seed=2), noise(seed=3)
    gx, gy, out = grads(sampler, eps_fn, "naive", xT, yT, w)
    for mode in ("invert", "checkpoint"):
        gx_m, gy_m, out_m = grads(sampler, eps_fn, mode, xT, yT, w)
        torch.testing.assert_close(out_m, out, rtol=0, atol=0)  # identical forward
        assert rel(gx_m, gx) < 1e-8 and rel(gy_m, gy) < 1e-8, mode


def test_modes_agree_partial_chain(unet64, scheduler):
    eps_fn = make_eps_fn(unet64)
    sampler = doodl.EDICTSampler(scheduler, num_steps=20)
    xT, yT, w = noise(seed=4), noise(seed=4), noise(seed=5)
    gx, gy, _ = grads(sampler, eps_fn, "naive", xT, yT, w, start=7, stop=12)
    gx_i, gy_i, _ = grads(sampler, eps_fn, "invert", xT, yT, w, start=7, stop=12)
    assert rel(gx_i, gx) < 1e-10 and rel(gy_i, gy) < 1e-10


def test_gradcheck_two_steps(unet64, scheduler):
    """torch.autograd.gradcheck of the invert and checkpoint Functions on a 2-step chain."""
    eps_fn = make_eps_fn(unet64)
    sampler = doodl.EDICTSampler(scheduler, num_steps=2)
    xT = noise((1, 4, 4, 4), seed=6).requires_grad_(True)
    yT = noise((1, 4, 4, 4), seed=7).requires_grad_(True)
    for mode in ("invert", "checkpoint"):
        f = lambda x, y: doodl.sample_with_grad(sampler, eps_fn, x, y, mode=mode)
        assert torch.autograd.gradcheck(f, (xT, yT), eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=True)


def test_gradcheck_full_jacobian_cheap_eps(scheduler):
    """Full (not fast-mode) gradcheck with a cheap nonlinear eps on 3 steps."""
    torch.manual_seed(0)
    W = torch.randn(8, 8, dtype=torch.float64) / 3
    eps_fn = lambda v, t: torch.tanh(v @ W) * (1 + t / 1000)
    sampler = doodl.EDICTSampler(scheduler, num_steps=3)
    xT = noise((2, 8), seed=1).requires_grad_(True)
    yT = noise((2, 8), seed=2).requires_grad_(True)
    for mode in ("invert", "checkpoint", "naive"):
        f = lambda x, y: doodl.sample_with_grad(sampler, eps_fn, x, y, mode=mode)
        assert torch.autograd.gradcheck(f, (xT, yT))


def test_float32_agreement(unet32, scheduler):
    """float32: checkpoint matches naive to rounding; invert carries the inversion drift."""
    eps_fn = make_eps_fn(unet32)
    sampler = doodl.EDICTSampler(scheduler, num_steps=20)
    xT, yT, w = (noise(dtype=torch.float32, seed=s) for s in (1, 1, 2))
    gx, _, _ = grads(sampler, eps_fn, "naive", xT, yT, w)
    assert rel(grads(sampler, eps_fn, "checkpoint", xT, yT, w)[0], gx) < 1e-4
    assert rel(grads(sampler, eps_fn, "invert", xT, yT, w)[0], gx) < 1e-2


@pytest.mark.parametrize("mode", ["invert", "checkpoint"])
def test_unet_calls_per_step(unet32, scheduler, mode):
    """Forward: 2 eps calls per step. Backward: 2 per step, shared by inverse and VJP."""
    eps_fn = make_eps_fn(unet32)
    T = 6
    sampler = doodl.EDICTSampler(scheduler, num_steps=T)
    xT = noise(dtype=torch.float32).requires_grad_(True)
    x0, y0 = doodl.sample_with_grad(sampler, eps_fn, xT, xT, mode=mode)
    assert eps_fn.calls == 2 * T
    (x0.sum() + y0.sum()).backward()
    assert eps_fn.calls == 4 * T


@pytest.mark.parametrize("mode", ["invert", "checkpoint"])
def test_no_weight_gradients(scheduler, mode):
    """Even a UNet left trainable gets no .grad: only latents are differentiated."""
    from doodl.models.tiny import tiny_unet

    unet = tiny_unet().requires_grad_(True)
    eps_fn = make_eps_fn(unet)
    sampler = doodl.EDICTSampler(scheduler, num_steps=2)
    xT = noise(dtype=torch.float32).requires_grad_(True)
    x0, y0 = doodl.sample_with_grad(sampler, eps_fn, xT, xT.detach().clone(), mode=mode)
    x0.sum().backward()
    assert xT.grad is not None and xT.grad.abs().sum() > 0
    assert all(p.grad is None for p in unet.parameters())


def saved_bytes(sampler, eps_fn, mode, xT):
    """Bytes autograd keeps between forward and backward (graph + Function context)."""
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        x0, y0 = doodl.sample_with_grad(sampler, eps_fn, xT, xT.detach().clone(), mode=mode)
    return total[0]


def test_memory_constant_in_steps(unet32, scheduler):
    """invert keeps only the final pair whatever T; checkpoint 2 latents a step; naive the graph."""
    eps_fn = make_eps_fn(unet32)
    xT = noise(dtype=torch.float32).requires_grad_(True)
    latent = xT.numel() * xT.element_size()
    by_T = {T: {m: saved_bytes(doodl.EDICTSampler(scheduler, num_steps=T), eps_fn, m, xT)
                for m in ("invert", "checkpoint", "naive")} for T in (2, 6)}
    assert by_T[2]["invert"] == by_T[6]["invert"] == 2 * latent
    assert by_T[6]["naive"] > 2.5 * by_T[2]["naive"] > 100 * latent


def test_bfloat16_unet_matches_naive(scheduler):
    """bfloat16 UNet, float32 latents: each VJP gets the cotangent naive's autograd gives the UNet
    (b * g, rounded to bf16 alike), so the constant-memory gradients agree with naive's to float32
    rounding, not to bf16 rounding (3e-2 apart at T = 4 when the cotangent was scaled after)."""
    from doodl.models.tiny import tiny_unet

    unet_eps = make_eps_fn(tiny_unet().to(torch.bfloat16))
    eps_fn = lambda latents, t: unet_eps(latents.to(torch.bfloat16), t)
    sampler = doodl.EDICTSampler(scheduler, num_steps=4)
    xT, yT, w = (noise(dtype=torch.float32, seed=s) for s in (1, 2, 3))
    gx, gy, _ = grads(sampler, eps_fn, "naive", xT, yT, w)
    for mode in ("invert", "checkpoint", "auto"):
        gx_m, gy_m, _ = grads(sampler, eps_fn, mode, xT, yT, w)
        assert rel(gx_m, gx) < 1e-5 and rel(gy_m, gy) < 1e-5, mode
