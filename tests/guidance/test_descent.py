"""Every loss type: frozen weights, gradient reaches the images only, and a few Adam steps on the
pixels of a 1x3x32x32 image lower the loss."""

import pytest
import torch
from torch import nn

from doodl.guidance import (
    AestheticLoss,
    AestheticMLP,
    CallableLoss,
    ClassifierLoss,
    CLIPTextLoss,
    CompositeLoss,
    Cutouts,
    ImageSimilarityLoss,
)

from .conftest import rand_images


def _aesthetic(clip, tmp_path, kind):
    torch.manual_seed(0)
    head = nn.Linear(32, 1) if kind == "linear" else AestheticMLP(32)
    last = head if kind == "linear" else head.layers[7]
    nn.init.constant_(last.bias, 5.0)  # scores well inside [1, 10]: the clip does not flatten the gradient
    torch.save(head.state_dict(), tmp_path / f"{kind}.pth")
    return AestheticLoss(clip, str(tmp_path / f"{kind}.pth"))


FACTORIES = {
    "clip_text_min": lambda clip, net, tmp: CLIPTextLoss(clip, "a cat", cutouts=Cutouts(n=4), reduction="min"),
    "clip_text_mean": lambda clip, net, tmp: CLIPTextLoss(clip, "a cat", cutouts=Cutouts(n=4), reduction="mean"),
    "image_similarity": lambda clip, net, tmp: ImageSimilarityLoss(clip, rand_images(2, 32, seed=9), cutouts=Cutouts(n=4)),
    "aesthetic_linear": lambda clip, net, tmp: _aesthetic(clip, tmp, "linear"),
    "aesthetic_mlp": lambda clip, net, tmp: _aesthetic(clip, tmp, "mlp"),
    "aesthetic_target": lambda clip, net, tmp: AestheticLoss(
        clip, str(_aesthetic(clip, tmp, "linear") and tmp / "linear.pth"), mode="target", target_score=9.0),
    "classifier": lambda clip, net, tmp: ClassifierLoss(net, target_class=2),
    "classifier_cutouts": lambda clip, net, tmp: ClassifierLoss(net, target_class=2, input_size=16, cutouts=Cutouts(n=4)),
    "callable": lambda clip, net, tmp: CallableLoss(lambda x, items: (x - 0.25).pow(2).mean((1, 2, 3))),
    "composite": lambda clip, net, tmp: CompositeLoss(
        [CLIPTextLoss(clip, "a cat", cutouts=None), ClassifierLoss(net, target_class=2)], weights=[1.0, 0.1]),
}


def _reseed(loss, seed=123):
    for module in loss.modules():
        cut = getattr(module, "cutouts", None)
        if cut is not None and hasattr(cut, "generator"):
            cut.generator.manual_seed(seed)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_frozen_gradient_and_descent(name, clip, tiny_net, tmp_path):
    loss = FACTORIES[name](clip, tiny_net, tmp_path)
    loss.train()  # stays in eval mode
    assert not any(m.training for m in loss.modules())
    assert all(not p.requires_grad for p in loss.parameters())

    pixels = rand_images(1, 32, seed=4).requires_grad_(True)
    _reseed(loss)
    start = loss(pixels)
    assert start.shape == (1,)
    start.sum().backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.parameters())

    opt = torch.optim.Adam([pixels], lr=0.02)
    for _ in range(8):
        opt.zero_grad()
        loss(pixels).sum().backward()  # fresh crops every step
        opt.step()
    _reseed(loss)  # compare on the same crops as the start
    with torch.no_grad():
        end = loss(pixels)
    assert end.item() < start.item() - 1e-4, (start.item(), end.item())
    assert loss.score(pixels.detach()).shape == (1,)
