"""The flow-matching Euler step in the core (SPEC.md section 9): coefficients from diffusers'
FlowMatchEulerDiscreteScheduler after set_timesteps, against its own step; inverses; refusals."""

import math

import pytest
import torch

import doodl
from doodl.core.schedule import FlowStep, flow_schedule, schedule_from_scheduler, scheduler_kind
from doodl.models.tiny_flow import flow_scheduler

from .conftest import noise


def euler_reference(scheduler, steps, x, v):
    """diffusers' own step at each of ``steps``' timesteps (set_timesteps already called)."""
    out = []
    for s in steps:
        out.append(scheduler.step(v, torch.tensor(s.t, dtype=torch.float32), x).prev_sample)
    return out


@pytest.mark.parametrize("kind,num_steps,mu", [("sd3", 1, None), ("sd3", 28, None), ("flux-dev", 4, 0.4),
                                               ("flux-dev", 20, 1.1), ("flux-schnell", 4, None)])
def test_euler_step_matches_diffusers(kind, num_steps, mu):
    """x + b*v equals FlowMatchEulerDiscreteScheduler.step at every timestep (its step rounds the
    sample to float32, hence the tolerance), and the timesteps are the scheduler's."""
    scheduler = flow_scheduler(kind)
    steps = schedule_from_scheduler(scheduler, num_steps, mu=mu)
    assert [s.t for s in steps] == pytest.approx(scheduler.timesteps.tolist(), abs=0)
    assert steps[0].sigma == pytest.approx(float(scheduler.sigmas[0])) and steps[-1].sigma_next == 0.0
    assert all(isinstance(s, FlowStep) and s.a == 1.0 and s.b < 0 for s in steps)
    x, v = noise(seed=1), noise(seed=2)
    for s, ref in zip(steps, euler_reference(scheduler, steps, x, v)):
        torch.testing.assert_close(s.a * x + s.b * v, ref, rtol=1e-6, atol=1e-6)


def test_shift_and_mu_come_from_the_scheduler():
    """Nothing hard-coded: the shift of the config and mu move the sigmas as diffusers moves them."""
    sd3 = [s.sigma for s in schedule_from_scheduler(flow_scheduler("sd3"), 10)]
    plain = [s.sigma for s in schedule_from_scheduler(flow_scheduler("flux-schnell"), 10)]
    assert sd3 != plain and sd3[1] > plain[1]  # shift 3 keeps more noise early
    lo = [s.sigma for s in schedule_from_scheduler(flow_scheduler("flux-dev"), 10, mu=0.5)]
    hi = [s.sigma for s in schedule_from_scheduler(flow_scheduler("flux-dev"), 10, mu=1.15)]
    assert all(h > l for h, l in zip(hi[1:], lo[1:]))
    want = flow_scheduler("flux-dev")
    want.set_timesteps(10, mu=1.15)
    assert hi == pytest.approx(want.sigmas[:-1].tolist(), abs=0)


def test_custom_sigmas_as_the_flux_pipeline_passes_them():
    import numpy as np

    scheduler = flow_scheduler("flux-dev")
    sigmas = np.linspace(1.0, 1 / 4, 4).tolist()
    steps = schedule_from_scheduler(scheduler, 4, mu=0.7, sigmas=sigmas)
    ref = flow_scheduler("flux-dev")
    ref.set_timesteps(sigmas=sigmas, mu=0.7)
    assert [s.sigma for s in steps] == pytest.approx(ref.sigmas[:-1].tolist(), abs=0)


def test_round_trip_flow_chain_float64():
    """invert(sample(x)) is x to rounding over 20 Euler steps with a nonlinear velocity."""
    torch.manual_seed(0)
    W = torch.randn(8, 8, dtype=torch.float64) / 3
    v_fn = lambda x, t: torch.tanh(x @ W) * (1 + t / 1000) - x
    sampler = doodl.EDICTSampler(flow_scheduler("sd3"), num_steps=20)
    assert sampler.kind == "flow"
    x = noise((2, 8), seed=3)
    x0, y0 = sampler.sample(v_fn, x, x)
    assert (x0 - x).norm() > 0.1 * x.norm()
    xr, yr = sampler.invert(v_fn, x0, y0)
    assert float((xr - x).norm() / x.norm()) < 1e-12 and float((yr - x).norm() / x.norm()) < 1e-12
    xp, yp = sampler.invert(v_fn, *sampler.sample(v_fn, x, x, start=5, stop=13), start=5, stop=13)
    assert float((xp - x).norm() / x.norm()) < 1e-12


def test_gradcheck_flow_chain():
    """gradcheck of the constant-memory Functions on a 3-step flow chain with a cheap velocity."""
    torch.manual_seed(1)
    W = torch.randn(6, 6, dtype=torch.float64) / 3
    v_fn = lambda x, t: torch.sin(x @ W) * (t / 1000)
    sampler = doodl.EDICTSampler(flow_scheduler("flux-dev"), num_steps=3, mu=0.8)
    xT, yT = noise((2, 6), seed=1).requires_grad_(True), noise((2, 6), seed=2).requires_grad_(True)
    for mode in ("invert", "checkpoint", "naive"):
        assert torch.autograd.gradcheck(lambda x, y: doodl.sample_with_grad(sampler, v_fn, x, y, mode=mode), (xT, yT))


def test_one_step_baseline_flow():
    """Without a loss: plain Euler (diffusers' step); with one: v_hat = v + sigma * d loss(x - sigma*v)/dx."""
    from doodl.core.onestep import guided_velocity, one_step_guided_sample

    scheduler = flow_scheduler("sd3")
    sampler = doodl.EDICTSampler(scheduler, num_steps=5)
    c = 0.3
    v_fn = lambda x, t: c * x
    xT = noise(seed=4)
    out = one_step_guided_sample(sampler, v_fn, None, xT)
    ref = xT
    for t in scheduler.timesteps:
        ref = scheduler.step(v_fn(ref, t), t, ref).prev_sample
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    m, sigma = noise(seed=5), 0.6
    k = 1 - sigma * c  # x0_hat = k * l
    v_hat, loss = guided_velocity(v_fn, lambda s: 0.5 * (s - m).square().flatten(1).sum(1), xT, 400.0, sigma)
    torch.testing.assert_close(v_hat, c * xT + sigma * k * (k * xT - m), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(loss, 0.5 * (k * xT - m).square().flatten(1).sum(1))


def test_unsupported_schedulers_are_refused():
    from diffusers import FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler

    for bad in (FlowMatchHeunDiscreteScheduler(), object()):
        with pytest.raises(ValueError, match="FlowMatchEulerDiscreteScheduler") as err:
            doodl.EDICTSampler(bad, num_steps=4)
        assert "DDIMScheduler" in str(err.value) and "diffusers scheduler" in str(err.value)
    stochastic = FlowMatchEulerDiscreteScheduler(stochastic_sampling=True)
    with pytest.raises(ValueError, match="stochastic_sampling=False"):
        scheduler_kind(stochastic)


def test_flow_input_errors():
    from diffusers import DDIMScheduler

    with pytest.raises(ValueError, match="pass mu"):
        doodl.EDICTSampler(flow_scheduler("flux-dev"), num_steps=4)
    with pytest.raises(ValueError, match="mu must be a finite number"):
        doodl.EDICTSampler(flow_scheduler("flux-dev"), num_steps=4, mu=math.nan)
    with pytest.raises(ValueError, match="flow-matching schedule"):
        doodl.EDICTSampler(DDIMScheduler(), num_steps=4, mu=0.5)
    with pytest.raises(ValueError, match="num_steps=4"):
        doodl.EDICTSampler(flow_scheduler("sd3"), num_steps=4, sigmas=[1.0, 0.5])
    with pytest.raises(ValueError, match="decrease strictly"):
        flow_schedule([1.0, 0.5, 0.5, 0.0], [1000.0, 500.0, 500.0])
    with pytest.raises(ValueError, match="one sigma more"):
        flow_schedule([1.0, 0.5], [1000.0, 500.0])
    ddim = doodl.EDICTSampler(DDIMScheduler(), num_steps=3).steps
    with pytest.raises(ValueError, match="all StepCoefficients"):
        doodl.EDICTSampler.from_steps([*ddim, FlowStep(1.0, 1.0, -0.1, 0.1, 0.0)])
