"""PickScore: a tiny random transformers CLIPModel + CLIPProcessor saved with save_pretrained, loaded
back through the loss; preprocessing against the processor, score against CLIPModel's own logits,
gradients against float64 finite differences."""

import copy

import pytest
import torch

from doodl.guidance import GuidanceLoss, PickScoreLoss
from doodl.guidance.pickscore import CLIPPreprocess

from .conftest import rand_images

PROMPTS = ["a red cube", "two dogs on a beach"]


@pytest.fixture(scope="module")
def pick_folders(tmp_path_factory):
    """(model folder, processor folder): a random tiny CLIP and a 32 px CLIP processor, as save_pretrained writes them."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from doodl.models.tokenizer import clip_tokenizer_from_open_clip

    root = tmp_path_factory.mktemp("pickscore")
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2),
        projection_dim=16, logit_scale_init_value=3.0,
    )
    CLIPModel(config).eval().save_pretrained(root / "model")
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=clip_tokenizer_from_open_clip()).save_pretrained(root / "proc")
    return root / "model", root / "proc"


@pytest.fixture(scope="module")
def pick(pick_folders):
    return PickScoreLoss(str(pick_folders[0]), str(pick_folders[1]))


def reference_scores(pick_folders, images, prompts):
    """PickScore as its authors compute it: the processor's pixel values and tokens, CLIPModel's logits_per_image."""
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(pick_folders[0]).eval()
    proc = CLIPProcessor.from_pretrained(pick_folders[1])
    pixels = proc.image_processor(images=list(images), do_rescale=False, return_tensors="pt")["pixel_values"]
    tokens = proc.tokenizer(prompts, padding=True, truncation=True, max_length=77, return_tensors="pt")
    with torch.no_grad():
        logits = model(pixel_values=pixels, **tokens).logits_per_image  # exp(logit_scale) * cos
    return pixels, logits.diagonal()


def test_interface_and_frozen(pick):
    assert isinstance(pick, GuidanceLoss) and pick.score_direction == "max" and pick.item_keys == ("prompt",)
    assert not any(p.requires_grad for p in pick.parameters()) and not pick.train().training
    assert pick.image_size == (32, 32)
    assert pick.check_item({"prompt": "a cat"}) == []
    assert pick.check_item({}) == ["no 'prompt': give the item a 'prompt', or set a fixed prompt on the loss"]
    assert pick.check_item({"prompt": 3}) == ["prompt must be a string, got 3"]


@pytest.mark.parametrize("size", [(32, 32), (40, 56), (61, 37)])
def test_preprocessing_is_the_processors(pick, pick_folders, size):
    images = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1))
    expected, _ = reference_scores(pick_folders, images, PROMPTS)
    torch.testing.assert_close(pick.preprocess(images), expected, atol=2e-6, rtol=0)


def test_score_is_temperature_times_cosine(pick, pick_folders):
    images = rand_images(2, 48, seed=3)
    _, expected = reference_scores(pick_folders, images, PROMPTS)
    items = [{"prompt": p} for p in PROMPTS]
    score = pick.score(images, items)
    torch.testing.assert_close(score, expected, atol=1e-5, rtol=1e-5)
    assert pick.temperature.item() == pytest.approx(torch.tensor(3.0).exp().item())
    # the loss without crops is -weight * score, with a fixed prompt as with items
    fixed = PickScoreLoss(str(pick_folders[0]), str(pick_folders[1]), prompt=PROMPTS[0], weight=0.5)
    torch.testing.assert_close(fixed(images[:1]), -0.5 * score[:1])
    torch.testing.assert_close(pick(images, items), -score)


def test_processor_none_reads_the_model_folder(pick_folders, tmp_path):
    import shutil

    both = tmp_path / "both"
    shutil.copytree(pick_folders[0], both)
    for f in pick_folders[1].iterdir():
        shutil.copy(f, both / f.name)
    alone = PickScoreLoss(str(both), processor=None)
    images = rand_images(1, 32)
    torch.testing.assert_close(alone.score(images, [{"prompt": "x"}]),
                               PickScoreLoss(str(pick_folders[0]), str(pick_folders[1])).score(images, [{"prompt": "x"}]))
    with pytest.raises(FileNotFoundError, match="cannot load a CLIPProcessor.*processor=<its folder>"):
        PickScoreLoss(str(pick_folders[0]), processor=None)


def float64_copy(pick):
    loss = copy.deepcopy(pick)
    loss.model.double()
    loss._text_cache.clear()
    return loss


@pytest.mark.parametrize("cutouts", [None, 3])
def test_gradient_matches_float64_finite_differences(pick, cutouts):
    loss = float64_copy(pick)
    if cutouts:
        from doodl.guidance import Cutouts

        loss.cutouts = Cutouts(n=cutouts, power=0.3).bind(loss.image_size)
    x = rand_images(1, 40, seed=5).double().requires_grad_(True)

    def f(images):  # the same crops at every call: a fresh generator with the same seed
        return loss(images, [{"prompt": PROMPTS[1], "generator": torch.Generator().manual_seed(9)}]).sum()

    (grad,) = torch.autograd.grad(f(x), x)
    assert grad.abs().sum() > 0
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        v = torch.randn(x.shape, generator=g, dtype=torch.float64)
        h = 1e-5
        with torch.no_grad():
            fd = (f(x + h * v) - f(x - h * v)) / (2 * h)
        assert (grad * v).sum().item() == pytest.approx(fd.item(), rel=1e-6, abs=1e-9)


def test_float32_gradient_matches_float64(pick):
    x = rand_images(2, 40, seed=6)
    items = [{"prompt": p} for p in PROMPTS]
    x32 = x.clone().requires_grad_(True)
    (g32,) = torch.autograd.grad(pick(x32, items).sum(), x32)
    x64 = x.double().requires_grad_(True)
    (g64,) = torch.autograd.grad(float64_copy(pick)(x64, items).sum(), x64)
    torch.testing.assert_close(g32.double(), g64, rtol=1e-3, atol=1e-3 * g64.abs().max().item())


def test_bad_input(pick_folders, tmp_path):
    model, proc = map(str, pick_folders)
    with pytest.raises(FileNotFoundError, match="PickScore model folder .*nowhere does not exist"):
        PickScoreLoss(str(tmp_path / "nowhere"), proc)
    with pytest.raises(FileNotFoundError, match="hub model 'nobody-owner/no-pickscore' is not in the local Hugging Face cache"):
        PickScoreLoss("nobody-owner/no-pickscore", proc, cache_dir=str(tmp_path), local_files_only=True)
    with pytest.raises(FileNotFoundError, match="cannot load a CLIPModel"):
        PickScoreLoss(str(tmp_path), proc)
    with pytest.raises(ValueError, match="dtype must be a floating torch dtype"):
        PickScoreLoss(model, proc, dtype="int8")
    with pytest.raises(ValueError, match="prompt must be a string"):
        PickScoreLoss(model, proc, prompt=3)
    from transformers import CLIPImageProcessor

    with pytest.raises(ValueError, match="resample=1 is not supported"):
        CLIPPreprocess(CLIPImageProcessor(resample=1))
    loss = PickScoreLoss(model, proc)
    with pytest.raises(ValueError, match=r"items\[0\] has no 'prompt'"):
        loss(rand_images(1, 32), [{}])
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        loss(torch.rand(3, 32, 32), [{"prompt": "x"}])
