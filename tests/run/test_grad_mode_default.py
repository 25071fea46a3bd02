"""grad_mode left out is chosen by precision (doodl.core.grad.default_mode): the paper's exact
inverse where its round trip stays at rounding level, checkpoint where it drifts."""

from __future__ import annotations

import logging

import pytest
import torch

from doodl.core.grad import default_mode
from doodl.digits.world import DigitClassifierLoss, DigitsStableDiffusion
from doodl.run.context import Chain, RunContext
from doodl.run.methods import DOODL
from doodl.run.runner import DOODLRunner


@pytest.mark.parametrize("net, latents, mode", [
    (torch.float32, torch.float32, "invert"), (torch.float64, torch.float64, "invert"),
    (torch.bfloat16, torch.float32, "checkpoint"), (torch.float16, torch.float32, "checkpoint"),
    (torch.bfloat16, torch.float64, "invert"), (torch.float16, torch.float64, "invert"),
])
def test_default_mode_by_precision(net, latents, mode):
    assert default_mode(net, latents) == mode


def context(dtype: str, latent_dtype: str = "float32") -> RunContext:
    chain = Chain(num_steps=2, height=16, width=16, latent_dtype=latent_dtype)
    return RunContext(DigitsStableDiffusion(dtype=dtype), DigitClassifierLoss(), chain)


def test_runner_and_method_resolve_the_mode_from_the_context(caplog):
    assert DOODLRunner(context("float32"), iterations=1).grad_mode == "invert"
    assert DOODLRunner(context("bfloat16", "float64"), iterations=1).grad_mode == "invert"
    with caplog.at_level(logging.INFO, logger="doodl.run.runner"):
        low = context("bfloat16")
        assert DOODLRunner(low, iterations=1).grad_mode == "checkpoint"
    assert "chosen by precision" in caplog.text and "latent_dtype: float64" in caplog.text
    assert DOODLRunner(low, iterations=1, grad_mode="invert").grad_mode == "invert"  # an explicit mode is kept
    assert DOODL(iterations=3).runner(low).grad_mode == "checkpoint"
    assert DOODL(iterations=3, grad_mode="naive", budget=2).runner(low).iterations == 2  # naive: 1 sample each
