"""Flow backends (SD3, FLUX) inside the core: chain -> decode -> loss -> exact gradient at x_T,
and a real image's inversion round trip, on tiny random pipelines loaded from disk (float64)."""

import pytest
import torch

from doodl.models import SD3, Flux
from doodl.models.tiny_flow import save_tiny_flow_pipeline

from .helpers import quiet
from .test_end_to_end import chain_loss

SCALES = {"sd3.5": (SD3, 4.5), "flux-dev": (Flux, 3.5), "flux-schnell": (Flux, None)}


@pytest.fixture(scope="module", params=list(SCALES))
def flow(request, tmp_path_factory):
    folder = quiet(save_tiny_flow_pipeline, tmp_path_factory.mktemp("e2e") / request.param, request.param)
    cls, scale = SCALES[request.param]
    return quiet(cls, folder, dtype="float64", device="cpu", max_sequence_length=8), scale


def test_invert_gradient_equals_naive(flow):
    backend, scale = flow
    sampler = backend.sampler(num_steps=3, height=16, width=16)
    eps_fn = backend.eps_fn(backend.encode_prompt("a cat"), scale)
    x = backend.initial_noise(1, 16, 16, generator=0, dtype=torch.float64)
    loss, gx, gy = chain_loss(backend, sampler, eps_fn, x, "invert")
    ref_loss, ref_gx, ref_gy = chain_loss(backend, sampler, eps_fn, x, "naive")
    assert gx.abs().sum() > 0 and gy.abs().sum() > 0
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx, ref_gx, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(gy, ref_gy, rtol=1e-7, atol=1e-9)
    modules = [backend.transformer, backend.vae, *backend.text_encoders]
    assert all(p.grad is None for m in modules for p in m.parameters())


def test_real_image_inversion_round_trip(flow):
    backend, scale = flow
    images = torch.rand(1, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    z0 = backend.encode(images, dtype=torch.float64)
    sampler = backend.sampler(num_steps=4, height=16, width=16)
    eps_fn = backend.eps_fn(backend.encode_prompt("a photo"), scale)
    xT, yT = sampler.invert(eps_fn, z0, z0)
    assert not torch.allclose(xT, z0)
    x0, y0 = sampler.sample(eps_fn, xT, yT)
    torch.testing.assert_close(x0, z0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(y0, z0, rtol=1e-9, atol=1e-9)
