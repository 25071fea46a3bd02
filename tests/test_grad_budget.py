"""mode="auto": the memory-budgeted gradient. Exact at every budget, peak within it, cost between
naive's and checkpoint's (counted in eps evaluations)."""

import importlib.util
from pathlib import Path

import pytest
import torch

import doodl
from doodl.core.grad import default_budget, graph_bytes, graph_steps

from .conftest import make_eps_fn, noise

_spec = importlib.util.spec_from_file_location(
    "bench_memory", Path(__file__).resolve().parents[1] / "benchmarks" / "memory.py")
_memory = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_memory)
PeakMemory = _memory.PeakMemory

T = 6


def run(sampler, eps_fn, xT, yT, w, mode, budget=None):
    """Forward + backward of the chain; returns (grads, outputs, peak bytes, eps calls)."""
    xT = xT.clone().requires_grad_(True)
    yT = yT.clone().requires_grad_(True)
    eps_fn.calls = 0
    kw = {} if budget is None else {"memory_budget": int(budget)}
    with PeakMemory() as mem:
        x0, y0 = doodl.sample_with_grad(sampler, eps_fn, xT, yT, mode=mode, **kw)
        loss = (w * x0).sum() + (x0 * y0).sum()
        loss.backward()
        del x0, y0, loss
    return (xT.grad, yT.grad), mem.peak, eps_fn.calls


def rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def setting():
    from doodl.models.tiny import sd_scheduler, tiny_unet

    unet = tiny_unet().double()
    sampler = doodl.EDICTSampler(sd_scheduler(), num_steps=T)
    return sampler, make_eps_fn(unet), noise(seed=1), noise(seed=2), noise(seed=3)


def test_exact_and_within_budget_at_every_budget(setting):
    """From checkpoint's floor to above naive's peak: gradient = naive's (float64), peak <= budget,
    and the eps evaluations fall from checkpoint's 4T to naive's 2T as the budget grows."""
    sampler, eps_fn, xT, yT, w = setting
    g_naive, naive_peak, naive_calls = run(sampler, eps_fn, xT, yT, w, "naive")
    _, ckpt_peak, ckpt_calls = run(sampler, eps_fn, xT, yT, w, "checkpoint")
    assert naive_calls == 2 * T and ckpt_calls == 4 * T
    assert ckpt_peak < naive_peak / 2  # the setting discriminates
    calls_seen = []
    for frac in (0.3, 0.45, 0.6, 0.75, 0.9, 1.1):
        budget = frac * naive_peak
        g, peak, calls = run(sampler, eps_fn, xT, yT, w, "auto", budget)
        assert peak <= budget, (frac, peak, budget)
        for a, b in zip(g, g_naive):
            assert rel(a, b) < 1e-10, frac
        assert 2 * T <= calls <= 4 * T + 2
        calls_seen.append(calls)
    assert calls_seen == sorted(calls_seen, reverse=True)
    assert calls_seen[-1] == 2 * T  # the whole graph fits: naive's evaluations exactly
    assert len(set(calls_seen)) >= 4  # it degrades in steps, not all-or-nothing


def test_least_budget_and_below_it(setting):
    """The least budget (no step keeps its graph) holds its peak; one byte less is an error."""
    sampler, eps_fn, xT, yT, w = setting
    a, b = xT.clone().requires_grad_(True), yT.clone().requires_grad_(True)
    step_bytes = graph_bytes(sampler.denoise(eps_fn, a, b, 0), (a, b))
    latent = xT.numel() * xT.element_size()
    least = next(b for b in range(step_bytes, 3 * step_bytes, 64) if graph_steps(T, step_bytes, latent, b) == 0)
    g_naive, _, _ = run(sampler, eps_fn, xT, yT, w, "naive")
    g, peak, calls = run(sampler, eps_fn, xT, yT, w, "auto", least)
    assert calls == 4 * T + 2 and peak <= least  # step 0 measured, dropped, then all checkpointed
    assert rel(g[0], g_naive[0]) < 1e-10
    with pytest.raises(ValueError, match=f"memory_budget={least - 64} bytes is below .*mode='invert'"):
        doodl.sample_with_grad(sampler, eps_fn, xT.clone().requires_grad_(True), yT.clone().requires_grad_(True),
                               mode="auto", memory_budget=least - 64)


@pytest.mark.parametrize("bad", [0, -5, 1.5e9, True, "1GB"])
def test_bad_budget(setting, bad):
    sampler, eps_fn, xT, yT, _ = setting
    with pytest.raises(ValueError, match="memory_budget must be a positive int of bytes"):
        doodl.sample_with_grad(sampler, eps_fn, xT, yT, mode="auto", memory_budget=bad)


def test_budget_only_with_auto(setting):
    sampler, eps_fn, xT, yT, _ = setting
    with pytest.raises(ValueError, match="memory_budget is for mode='auto' only"):
        doodl.sample_with_grad(sampler, eps_fn, xT, yT, mode="checkpoint", memory_budget=10**9)


def test_partial_chain_and_default_budget(setting):
    """start/stop respected; no budget given: half the free memory, which holds this tiny graph."""
    sampler, eps_fn, xT, yT, w = setting
    assert default_budget(torch.device("cpu")) > 10**6
    for kw in ({"start": 2, "stop": 5}, {"start": 4}):
        gs = []
        for mode in ("naive", "auto"):
            a = xT.clone().requires_grad_(True)
            x0, y0 = doodl.sample_with_grad(sampler, eps_fn, a, yT, mode=mode, **kw)
            ((w * x0).sum() + y0.square().sum()).backward()
            gs.append(a.grad)
        assert rel(gs[1], gs[0]) < 1e-10


def test_float32_close_to_naive():
    """float32 tiny UNet, T = 20, a budget holding about half the graph: checkpoint-level agreement."""
    from doodl.models.tiny import sd_scheduler, tiny_unet

    eps_fn = make_eps_fn(tiny_unet())
    sampler = doodl.EDICTSampler(sd_scheduler(), num_steps=20)
    xT, w = noise(dtype=torch.float32, seed=4), noise(dtype=torch.float32, seed=5)
    g_naive, peak, _ = run(sampler, eps_fn, xT, xT, w, "naive")
    g_auto, peak_auto, calls = run(sampler, eps_fn, xT, xT, w, "auto", peak // 2)
    assert 40 < calls < 80 and peak_auto <= peak // 2
    assert rel(g_auto[0], g_naive[0]) < 1e-4 and rel(g_auto[1], g_naive[1]) < 1e-4


def test_graph_steps_model():
    """K grows with the budget, is n when all fits, -1 when not even the recompute fits."""
    n, S, L = 50, 1000, 10
    ks = [graph_steps(n, S, L, b) for b in range(0, 60_000, 500)]
    assert ks == sorted(ks) and ks[0] == -1 and ks[-1] == n
    assert graph_steps(n, S, L, n * S + 4 * L + S // 4) == n
    assert graph_steps(n, S, L, n * S + 4 * L + S // 4 - 1) < n
    k = graph_steps(n, S, L, 20_000)
    need = lambda k: k * S + 2 * L * (n - k) + 4 * L + S + S // 4
    assert need(k) <= 20_000 < need(k + 1)
    assert graph_steps(n, S, L, need(0)) == 0 and graph_steps(n, S, L, need(0) - 1) == -1
