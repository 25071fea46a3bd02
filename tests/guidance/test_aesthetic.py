"""Aesthetic heads: published layouts, loading from files, clipping, maximize / target modes."""

import pytest
import torch
from torch import nn

from doodl.guidance import AestheticLoss, AestheticMLP, Cutouts

from .conftest import rand_images


def test_improved_predictor_layout():
    head = AestheticMLP(768)
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes == {
        "layers.0.weight": (1024, 768), "layers.0.bias": (1024,),
        "layers.2.weight": (128, 1024), "layers.2.bias": (128,),
        "layers.4.weight": (64, 128), "layers.4.bias": (64,),
        "layers.6.weight": (16, 64), "layers.6.bias": (16,),
        "layers.7.weight": (1, 16), "layers.7.bias": (1,),
    }
    assert [type(m).__name__ for m in head.layers] == ["Linear", "Dropout"] * 3 + ["Linear", "Linear"]


def save_linear(path, dim=32, bias=5.0, seed=0):
    torch.manual_seed(seed)
    head = nn.Linear(dim, 1)
    nn.init.normal_(head.weight, std=2.0)
    nn.init.constant_(head.bias, bias)
    torch.save(head.state_dict(), path)
    return head


def save_mlp(path, dim=32, bias=5.0, seed=0):
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    head = AestheticMLP(dim)
    nn.init.constant_(head.layers[7].bias, bias)
    save_file(head.state_dict(), str(path))
    return head


def test_linear_head_score_on_normalized_embedding(clip, tmp_path):
    head = save_linear(tmp_path / "linear.pth")
    loss = AestheticLoss(clip, str(tmp_path / "linear.pth"))
    assert loss.head_kind == "linear"
    images = rand_images(2, 40)
    e = clip.embed_images(clip.resize(images))
    expected = head(e)[:, 0].clamp(1, 10)
    torch.testing.assert_close(loss.score(images), expected)
    torch.testing.assert_close(loss(images), -expected)
    in_memory = AestheticLoss(clip, dict(head.state_dict()))  # a state dict instead of a file
    torch.testing.assert_close(in_memory.score(images), expected)


def test_mlp_head_from_safetensors_and_target_mode(clip, tmp_path):
    head = save_mlp(tmp_path / "mlp.safetensors").eval()
    loss = AestheticLoss(clip, str(tmp_path / "mlp.safetensors"), mode="target", target_score=7.0, weight=0.5)
    assert loss.head_kind == "mlp" and not loss.head.training
    images = rand_images(2, 32)
    s = head(clip.embed_images(clip.resize(images)))[:, 0].clamp(1, 10)
    torch.testing.assert_close(loss(images), 0.5 * (s - 7.0).abs())
    per_item = AestheticLoss(clip, str(tmp_path / "mlp.safetensors"), mode="target")
    out = per_item(images, [{"target_score": 7.0}, {"target_score": 2.0}])
    torch.testing.assert_close(out, torch.stack([(s[0] - 7).abs(), (s[1] - 2).abs()]))
    with pytest.raises(ValueError, match="'target_score'"):
        per_item(images)


def test_score_clipped_to_1_10(clip, tmp_path):
    save_linear(tmp_path / "high.pth", bias=50.0)
    save_linear(tmp_path / "low.pth", bias=-50.0)
    images = rand_images(2, 32)
    assert torch.equal(AestheticLoss(clip, str(tmp_path / "high.pth")).score(images), torch.full((2,), 10.0))
    assert torch.equal(AestheticLoss(clip, str(tmp_path / "low.pth")).score(images), torch.full((2,), 1.0))


def test_cutouts_average_over_crops(clip, tmp_path):
    save_linear(tmp_path / "linear.pth")
    loss = AestheticLoss(clip, str(tmp_path / "linear.pth"), cutouts=Cutouts(n=4, seed=1))
    images = rand_images(2, 48)
    assert loss(images).shape == (2,)
    # the loss draws new crops each call; the score averages the same fixed crops every call
    assert not torch.allclose(loss(images), loss(images))
    torch.testing.assert_close(loss.score(images), loss.score(images), rtol=0, atol=0)
    from doodl.guidance.cutouts import fixed_generators

    crops = loss.cutouts(images, fixed_generators(2, 1))
    expected = loss.head(clip.embed_images(crops.flatten(0, 1))).view(2, 4).clamp(1, 10).mean(1)
    torch.testing.assert_close(loss.score(images), expected)


def test_errors(clip, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing_head.pth.*head_path"):
        AestheticLoss(clip, str(tmp_path / "missing_head.pth"))
    save_linear(tmp_path / "wide.pth", dim=768)
    with pytest.raises(ValueError, match="768-d"):
        AestheticLoss(clip, str(tmp_path / "wide.pth"))
    torch.save({"foo.weight": torch.zeros(1, 32)}, tmp_path / "odd.pth")
    with pytest.raises(ValueError, match="cannot tell the aesthetic head"):
        AestheticLoss(clip, str(tmp_path / "odd.pth"))
    save_linear(tmp_path / "linear.pth")
    with pytest.raises(ValueError, match="mode='target'"):
        AestheticLoss(clip, str(tmp_path / "linear.pth"), target_score=6.0)
    with pytest.raises(ValueError, match="head='mlp' needs a 'layers.0.weight' key"):
        AestheticLoss(clip, str(tmp_path / "linear.pth"), head="mlp")
