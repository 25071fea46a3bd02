"""An emulation of what the authors' DOODL code costs per iteration (SPEC.md sections 5 and 8).

Written from the SPEC's description, not from their code. Three things set its cost:
  * guidance from two batch-1 UNet calls per half-step (uncond, cond), not one batched call
    (``World.eps_ref``);
  * memcnn-style per-step checkpointing with kept inputs: forward runs every step without a graph
    and keeps its input pair; backward recomputes each step with a graph from that pair and takes
    its vector-Jacobian product;
  * the UNet's weights are left trainable, so every backward also computes the weight gradients,
    which are then thrown away.
Its gradient w.r.t. the starting pair is the exact one (the benchmark checks it against naive).
"""

from __future__ import annotations

from typing import Any

import torch


class _ReferenceChain(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, sampler, eps_fn, params, xT, yT):
        x, y = xT.detach(), yT.detach()
        kept = []
        for i in range(sampler.num_steps):
            kept.append((x, y))
            x, y = sampler.denoise(eps_fn, x, y, i)
        ctx.sampler, ctx.eps_fn, ctx.params, ctx.kept = sampler, eps_fn, params, kept
        return x, y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, gx, gy):
        for i in reversed(range(ctx.sampler.num_steps)):
            x, y = (v.detach().requires_grad_(True) for v in ctx.kept[i])
            with torch.enable_grad():
                out = ctx.sampler.denoise(ctx.eps_fn, x, y, i)
                grads = torch.autograd.grad(out, (x, y, *ctx.params), (gx, gy), allow_unused=True)
            gx, gy = grads[0], grads[1]  # grads[2:]: the weights' gradients, computed and dropped
        return None, None, None, gx, gy


def reference_sample_with_grad(sampler, world, xT, yT):
    """The final pair with the reference's backward; unfreezes ``world.unet`` while it runs it."""
    params = tuple(world.unet.parameters())
    return _ReferenceChain.apply(sampler, world.eps_ref, params, xT, yT)


class TrainableUNet:
    """``with TrainableUNet(world):`` the UNet's weights require grad inside (as in the reference)."""

    def __init__(self, world):
        self.unet = world.unet

    def __enter__(self):
        self.unet.requires_grad_(True)
        return self

    def __exit__(self, *exc):
        self.unet.requires_grad_(False)
