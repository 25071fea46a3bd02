"""HPSv2: a tiny random open_clip model saved as HPSv2 publishes its checkpoint ({'state_dict': ...}),
loaded back through the loss; score against open_clip's own forward on torchvision's resize + pad,
gradients against float64 finite differences."""

import copy

import pytest
import torch

from doodl.guidance import Cutouts, GuidanceLoss, HPSv2Loss
from doodl.guidance.hpsv2 import resize_longest_and_pad

from .conftest import rand_images

PROMPTS = ["a red cube", "two dogs on a beach"]


@pytest.fixture(scope="module")
def tiny_model(tiny_clip_name):
    import open_clip

    torch.manual_seed(1)
    return open_clip.create_model(tiny_clip_name).eval()


@pytest.fixture(scope="module")
def hps_ckpt(tiny_model, tmp_path_factory):
    """The checkpoint layout HPSv2 publishes: torch.save({'state_dict': ...}), here with DDP's 'module.' prefix."""
    path = tmp_path_factory.mktemp("hps") / "HPS_v2_tiny.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in tiny_model.state_dict().items()}}, path)
    return str(path)


@pytest.fixture(scope="module")
def hps(tiny_clip_name, hps_ckpt):
    return HPSv2Loss(hps_ckpt, model_name=tiny_clip_name)


def reference_scores(model, images, prompts, tiny_clip_name):
    """HPSv2 as its authors define it: the longest side resized and padded (torchvision), OpenAI mean/std,
    open_clip's forward (unit-norm features), the diagonal of image_features @ text_features.T."""
    import open_clip
    import torchvision.transforms.v2.functional as TF

    size = model.visual.image_size[0] if isinstance(model.visual.image_size, tuple) else model.visual.image_size
    height, width = images.shape[-2:]
    scale = size / max(height, width)
    new = [round(height * scale), round(width * scale)]
    x = TF.resize(images, new, interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    pad_h, pad_w = size - new[0], size - new[1]
    x = TF.pad(x, [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=0)
    x = TF.normalize(x, list(open_clip.OPENAI_DATASET_MEAN), list(open_clip.OPENAI_DATASET_STD))
    tokens = open_clip.get_tokenizer(tiny_clip_name)(prompts)
    with torch.no_grad():
        image_features, text_features, _ = model(x, tokens)
    return (image_features @ text_features.T).diagonal()


def test_interface_and_frozen(hps):
    assert isinstance(hps, GuidanceLoss) and hps.score_direction == "max" and hps.item_keys == ("prompt",)
    assert not any(p.requires_grad for p in hps.parameters()) and not hps.train().training
    assert hps.check_item({}) == ["no 'prompt': give the item a 'prompt', or set a fixed prompt on the loss"]
    assert hps.check_item({"prompt": "a"}) == [] and hps.check_item({"prompt": None}) != []


@pytest.mark.parametrize("size", [(32, 32), (40, 56), (61, 37), (20, 20)])
def test_score_is_cosine_on_hpsv2_preprocessing(hps, tiny_model, tiny_clip_name, size):
    images = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(2))
    items = [{"prompt": p} for p in PROMPTS]
    expected = reference_scores(tiny_model, images, PROMPTS, tiny_clip_name)
    score = hps.score(images, items)
    torch.testing.assert_close(score, expected, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(hps(images, items), -score)  # no crops: the loss is -weight * score
    assert ((score >= -1) & (score <= 1)).all()


def test_pad_geometry():
    x = torch.ones(1, 3, 10, 20)
    out = resize_longest_and_pad(x, (8, 8))  # 10x20 -> 4x8, two rows of black above and below
    assert out.shape == (1, 3, 8, 8)
    assert out[..., :2, :].abs().max() == 0 and out[..., 6:, :].abs().max() == 0
    torch.testing.assert_close(out[..., 2:6, :], torch.ones(1, 3, 4, 8))
    odd = resize_longest_and_pad(x[..., :7, :8], (8, 8))  # 7x8 fits as it is: one row of padding, at the bottom
    assert torch.equal(odd[..., :7, :], x[..., :7, :8]) and torch.equal(odd[..., 7, :], torch.zeros(1, 3, 8))


def test_fixed_prompt_weight_half_weights_and_crop_mode(tiny_model, tiny_clip_name, tmp_path):
    half = tmp_path / "HPS_v2_compressed.pt"  # fp16 weights, no prefix
    torch.save({"state_dict": {k: v.half() for k, v in tiny_model.state_dict().items()}}, half)
    loss = HPSv2Loss(str(half), model_name=tiny_clip_name, prompt=PROMPTS[0], weight=2.0)
    assert loss.item_keys == () and loss.check_item({}) == []
    images = rand_images(1, 32, seed=4)
    rounded = copy.deepcopy(tiny_model).half().float()
    torch.testing.assert_close(loss.score(images), reference_scores(rounded, images, PROMPTS[:1], tiny_clip_name),
                               atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(loss(images), -2.0 * loss.score(images))
    crop = HPSv2Loss(str(half), model_name=tiny_clip_name, prompt=PROMPTS[0], resize="crop")
    wide = rand_images(1, 32, seed=5).repeat(1, 1, 1, 2)  # 32x64: crop and pad differ
    expected = (crop.clip.embed_images(crop.clip.resize(wide)) * crop.clip.embed_text(PROMPTS[:1])).sum(-1)
    torch.testing.assert_close(crop.score(wide), expected)
    assert not torch.allclose(crop.score(wide), loss.score(wide))


@pytest.mark.parametrize("cutouts", [None, 3])
def test_gradient_matches_float64_finite_differences(hps, cutouts):
    loss = copy.deepcopy(hps)
    loss.clip.model.double()
    loss._text_cache.clear()
    if cutouts:
        loss.cutouts = Cutouts(n=cutouts, power=0.3).bind(loss.clip.image_size)
    x = rand_images(1, 40, seed=6).double()[..., :36].contiguous().requires_grad_(True)  # 40x36: resize and pad

    def f(images):  # the same crops at every call: a fresh generator with the same seed
        return loss(images, [{"prompt": PROMPTS[1], "generator": torch.Generator().manual_seed(9)}]).sum()

    (grad,) = torch.autograd.grad(f(x), x)
    assert grad.abs().sum() > 0
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        v = torch.randn(x.shape, generator=g, dtype=torch.float64)
        h = 1e-5
        with torch.no_grad():
            fd = (f(x + h * v) - f(x - h * v)) / (2 * h)
        assert (grad * v).sum().item() == pytest.approx(fd.item(), rel=1e-6, abs=1e-9)


def test_bad_checkpoints(tiny_clip_name, tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="HPSv2 checkpoint .*none.pt does not exist: pass an existing file"):
        HPSv2Loss(str(tmp_path / "none.pt"), model_name=tiny_clip_name)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="HPSv2 checkpoint 'HPS_v2.1_compressed.pt' of hub repo 'nobody-owner/hps' "
                                                "is not in the local Hugging Face cache"):
        HPSv2Loss("nobody-owner/hps/HPS_v2.1_compressed.pt", model_name=tiny_clip_name, cache_dir=str(tmp_path))
    torch.save({"state_dict": {"visual.proj": torch.zeros(3)}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="does not fit open_clip 'doodl-tiny-clip'.*model_name"):
        HPSv2Loss(str(tmp_path / "other.pt"), model_name=tiny_clip_name)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="could not be read"):
        HPSv2Loss(str(tmp_path / "junk.pt"), model_name=tiny_clip_name)
    torch.save({"state_dict": {}, "opt": object()}, tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match="could not be read.*tensors only"):
        HPSv2Loss(str(tmp_path / "pickled.pt"), model_name=tiny_clip_name)
    with pytest.raises(ValueError, match="resize must be 'pad'"):
        HPSv2Loss(str(tmp_path / "other.pt"), model_name=tiny_clip_name, resize="stretch")
