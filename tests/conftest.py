"""Shared fixtures: tiny frozen models, never any network."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from contextlib import contextmanager

import pytest
import torch

from doodl.models.tiny import sd_scheduler, tiny_unet


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@contextmanager
def one_torch_thread():
    """One torch thread inside the block (the whole session runs so: see ``one_thread``); a test
    that compares runs of one computation bitwise wraps them in it to say that it relies on it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Every test on one torch thread, whatever ran before it and in whichever order: another
    thread count sums floats in another order (results differ by rounding), and the tiny models
    run faster on one thread than on two on a busy 2-core machine (a float64 gradient test took
    60 s on 2 threads, 1.4 s on 1). Subprocesses get OMP_NUM_THREADS=1 from the tests that start them."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="session")
def unet64():
    """Tiny UNet in float64 (exactness tests)."""
    return tiny_unet().double()


@pytest.fixture(scope="session")
def unet32():
    return tiny_unet()


def make_eps_fn(unet, batch=1, seed=1, tokens=5):
    """eps_fn(latents, t) over a fixed random text context; counts its calls."""
    g = torch.Generator().manual_seed(seed)
    ctx = torch.randn(batch, tokens, unet.config.cross_attention_dim, generator=g, dtype=unet.dtype)

    def eps_fn(latents, t):
        eps_fn.calls += 1
        return unet(latents, t, encoder_hidden_states=ctx).sample

    eps_fn.calls = 0
    return eps_fn


@pytest.fixture
def scheduler():
    return sd_scheduler()


def noise(shape=(1, 4, 8, 8), dtype=torch.float64, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.fixture(autouse=True)
def no_wandb_run_left():
    """Finish a W&B run a test left active: Lightning's WandbLogger reuses an active run, so a later
    test's offline run would be written into the earlier test's folder (a test-order dependency)."""
    yield
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
