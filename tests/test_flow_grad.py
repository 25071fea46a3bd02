"""Exact gradients and inverses through flow-matching chains of tiny random SD3 and FLUX
transformers in float64 (SPEC.md sections 5 and 9): round trip, the gradient modes, memory."""

import pytest
import torch

import doodl
from doodl.core.grad import MODES
from doodl.models import SD3, Flux
from doodl.models.flow_loading import FlowParts
from doodl.models.tiny_flow import tiny_flow_pipeline

from .test_grad import grads, rel, saved_bytes

KINDS = {"sd3": (SD3, 5.0), "flux-dev": (Flux, 3.5)}


def backend(kind):
    pipe = tiny_flow_pipeline(kind)
    encoders = [pipe.text_encoder, pipe.text_encoder_2] + ([pipe.text_encoder_3] if kind == "sd3" else [])
    tokenizers = [pipe.tokenizer, pipe.tokenizer_2] + ([pipe.tokenizer_3] if kind == "sd3" else [])
    parts = FlowParts(pipe.transformer.double(), pipe.vae.double(), pipe.scheduler, [e.double() for e in encoders],
                      tokenizers)
    cls, scale = KINDS[kind]
    model = cls.from_components(parts, max_sequence_length=8)
    return model, model.eps_fn(model.encode_prompt("a cat"), scale)


@pytest.fixture(scope="module", params=list(KINDS))
def flow(request):
    return backend(request.param)


def start(model, seed, dtype=torch.float64):
    return model.initial_noise(1, 16, 16, generator=seed, dtype=dtype)


def test_round_trip_20_steps(flow):
    model, v_fn = flow
    sampler = model.sampler(20, height=16, width=16)
    x = start(model, 0)
    x0, y0 = sampler.sample(v_fn, x, x)
    assert float((x0 - x).norm()) > 0.1 * float(x.norm())
    xr, yr = sampler.invert(v_fn, x0, y0)
    assert rel(xr, x) < 1e-10 and rel(yr, x) < 1e-10


@pytest.mark.parametrize("leapfrog", [True, False])
def test_gradient_modes_agree(flow, leapfrog):
    model, v_fn = flow
    sampler = model.sampler(8, height=16, width=16, leapfrog=leapfrog)
    xT, yT, w = start(model, 1), start(model, 2), start(model, 3)
    gx, gy, out = grads(sampler, v_fn, "naive", xT, yT, w)
    assert float(gx.norm()) > 0
    for mode in [m for m in MODES if m != "naive"]:
        gx_m, gy_m, out_m = grads(sampler, v_fn, mode, xT, yT, w)
        # bitwise: the very same forward (denoise_step = mix(coupled_update) on the same inputs; only autograd recording differs)
        torch.testing.assert_close(out_m, out, rtol=0, atol=0)
        assert rel(gx_m, gx) < 1e-8 and rel(gy_m, gy) < 1e-8, mode


def test_partial_chain(flow):
    model, v_fn = flow
    sampler = model.sampler(12, height=16, width=16)
    xT, w = start(model, 4), start(model, 5)
    gx, gy, _ = grads(sampler, v_fn, "naive", xT, xT, w, start=3, stop=9)
    gx_i, gy_i, _ = grads(sampler, v_fn, "invert", xT, xT, w, start=3, stop=9)
    assert rel(gx_i, gx) < 1e-8 and rel(gy_i, gy) < 1e-8


def test_saved_memory_constant_in_steps(flow):
    """invert keeps the final pair whatever T (checkpoint no graph either); naive the whole graph."""
    model, v_fn = flow
    xT = start(model, 6).requires_grad_(True)
    latent = xT.numel() * xT.element_size()
    by_T = {T: {m: saved_bytes(model.sampler(T, height=16, width=16), v_fn, m, xT) for m in ("invert", "checkpoint", "naive")}
            for T in (2, 6)}
    assert by_T[2]["invert"] == by_T[6]["invert"] == 2 * latent
    assert by_T[2]["checkpoint"] == by_T[6]["checkpoint"] == 2 * latent
    assert by_T[6]["naive"] > 2.5 * by_T[2]["naive"] > 100 * latent


def test_one_step_baseline_lowers_the_loss(flow):
    from doodl.core.onestep import one_step_guided_sample

    model, v_fn = flow
    sampler = model.sampler(6, height=16, width=16)
    xT = start(model, 7)
    loss = lambda s: 50.0 * s.mean(dim=(1, 2, 3))
    plain = one_step_guided_sample(sampler, v_fn, None, xT)
    guided = one_step_guided_sample(sampler, v_fn, loss, xT)
    assert guided.mean() < plain.mean() - 0.05
