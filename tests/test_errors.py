"""Bad input to the public API gets a ValueError that names the argument."""

import pytest
import torch

import doodl

from .conftest import noise


def eps_fn(v, t):
    return 0.1 * v


@pytest.fixture
def sampler(scheduler):
    return doodl.EDICTSampler(scheduler, num_steps=4)


@pytest.mark.parametrize("mix", [0.0, -0.1, 1.5, float("nan")])
def test_bad_mix(scheduler, mix):
    with pytest.raises(ValueError, match="mix"):
        doodl.EDICTSampler(scheduler, num_steps=4, mix=mix)


@pytest.mark.parametrize("steps", [0, -1])
def test_bad_steps(scheduler, steps):
    with pytest.raises(ValueError, match="num_steps"):
        doodl.EDICTSampler(scheduler, num_steps=steps)


@pytest.mark.parametrize("fn", ["sample", "invert", "grad"])
def test_bad_pairs(sampler, fn):
    call = {
        "sample": lambda x, y: sampler.sample(eps_fn, x, y),
        "invert": lambda x, y: sampler.invert(eps_fn, x, y),
        "grad": lambda x, y: doodl.sample_with_grad(sampler, eps_fn, x, y),
    }[fn]
    x = noise()
    with pytest.raises(ValueError, match="one shape"):
        call(x, noise((1, 4, 8, 4)))
    with pytest.raises(ValueError, match="one dtype"):
        call(x, x.float())
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        call(x, bad)
    with pytest.raises(ValueError, match="floating"):
        call(x.long(), x.long())


def test_unknown_mode(sampler):
    with pytest.raises(ValueError, match="unknown mode 'exact'.*invert, checkpoint, naive"):
        doodl.sample_with_grad(sampler, eps_fn, noise(), noise(), mode="exact")


@pytest.mark.parametrize("start, stop", [(-1, 2), (2, 2), (3, 1), (0, 5)])
def test_bad_range(sampler, start, stop):
    with pytest.raises(ValueError, match="start < stop"):
        sampler.sample(eps_fn, noise(), noise(), start=start, stop=stop)
