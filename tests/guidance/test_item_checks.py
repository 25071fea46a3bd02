"""What each loss reads from items (``item_keys``) and finds wrong with one (``check_item``), before a
run; weights and program files that do not load name themselves."""

import re

import pytest
import torch

from doodl.guidance import (AestheticLoss, CallableLoss, ClassifierLoss, CLIPTextLoss, CompositeLoss, GuidanceLoss,
                            ImageSimilarityLoss)

from .conftest import TinyNet


def test_classifier_class_count_from_the_argument_or_one_forward(tiny_net):
    probed = ClassifierLoss(TinyNet(7), input_size=8)
    assert probed.num_classes is None and probed.classes() == 7  # no attribute: one forward of zeros
    assert ClassifierLoss(TinyNet(7)).classes() is None  # no input size: nothing to probe with
    assert probed.item_keys == ("target_class",) and ClassifierLoss(tiny_net, target_class=1).item_keys == ()
    assert probed.check_item({"target_class": 6}) == []
    assert probed.check_item({"target_class": 7}) == ["target_class 7 is out of range for a 7-class classifier (0-6)"]
    assert probed.check_item({"target_class": True}) == ["target_class must be an integer class index, got True"]
    assert probed.check_item({"prompt": "a"}) == [
        "no 'target_class': give the item a 'target_class', or set a fixed target_class on the loss"]
    assert ClassifierLoss(tiny_net, target_class=1).check_item({"target_class": 99}) == []  # the fixed class is used


def test_reference_images_checked_per_item_unless_fixed(clip, tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "a.png")
    (tmp_path / "junk.png").write_bytes(b"junk" * 8)
    loss = ImageSimilarityLoss(clip, cutouts=None)
    assert loss.item_keys == ("reference_images",)
    assert loss.check_item({"reference_images": [str(tmp_path / "a.png"), torch.rand(3, 8, 8)]}) == []
    problems = loss.check_item({"reference_images": [str(tmp_path / "junk.png"), str(tmp_path / "none.png")]})
    assert len(problems) == 2
    assert problems[0].startswith(f"cannot read reference image {str(tmp_path / 'junk.png')!r}")
    assert problems[1] == f"reference image {str(tmp_path / 'none.png')!r} not found"
    assert loss.check_item({}) == [
        "no 'reference_images': give the item a 'reference_images', or set a fixed reference_images on the loss"]
    fixed = ImageSimilarityLoss(clip, reference_images=[str(tmp_path / "a.png")], cutouts=None)
    assert fixed.item_keys == () and fixed.check_item({}) == []


def test_aesthetic_text_callable_and_composite_keys(clip):
    head = {"weight": torch.zeros(1, clip.embed_dim), "bias": torch.full((1,), 5.0)}
    target = AestheticLoss(clip, head, mode="target")
    assert target.item_keys == ("target_score",) and AestheticLoss(clip, head).item_keys == ()
    assert target.check_item({"target_score": 7.0}) == []
    assert target.check_item({"target_score": float("inf")}) == ["target_score must be a finite number, got inf"]
    assert CLIPTextLoss(clip).item_keys == ("prompt",) and CLIPTextLoss(clip, prompt="a").item_keys == ()
    fn = CallableLoss(lambda images, items: images.mean((1, 2, 3)), item_keys=["style"], name="mine")
    assert fn.check_item({"style": "x"}) == [] and fn.check_item({}) == [
        "no 'style': the callable loss 'mine' reads it from every item"]
    with pytest.raises(ValueError, match="item_keys must be a list of key names"):
        CallableLoss(lambda images, items: images.mean((1, 2, 3)), item_keys="style")
    both = CompositeLoss({"a": target, "b": fn})
    assert both.item_keys == ("target_score", "style")
    assert both.check_item({}) == [
        "a: no 'target_score': give the item a 'target_score', or set a fixed target_score on the loss",
        "b: no 'style': the callable loss 'mine' reads it from every item"]
    assert GuidanceLoss().item_keys == () and GuidanceLoss().check_item({"x": 1}) == []


# ---- files that do not load name the file ------------------------------------------------------------------
@pytest.mark.parametrize("name, data, reason", [
    ("classifier.safetensors", b"garbage" * 20, "could not be read as a safetensors file: SafetensorError"),
    ("classifier.pt", b"garbage" * 20, "could not be read as a torch state dict .*corrupt, or holds objects other"),
    ("classifier.pth", None, "could not be read as a torch state dict .*RuntimeError"),  # a cut torch.save zip
])
def test_corrupt_weights_file_names_the_file(tiny_net, tmp_path, name, data, reason):
    path = tmp_path / name
    if data is None:
        torch.save(tiny_net.state_dict(), path)
        data = path.read_bytes()[:300]
    path.write_bytes(data)
    with pytest.raises(ValueError, match=re.escape(f"classifier weights file {str(path)!r} ") + reason):
        ClassifierLoss(TinyNet(), weights=str(path))


def test_a_pickled_module_is_refused_not_run(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(TinyNet(), path)  # a whole module: a pickle that would import and build code
    with pytest.raises(ValueError, match=r"holds objects other than tensors \(not loaded: a pickle can run code\)"):
        ClassifierLoss(TinyNet(), weights=str(path))


@pytest.mark.parametrize("name, kind", [("net.pt2", "torch.export .pt2 archive"), ("net.ts", "TorchScript archive")])
def test_corrupt_program_file_names_the_file(tmp_path, name, kind):
    path = tmp_path / name
    path.write_bytes(b"garbage" * 20)
    with pytest.raises(ValueError, match=re.escape(f"classifier file {str(path)!r} is not a {kind}")):
        ClassifierLoss(str(path))
