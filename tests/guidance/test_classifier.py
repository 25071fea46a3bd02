"""Classifier guidance: modules, TorchScript files, timm / torchvision names with local weights, errors."""

import pytest
import torch
import torch.nn.functional as F

from doodl.guidance import IMAGENET_MEAN, IMAGENET_STD, ClassifierLoss, Cutouts

from .conftest import TinyNet, rand_images


def normalized(images):
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def test_module_cross_entropy_and_score(tiny_net):
    images = rand_images(2, 32)
    loss = ClassifierLoss(tiny_net, target_class=3, weight=0.05)
    logits = tiny_net(normalized(images))
    expected = F.cross_entropy(logits, torch.tensor([3, 3]), reduction="none")
    torch.testing.assert_close(loss(images), 0.05 * expected)
    torch.testing.assert_close(loss.score(images), logits.softmax(-1)[:, 3])


def test_input_size_and_per_item_targets(tiny_net):
    images = rand_images(2, 40)
    loss = ClassifierLoss(tiny_net, input_size=16)
    out = loss(images, [{"target_class": 0}, {"target_class": 4}])
    logits = tiny_net(normalized(F.adaptive_avg_pool2d(images, 16)))
    torch.testing.assert_close(out, F.cross_entropy(logits, torch.tensor([0, 4]), reduction="none"))
    with pytest.raises(ValueError, match="'target_class'"):
        loss(images)
    with pytest.raises(ValueError, match="out of range: the classifier has 5 classes"):
        loss(images, [{"target_class": 0}, {"target_class": 5}])


def test_cutouts_mean_cross_entropy(tiny_net):
    images = rand_images(2, 48)
    loss = ClassifierLoss(tiny_net, target_class=1, input_size=16, cutouts=Cutouts(n=4, seed=2))

    crops = Cutouts(n=4, seed=2).bind(16)(images).flatten(0, 1)
    ce = F.cross_entropy(tiny_net(normalized(crops)), torch.ones(8, dtype=torch.long), reduction="none")
    torch.testing.assert_close(loss(images), ce.view(2, 4).mean(1))
    with pytest.raises(ValueError, match="input_size"):
        ClassifierLoss(tiny_net, target_class=1, cutouts=Cutouts(n=4))


def test_min_cut_crops_below_the_input_size(tiny_net):
    """An image of the classifier's own size: min_size makes the crops differ from the whole image."""

    images = rand_images(2, 16)
    loss = ClassifierLoss(tiny_net, target_class=1, input_size=16, cutouts=Cutouts(n=4, seed=2, min_size=8))
    crops = Cutouts(n=4, seed=2, min_size=8).bind(16)(images).flatten(0, 1)
    ce = F.cross_entropy(tiny_net(normalized(crops)), torch.ones(8, dtype=torch.long), reduction="none")
    torch.testing.assert_close(loss(images), ce.view(2, 4).mean(1))
    whole = ClassifierLoss(tiny_net, target_class=1, input_size=16, cutouts=Cutouts(n=4, seed=2))
    assert not torch.allclose(loss(images), whole(images))
    # the score averages the target probability over the same fixed crops at every call
    from doodl.guidance.cutouts import fixed_generators

    fixed = Cutouts(n=4, min_size=8).bind(16)(images, fixed_generators(2, 2)).flatten(0, 1)
    probs = tiny_net(normalized(fixed)).softmax(-1)[:, 1].view(2, 4).mean(1)
    torch.testing.assert_close(loss.score(images), probs)
    torch.testing.assert_close(loss.score(images), loss.score(images), rtol=0, atol=0)
    assert not torch.allclose(loss(images), loss(images))  # the loss draws fresh crops
    with pytest.raises(ValueError, match=r"cutouts=4 \(a number of crops\) is the old form.*Cutouts\(n=4\)"):
        ClassifierLoss(tiny_net, target_class=1, input_size=16, cutouts=4)


def test_score_on_the_whole_image_with_crops_on(tiny_net):
    """score_on="image": the loss still averages over crops, the score reads the image as shown."""
    images = rand_images(2, 16)
    crops = Cutouts(n=4, seed=2, min_size=8)
    on_image = ClassifierLoss(tiny_net, target_class=1, input_size=16, cutouts=crops, score_on="image")
    on_crops = ClassifierLoss(tiny_net, target_class=1, input_size=16, cutouts=crops)
    torch.testing.assert_close(on_image.score(images), tiny_net(normalized(images)).softmax(-1)[:, 1])
    assert not torch.allclose(on_image.score(images), on_crops.score(images))
    ce = F.cross_entropy(tiny_net(normalized(crops.bind(16)(images).flatten(0, 1))), torch.ones(8, dtype=torch.long),
                         reduction="none")
    torch.testing.assert_close(on_image(images), ce.view(2, 4).mean(1))
    with pytest.raises(ValueError, match=r"score_on must be one of 'crops', 'image'.*got 'shifts'"):
        ClassifierLoss(tiny_net, target_class=1, input_size=16, cutouts=crops, score_on="shifts")


def test_torchscript_file(tiny_net, tmp_path):
    path = tmp_path / "net.pt"
    torch.jit.script(tiny_net).save(str(path))
    images = rand_images(2, 32)
    scripted = ClassifierLoss(str(path), target_class=2)
    torch.testing.assert_close(scripted(images), ClassifierLoss(tiny_net, target_class=2)(images))


def test_torch_export_file(tiny_net, tmp_path):
    path = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(tiny_net, (torch.rand(2, 3, 32, 32),)), str(path))
    images = rand_images(2, 32).requires_grad_(True)
    exported = ClassifierLoss(str(path), target_class=2)
    out = exported(images)
    torch.testing.assert_close(out, ClassifierLoss(tiny_net, target_class=2)(images))
    out.sum().backward()
    assert images.grad.abs().sum() > 0


def test_module_with_weights_file(tmp_path):
    torch.manual_seed(1)
    trained = TinyNet()
    torch.save(trained.state_dict(), tmp_path / "w.pth")
    loss = ClassifierLoss(TinyNet(), weights=str(tmp_path / "w.pth"), target_class=0)
    assert torch.equal(loss.model.head.weight, trained.head.weight)


def test_timm_name_with_local_weights(tmp_path):
    import timm

    torch.manual_seed(0)
    net = timm.create_model("test_efficientnet", pretrained=False, num_classes=5).eval()
    torch.save(net.state_dict(), tmp_path / "effnet.pth")
    loss = ClassifierLoss("timm:test_efficientnet", weights=str(tmp_path / "effnet.pth"), num_classes=5, target_class=4)
    images = rand_images(1, 32)
    torch.testing.assert_close(loss(images), F.cross_entropy(net(normalized(images)), torch.tensor([4]), reduction="none"))
    with pytest.raises(ValueError, match="out of range: the classifier has 5 classes"):
        ClassifierLoss("timm:test_efficientnet", weights=str(tmp_path / "effnet.pth"), num_classes=5, target_class=7)


def test_torchvision_name_with_safetensors_weights(tmp_path):
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = torchvision.models.get_model("shufflenet_v2_x0_5", weights=None, num_classes=5).eval()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "shuffle.safetensors"))
    loss = ClassifierLoss("torchvision:shufflenet_v2_x0_5", weights=str(tmp_path / "shuffle.safetensors"),
                          num_classes=5, target_class=1)
    images = rand_images(1, 32)
    torch.testing.assert_close(loss(images), F.cross_entropy(net(normalized(images)), torch.tensor([1]), reduction="none"))


def test_errors(tiny_net, tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such.pth"):
        ClassifierLoss("timm:test_efficientnet", weights=str(tmp_path / "no_such.pth"), num_classes=5, target_class=0)
    with pytest.raises(ValueError, match="needs weights="):
        ClassifierLoss("timm:test_efficientnet", target_class=0)
    with pytest.raises(ValueError, match="unknown timm model 'resnet_999'.*close matches"):
        ClassifierLoss("timm:resnet_999", weights="x.pth", target_class=0)
    with pytest.raises(ValueError, match="unknown torchvision model"):
        ClassifierLoss("torchvision:nonet", weights="x.pth", target_class=0)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        ClassifierLoss(str(tmp_path / "missing.pt"), target_class=0)
    torch.save(tiny_net.state_dict(), tmp_path / "state.pt")
    with pytest.raises(ValueError, match="not a TorchScript archive"):
        ClassifierLoss(str(tmp_path / "state.pt"), target_class=0)
    with pytest.raises(ValueError, match="integer class index"):
        ClassifierLoss(tiny_net, target_class=1.5)
