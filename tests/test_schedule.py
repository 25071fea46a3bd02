import pytest
import torch

from doodl.core.schedule import ddim_schedule, schedule_from_scheduler

from .conftest import noise


@pytest.mark.parametrize("num_steps", [1, 7, 50])
def test_ddim_step_matches_diffusers(scheduler, num_steps):
    """a*x + b*eps equals diffusers' DDIMScheduler.step with eta=0, at every timestep."""
    steps = schedule_from_scheduler(scheduler, num_steps)
    assert [s.t for s in steps] == scheduler.timesteps.tolist()
    x, eps = noise(seed=1), noise(seed=2)
    # diffusers keeps alphas_cumprod in float32: promote it so that its step runs in float64
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.double()
    scheduler.final_alpha_cumprod = scheduler.final_alpha_cumprod.double()
    for s in steps:
        ref = scheduler.step(eps, s.t, x, eta=0.0).prev_sample
        torch.testing.assert_close(s.a * x + s.b * eps, ref, rtol=1e-12, atol=1e-12)
    assert steps[-1].abar_p == pytest.approx(float(scheduler.final_alpha_cumprod))


def test_coefficients_come_from_the_scheduler(scheduler):
    """Nothing is hard-coded: another beta schedule gives other coefficients."""
    from diffusers import DDIMScheduler

    other = DDIMScheduler(beta_schedule="linear", beta_start=1e-4, beta_end=0.02, clip_sample=False)
    a1 = [s.a for s in schedule_from_scheduler(scheduler, 10)]
    a2 = [s.a for s in schedule_from_scheduler(other, 10)]
    assert a1 != a2


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, 1001])
def test_bad_num_steps(scheduler, bad):
    with pytest.raises(ValueError, match="num_steps"):
        schedule_from_scheduler(scheduler, bad)


def test_bad_timesteps():
    abar = torch.linspace(0.99, 0.01, 100)
    with pytest.raises(ValueError, match="decrease"):
        ddim_schedule(abar, [10, 20], 1.0)
    with pytest.raises(ValueError, match=r"\[0, 100\)"):
        ddim_schedule(abar, [100, 20], 1.0)
    with pytest.raises(ValueError, match="empty"):
        ddim_schedule(abar, [], 1.0)


def test_not_a_scheduler():
    with pytest.raises(ValueError, match="diffusers scheduler"):
        schedule_from_scheduler(object(), 10)
