"""Weighted sums of losses and user callables."""

import pytest
import torch

from doodl.guidance import CallableLoss, ClassifierLoss, CLIPTextLoss, CompositeLoss

from .conftest import rand_images


def redness(images, items=None):
    """Mean distance of each image's red channel from 1."""
    return (1 - images[:, 0]).mean((1, 2))


def test_composite_is_weighted_sum(clip, tiny_net):
    images = rand_images(2, 32)
    text = CLIPTextLoss(clip, "a cat", cutouts=None, weight=2.0)
    cls = ClassifierLoss(tiny_net, target_class=1)
    red = CallableLoss(redness, weight=3.0)
    total = CompositeLoss({"text": text, "cls": cls, "red": red}, weights=[0.5, 1.5, 1.0], weight=2.0)
    expected = 2.0 * (0.5 * text(images) + 1.5 * cls(images) + red(images))
    torch.testing.assert_close(total(images), expected)
    torch.testing.assert_close(red(images), 3.0 * redness(images))
    scores = total.scores(images)
    assert set(scores) == {"text", "cls", "red"} and all(s.shape == (2,) for s in scores.values())
    torch.testing.assert_close(scores["cls"], cls.score(images))


def test_items_reach_every_component(clip, tiny_net):
    images = rand_images(2, 32)
    items = [{"prompt": "a cat", "target_class": 0}, {"prompt": "a dog", "target_class": 4}]
    total = CompositeLoss([CLIPTextLoss(clip, cutouts=None), ClassifierLoss(tiny_net)])
    expected = CLIPTextLoss(clip, cutouts=None)(images, items) + ClassifierLoss(tiny_net)(images, items)
    torch.testing.assert_close(total(images, items), expected)


def test_callable_from_import_path():
    loss = CallableLoss("tests.guidance.test_composite:redness")
    images = rand_images(2, 8)
    torch.testing.assert_close(loss(images), redness(images))
    assert loss.name == "redness"


def test_errors(tiny_net):
    with pytest.raises(ValueError, match=r"per-sample loss of shape \(2,\)"):
        CallableLoss(lambda images, items: images.mean())(rand_images(2, 8))
    with pytest.raises(ValueError, match="2 weights for 1 losses"):
        CompositeLoss([ClassifierLoss(tiny_net, target_class=0)], weights=[1.0, 2.0])
    with pytest.raises(TypeError, match="CallableLoss"):
        CompositeLoss([redness])
    with pytest.raises(ValueError, match="empty"):
        CompositeLoss([])
    with pytest.raises(TypeError, match="callable"):
        CallableLoss(3)
