"""Helpers shared by the backend tests."""

import warnings

import torch


def latents(backend, batch=1, size=16, dtype=torch.float64, seed=0):
    """Seeded x_T for an image of size x size pixels (8 x 8 latents with the tiny VAE)."""
    return backend.initial_noise(batch, size, size, generator=seed, dtype=dtype)


class CountCalls:
    """Forward hook that records the batch size of every call of a module."""

    def __init__(self, module):
        self.batches = []
        # a pre-hook: checkpoint recomputation may stop before a module's forward returns
        self.handle = module.register_forward_pre_hook(lambda module, args: self.batches.append(args[0].shape[0]))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)
