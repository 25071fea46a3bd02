"""open_clip loading (user paths and errors), spherical distance, CLIP text and image-similarity losses."""

import math
import time

import pytest
import torch
import torch.nn.functional as F

from doodl.guidance import CLIPTextLoss, Cutouts, ImageSimilarityLoss, OpenCLIP, spherical_distance

from .conftest import rand_images


def test_spherical_distance_is_half_the_squared_angle():
    g = torch.Generator().manual_seed(0)
    u = F.normalize(torch.randn(6, 32, generator=g, dtype=torch.float64), dim=-1)
    v = F.normalize(torch.randn(6, 32, generator=g, dtype=torch.float64), dim=-1)
    angle = torch.arccos((u * v).sum(-1))
    torch.testing.assert_close(spherical_distance(u, v), angle**2 / 2)
    assert spherical_distance(u, u).abs().max() < 1e-12
    torch.testing.assert_close(spherical_distance(u, -u), torch.full((6,), math.pi**2 / 2, dtype=torch.float64))


def test_checkpoint_loads_through_the_user_path(clip, tiny_clip_name, tiny_clip_ckpt):
    import open_clip

    state = torch.load(tiny_clip_ckpt, weights_only=True)
    for key, value in clip.model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert clip.image_size == (32, 32) and clip.embed_dim == 32
    torch.testing.assert_close(clip.mean.flatten(), torch.tensor(open_clip.OPENAI_DATASET_MEAN))
    assert all(not p.requires_grad for p in clip.parameters()) and not clip.model.training
    clip.train()
    assert not clip.model.training


def test_safetensors_checkpoint_and_mean_override(tiny_clip_name, tiny_clip_ckpt, tmp_path):
    from safetensors.torch import save_file

    state = torch.load(tiny_clip_ckpt, weights_only=True)
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    clip = OpenCLIP(tiny_clip_name, str(path), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert torch.equal(clip.model.visual.conv1.weight, state["visual.conv1.weight"])
    torch.testing.assert_close(clip.std.flatten(), torch.full((3,), 0.5))


def test_embeddings_normalized_and_use_normalization(clip):
    x = rand_images(3)
    e = clip.embed_images(x)
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(3))
    direct = F.normalize(clip.model.encode_image((x - clip.mean) / clip.std), dim=-1)
    torch.testing.assert_close(e, direct)
    t = clip.embed_text(["a cat", "a dog"])
    torch.testing.assert_close(t.norm(dim=-1), torch.ones(2))
    with pytest.raises(ValueError, match="must be"):
        clip.embed_images(rand_images(1, 48))


# ---- errors -------------------------------------------------------------------------------------


def test_unknown_model_lists_known_ones():
    with pytest.raises(ValueError, match="unknown open_clip model 'ViT-Q-99'.*ViT-B-32"):
        OpenCLIP("ViT-Q-99", "laion2b_s34b_b79k")


def test_tag_of_another_model_lists_valid_tags():
    with pytest.raises(ValueError, match="not a pretrained tag of 'ViT-B-32'.*ViT-g-14.*laion2b_s34b_b79k"):
        OpenCLIP("ViT-B-32", "laion2b_s12b_b42k")  # a ViT-g-14 tag


def test_missing_checkpoint_file(tiny_clip_name, tmp_path):
    missing = str(tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        OpenCLIP(tiny_clip_name, missing)


def test_pretrained_required(tiny_clip_name):
    with pytest.raises(ValueError, match="pretrained is required"):
        OpenCLIP(tiny_clip_name, None)


def test_offline_uncached_tag_fails_at_once(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE=1.*local checkpoint file"):
        OpenCLIP("ViT-B-32", "laion2b_s34b_b79k", cache_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE=1"):
        OpenCLIP("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", None)
    assert time.perf_counter() - start < 5


# ---- CLIP text loss -----------------------------------------------------------------------------


def manual_distances(clip, images, text, seed, n):
    crops = Cutouts(n=n, seed=seed).bind(clip.image_size)(images)
    embeds = F.normalize(clip.model.encode_image(((crops.flatten(0, 1) - clip.mean) / clip.std)), dim=-1)
    v = F.normalize(clip.model.encode_text(clip.tokenizer([text])), dim=-1)
    cos = (embeds.view(images.shape[0], n, -1) * v).sum(-1).clamp(-1, 1)
    return torch.arccos(cos) ** 2 / 2  # (B, n)


@pytest.mark.parametrize("reduction", ["min", "mean"])
def test_text_loss_matches_direct_formula(clip, reduction):
    images = rand_images(2, 48, seed=1)
    loss = CLIPTextLoss(clip, prompt="a cat", cutouts=Cutouts(n=5, seed=3), reduction=reduction, weight=2.0)
    d = manual_distances(clip, images, "a cat", seed=3, n=5)
    expected = d.min(1).values if reduction == "min" else d.mean(1)
    torch.testing.assert_close(loss(images), 2.0 * expected, atol=1e-5, rtol=1e-4)


def test_min_below_mean(clip):
    images = rand_images(2, 48)
    low = CLIPTextLoss(clip, "a cat", cutouts=Cutouts(n=8, seed=0), reduction="min")(images)
    mean = CLIPTextLoss(clip, "a cat", cutouts=Cutouts(n=8, seed=0), reduction="mean")(images)
    assert (low < mean).all()


def test_per_item_prompts(clip):
    images = rand_images(1, 32).expand(2, -1, -1, -1)
    items = [{"prompt": "a cat"}, {"prompt": "a red car"}]
    out = CLIPTextLoss(clip, cutouts=None)(images, items)
    assert out[0] != out[1]
    fixed = CLIPTextLoss(clip, prompt="a red car", cutouts=None)(images)
    torch.testing.assert_close(out[1], fixed[1])
    with pytest.raises(ValueError, match="'prompt'"):
        CLIPTextLoss(clip)(images)
    with pytest.raises(ValueError, match=r"items\[1\] has no 'prompt'"):
        CLIPTextLoss(clip)(images, [{"prompt": "x"}, {"target_class": 1}])
    with pytest.raises(ValueError, match="2 images"):
        CLIPTextLoss(clip)(images, [{"prompt": "x"}])


def test_text_score_is_whole_image_cosine(clip):
    images = rand_images(2, 32)
    score = CLIPTextLoss(clip, "a cat").score(images)
    u = clip.embed_images(clip.resize(images))
    torch.testing.assert_close(score, (u * clip.embed_text(["a cat"])).sum(-1))
    assert score.abs().max() <= 1


def test_bad_reduction(clip):
    with pytest.raises(ValueError, match="'min' or 'mean'"):
        CLIPTextLoss(clip, "a cat", reduction="max")


# ---- image similarity ---------------------------------------------------------------------------


def save_png(path, seed):
    from PIL import Image

    array = (rand_images(1, 40, seed=seed)[0].permute(1, 2, 0) * 255).round().byte().numpy()
    Image.fromarray(array).save(path)
    return str(path)


def test_reference_target_is_renormalized_mean(clip, tmp_path):
    from doodl.guidance import load_image

    paths = [save_png(tmp_path / f"ref{i}.png", i) for i in range(3)]
    loss = ImageSimilarityLoss(clip, reference_images=paths, cutouts=None)
    refs = torch.stack([clip.resize(load_image(p)[None])[0] for p in paths])
    mean = F.normalize(clip.embed_images(refs), dim=-1).mean(0)
    torch.testing.assert_close(loss.fixed_target, mean / mean.norm())
    images = rand_images(2, 32)
    u = clip.embed_images(F.adaptive_avg_pool2d(images, 32))
    torch.testing.assert_close(loss(images), torch.arccos((u * loss.fixed_target).sum(-1)) ** 2 / 2, atol=1e-5, rtol=1e-4)
    # tensors work the same as files
    tensors = torch.stack([load_image(p) for p in paths])
    torch.testing.assert_close(ImageSimilarityLoss(clip, reference_images=tensors).fixed_target, loss.fixed_target)


def test_per_item_references_differ(clip, tmp_path):
    a, b = save_png(tmp_path / "a.png", 1), save_png(tmp_path / "b.png", 2)
    images = rand_images(1, 32).expand(2, -1, -1, -1)
    loss = ImageSimilarityLoss(clip, cutouts=None)
    out = loss(images, [{"reference_images": [a]}, {"reference_images": [b]}])
    assert out[0] != out[1]
    with pytest.raises(ValueError, match="'reference_images'"):
        loss(images)


def test_unreadable_and_missing_reference_images(clip, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="broken.png"):
        ImageSimilarityLoss(clip, reference_images=[str(bad)])
    with pytest.raises(FileNotFoundError, match="missing.png"):
        ImageSimilarityLoss(clip, reference_images=[str(tmp_path / "missing.png")])
    with pytest.raises(ValueError, match="empty"):
        ImageSimilarityLoss(clip, reference_images=[])


def test_cached_tag_passes_offline_and_quickgelu_tags_build_with_it(monkeypatch, tmp_path):
    from doodl.guidance.clip_model import resolve_pretrained

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = tmp_path / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "open_clip_model.safetensors").write_bytes(b"")
    assert resolve_pretrained("ViT-B-32", "laion2b_s34b_b79k", cache_dir=str(tmp_path)) == {}

    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    # only inspects the tag table: no download happens here
    assert resolve_pretrained("ViT-B-32", "openai") == {"force_quick_gelu": True}
    assert resolve_pretrained("ViT-B-32-quickgelu", "openai") == {}
