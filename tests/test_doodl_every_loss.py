"""DOODL end to end on tiny models for every guidance type (issue 3).

A tiny Stable Diffusion pipeline is written with ``save_tiny_pipeline`` and loaded through
``StableDiffusion`` (the path a user's checkpoint takes); the guidance models are a tiny open_clip
model registered from a JSON config and loaded from a saved checkpoint, aesthetic heads and a
tiny classifier. Each loss is optimized for a few DOODL iterations exactly as the app does it:
``sample_with_grad(mode="invert")`` -> decode both images -> loss -> backward -> DOODLOptimizer.step.
Every image's crops come from an item generator reseeded to the same seed at every evaluation,
so the initial and the final latents are compared on one fixed objective.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import doodl
from doodl.guidance import (
    AestheticLoss,
    AestheticMLP,
    CallableLoss,
    ClassifierLoss,
    CLIPTextLoss,
    CompositeLoss,
    Cutouts,
    ImageSimilarityLoss,
    OpenCLIP,
)
from doodl.models import StableDiffusion
from doodl.models.tiny import save_tiny_pipeline

from .guidance.conftest import TINY_CLIP_CFG, TinyNet

CLIP_NAME = "doodl-tiny-clip-every-loss"
SIZE = 16  # pixels: 8 x 8 latents with the tiny VAE
STEPS = 4
CFG = 3.0
PROMPT = "a red square on a blue field"
CROP_SEED = 1234


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    folder = save_tiny_pipeline(tmp_path_factory.mktemp("every_loss") / "pipe", "sd")
    return StableDiffusion(folder, dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    import open_clip

    root = tmp_path_factory.mktemp("every_loss_clip")
    cfg = root / f"{CLIP_NAME}.json"
    cfg.write_text(json.dumps(TINY_CLIP_CFG))
    open_clip.add_model_config(cfg)
    torch.manual_seed(0)
    ckpt = root / "tiny_clip.pt"
    torch.save(open_clip.create_model(CLIP_NAME).state_dict(), ckpt)
    return OpenCLIP(CLIP_NAME, str(ckpt))


def reference_png(path, size=24):
    """A small colour gradient written as a PNG file."""
    from PIL import Image

    ramp = np.linspace(0, 255, size, dtype=np.float64)
    rgb = np.stack([np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size)), np.full((size, size), 64.0)], -1)
    Image.fromarray(rgb.astype(np.uint8)).save(path)
    return str(path)


def aesthetic_head(tmp_path, kind):
    torch.manual_seed(0)
    head = nn.Linear(32, 1) if kind == "linear" else AestheticMLP(32)
    last = head if kind == "linear" else head.layers[7]
    with torch.no_grad():
        last.bias.fill_(5.0)  # scores inside [1, 10], where the clip passes gradients
        if kind == "mlp":
            last.weight.mul_(20.0)  # random stacked linear layers are nearly flat: make the head respond
    path = tmp_path / f"aesthetic_{kind}.pth"
    torch.save(head.state_dict(), path)
    return str(path)


def red_distance(images, items):
    """A user callable: squared distance of the mean colour to red, (B,)."""
    red = torch.tensor([1.0, 0.0, 0.0], dtype=images.dtype).view(1, 3)
    return (images.mean((2, 3)) - red).square().sum(1)


def classifier():
    torch.manual_seed(0)
    return ClassifierLoss(TinyNet(), target_class=2, input_size=16, cutouts=Cutouts(n=4))


# name -> factory(clip, tmp_path) of the guidance loss
LOSSES = {
    "clip_text": lambda clip, tmp: CLIPTextLoss(clip, PROMPT, cutouts=Cutouts(n=4), reduction="mean"),
    "image_similarity": lambda clip, tmp: ImageSimilarityLoss(clip, [reference_png(tmp / "ref.png")], cutouts=Cutouts(n=4)),
    "aesthetic_linear": lambda clip, tmp: AestheticLoss(clip, aesthetic_head(tmp, "linear"), head="linear"),
    "aesthetic_mlp": lambda clip, tmp: AestheticLoss(clip, aesthetic_head(tmp, "mlp"), head="mlp"),
    "classifier": lambda clip, tmp: classifier(),
    "composite": lambda clip, tmp: CompositeLoss(
        {"text": CLIPTextLoss(clip, PROMPT, cutouts=Cutouts(n=4), reduction="mean"), "classifier": classifier()},
        weights=[1.0, 0.5]),
    "callable": lambda clip, tmp: CallableLoss(red_distance),
}


def items_with_crops(seed=CROP_SEED):
    """The app's items: a prompt and the item's own crop generator, here reseeded on every call."""
    return [{"prompt": PROMPT, "generator": torch.Generator().manual_seed(seed)}]


def pair_loss(sd, sampler, eps_fn, guidance, x, y):
    """Chain with gradient -> decode both images -> loss(x image) + loss(y image), as the app does.
    Each image's loss sees the same crops (one reseeded generator per evaluation)."""
    x0, y0 = doodl.sample_with_grad(sampler, eps_fn, x, y, mode="invert")
    loss = guidance(sd.decode(x0), items_with_crops())
    return loss + guidance(sd.decode(y0), items_with_crops())


def run_doodl(sd, guidance, iterations=6, scale=1.0, clip_grad_val=0.05):
    sampler = sd.sampler(STEPS)
    eps_fn = sd.eps_fn(sd.encode_prompt([PROMPT]), CFG)
    z = sd.initial_noise(1, SIZE, SIZE, generator=0)
    x, y = nn.Parameter(z.clone()), nn.Parameter(z.clone())
    opt = doodl.DOODLOptimizer([(x, y)], clip_grad_val=clip_grad_val, perturb=1e-3,
                               generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(iterations):
        loss = scale * pair_loss(sd, sampler, eps_fn, guidance, x, y)
        losses.append(float(loss.detach().sum()))
        loss.sum().backward()
        grad = float(x.grad.abs().sum())  # the gradient reached the latents: nothing flattened it
        assert 0 < grad < float("inf"), f"gradient of the latents: {grad}"
        assert opt.step() == [True]
        opt.zero_grad()
    with torch.no_grad():
        start = float(pair_loss(sd, sampler, eps_fn, guidance, z, z.clone()).sum())
        end = float(pair_loss(sd, sampler, eps_fn, guidance, x.detach(), y.detach()).sum())
    return start, end, losses, (z, x.detach(), y.detach())


@pytest.mark.parametrize("name", list(LOSSES))
def test_doodl_lowers_every_loss(name, sd, clip, tmp_path):
    guidance = LOSSES[name](clip, tmp_path)
    assert all(not p.requires_grad for p in guidance.parameters())
    start, end, losses, (z, x, y) = run_doodl(sd, guidance)
    # the first iteration evaluated the initial latents on the same crops
    assert losses[0] == pytest.approx(start, rel=1e-5, abs=1e-6)
    assert end < start - 1e-4 * max(1.0, abs(start)), f"{name}: loss {start:.6g} -> {end:.6g} ({losses})"
    # the latents moved, stayed tied and on the sphere of the first noise's norm
    assert (x - z).abs().max() > 1e-3
    torch.testing.assert_close(x, y, rtol=0, atol=0)  # bitwise: a tied step copies one mean into both
    torch.testing.assert_close(x.norm(), z.norm(), rtol=1e-5, atol=0)
    # the loss and its gradient never touched the frozen networks
    assert all(p.grad is None for p in guidance.parameters()) and all(p.grad is None for p in sd.parameters())


def test_one_step_baseline_lowers_the_loss(sd):
    """The one-step baseline runs end to end with a guidance loss and lowers it vs unguided."""
    guidance = classifier()
    sampler = sd.sampler(STEPS)
    eps_fn = sd.eps_fn(sd.encode_prompt([PROMPT]), CFG)
    z = sd.initial_noise(1, SIZE, SIZE, generator=0)
    calls = []

    def loss_fn(s):
        calls.append(s.shape)
        return 200.0 * guidance(sd.decode(s), items_with_crops())

    plain = doodl.one_step_guided_sample(sampler, eps_fn, None, z)
    guided = doodl.one_step_guided_sample(sampler, eps_fn, loss_fn, z)
    assert len(calls) == STEPS and not guided.requires_grad
    with torch.no_grad():
        before = float(guidance(sd.decode(plain), items_with_crops()))
        after = float(guidance(sd.decode(guided), items_with_crops()))
    assert after < before - 5e-3, f"one-step guidance: {before:.6g} -> {after:.6g}"
