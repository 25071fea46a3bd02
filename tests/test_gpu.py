"""What only CUDA can show: dtype and device placement of the chain and its gradient, peak GPU
memory flat in T for the constant-memory modes and within the budget for mode="auto", and the
float16 VAE upcast of the backend. Skipped without CUDA (tests/conftest.py)."""

import pytest
import torch

import doodl
from doodl.models.tiny import sd_scheduler, tiny_unet

pytestmark = pytest.mark.gpu


def cuda_eps(dtype, side=32):
    unet = tiny_unet(sample_size=side).to("cuda", dtype)
    ctx = torch.randn(2, 8, 32, generator=torch.Generator().manual_seed(0)).to("cuda", dtype)

    def eps_fn(latents, t):
        e_u, e_c = unet(torch.cat([latents, latents]).to(dtype), t, encoder_hidden_states=ctx).sample.chunk(2)
        return e_u + 7.5 * (e_c - e_u)
    return eps_fn


def start(side=32):
    z = torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(1)).to("cuda")
    return z.clone().requires_grad_(True), z.clone().requires_grad_(True)


def peak_of(fn):
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


@pytest.mark.parametrize("net_dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("mode", ["invert", "checkpoint", "auto"])
def test_dtype_and_device(net_dtype, mode):
    """Latents stay float32 on cuda through a low-precision UNet; the gradient lands there too."""
    sampler = doodl.EDICTSampler(sd_scheduler(), num_steps=4)
    x, y = start()
    x0, y0 = doodl.sample_with_grad(sampler, cuda_eps(net_dtype), x, y, mode=mode)
    assert x0.device.type == "cuda" and x0.dtype == torch.float32 and y0.dtype == torch.float32
    (x0.square().mean() + y0.mean()).backward()
    assert x.grad.device.type == "cuda" and x.grad.dtype == torch.float32 and bool(torch.isfinite(x.grad).all())


@pytest.mark.parametrize("mode", ["invert", "checkpoint"])
def test_memory_flat_in_T(mode):
    eps_fn = cuda_eps(torch.float32)

    def one(T):
        sampler = doodl.EDICTSampler(sd_scheduler(), num_steps=T)
        x, y = start()

        def run():
            x0, y0 = doodl.sample_with_grad(sampler, eps_fn, x, y, mode=mode)
            (x0.square().mean() + y0.mean()).backward()
        return peak_of(run)

    one(2)  # warm-up (cuDNN workspaces)
    p4, p32 = one(4), one(32)
    assert p32 <= 1.1 * p4, (p4, p32)


def test_auto_peak_within_budget_and_exact():
    eps_fn = cuda_eps(torch.float32)
    sampler = doodl.EDICTSampler(sd_scheduler(), num_steps=12)

    def run(mode, budget=None, out=None):
        x, y = start()

        def go():
            kw = {} if budget is None else {"memory_budget": budget}
            x0, y0 = doodl.sample_with_grad(sampler, eps_fn, x, y, mode=mode, **kw)
            (x0.square().mean() + y0.mean()).backward()
        peak = peak_of(go)
        return peak, torch.cat([x.grad.flatten(), y.grad.flatten()])

    run("checkpoint")  # warm-up
    naive_peak, g_naive = run("naive")
    for frac in (0.4, 0.7, 1.2):
        budget = int(frac * naive_peak)
        peak, g = run("auto", budget)
        assert peak <= budget, (frac, peak, budget)
        assert float((g - g_naive).norm() / g_naive.norm()) < 1e-4


def test_fp16_vae_upcast(tmp_path):
    """float16 backend: UNet in float16, the VAE (force_upcast) in float32, decoded images finite."""
    from doodl.models import StableDiffusion
    from doodl.models.tiny import save_tiny_pipeline

    folder = save_tiny_pipeline(tmp_path / "sdxl", kind="sdxl")
    model = StableDiffusion(folder, dtype="float16", device="cuda")
    assert model.unet.dtype == torch.float16 and model.vae.dtype == torch.float32
    assert model.vae.config.force_upcast
    z = 40 * torch.randn(1, 4, 16, 16, device="cuda")  # large latents would overflow a float16 decoder
    img = model.decode(z)
    assert img.device.type == "cuda" and bool(torch.isfinite(img).all())
