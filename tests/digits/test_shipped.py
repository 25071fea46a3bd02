"""The weights shipped in doodl/digits/weights: present, loadable offline, and as good as the
manifest says on the held-out split (recomputed here)."""

import hashlib
import os

import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from doodl.digits import assets, data
from doodl.digits.train_guidance import clip_image_embeddings, clip_zero_shot, pearson

TOL = 0.01  # a different CPU may flip an argmax or two


@pytest.fixture(scope="module")
def manifest():
    return assets.manifest()


@pytest.fixture(scope="module")
def test_set():
    return assets.test_set()


def test_manifest_is_a_full_run_and_files_match(manifest):
    assert manifest["quick"] is False
    total = 0
    for name, info in manifest["files"].items():
        path = assets.WEIGHTS / name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == info["sha256"], name
        total += info["bytes"]
    assert total <= 10 * 2**20


def test_split_is_the_documented_rule_and_disjoint(manifest):
    split = manifest["data"]["splits"]
    assert split == data.split_indices()
    assert not set(split["A"]) & set(split["B"])
    assert not (set(split["A"]) | set(split["B"])) & set(split["test"])


@pytest.mark.parametrize("name", ["classifier", "judge"])
def test_held_out_accuracy_matches_manifest(name, manifest, test_set):
    model = assets.load_classifier() if name == "classifier" else assets.load_judge()
    x, y = test_set
    with torch.no_grad():
        acc = (model(x).argmax(-1) == y).float().mean().item()
    assert acc == pytest.approx(manifest["scores"][f"{name}_test_accuracy"], abs=TOL)
    assert acc > 0.9


def test_clip_and_scorer_match_manifest(manifest, test_set):
    model, tokenizer = assets.load_clip()
    x, y = test_set
    assert clip_zero_shot(model, tokenizer, x, y) == pytest.approx(
        manifest["scores"]["clip_zero_shot_test_accuracy"], abs=TOL)
    bold = manifest["data"]["boldness"]
    digits = data.load()
    target = data.boldness(digits.ink[torch.tensor(manifest["data"]["splits"]["test"])], bold["lo"], bold["hi"])
    with torch.no_grad():
        r = pearson(assets.load_scorer()(clip_image_embeddings(model, x)), target)
    assert r == pytest.approx(manifest["scores"]["scorer_test_pearson"], abs=TOL)


def test_pipeline_loads_offline_like_stable_diffusion():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    pipe = StableDiffusionPipeline.from_pretrained(assets.pipeline_path(), local_files_only=True)
    assert isinstance(pipe.unet, UNet2DConditionModel) and isinstance(pipe.vae, AutoencoderKL)
    assert isinstance(pipe.text_encoder, CLIPTextModel) and isinstance(pipe.tokenizer, CLIPTokenizer)
    assert isinstance(pipe.scheduler, DDIMScheduler)
    cfg = pipe.scheduler.config
    assert (cfg.beta_schedule, cfg.beta_start, cfg.beta_end, cfg.num_train_timesteps) == ("scaled_linear", 0.00085, 0.012, 1000)
    assert not cfg.clip_sample and not cfg.set_alpha_to_one and cfg.steps_offset == 1
    assert sum(p.numel() for p in pipe.unet.parameters()) < 1_000_000
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    assert pipe.text_encoder.config.vocab_size == len(pipe.tokenizer)
    assert pipe.vae.config.latent_channels == 4 and pipe.vae.config.scaling_factor != 0.18215
    pipe.set_progress_bar_config(disable=True)
    out = pipe("a handwritten digit three", num_inference_steps=3, generator=torch.Generator().manual_seed(0),
               output_type="pt").images
    assert out.shape == (1, 3, 16, 16) and 0 <= out.min() and out.max() <= 1


def test_generator_meets_the_target(manifest):
    """The recorded plain-DDIM sample accuracy on digits 0-7 (judge) is at least 85%."""
    assert manifest["evaluation"]["generator_samples_per_digit"] >= 50
    assert manifest["scores"]["generator_judge_accuracy_0_7"] >= 0.85


@pytest.mark.slow
def test_generator_accuracy_recomputes(manifest):
    """Re-runs the manifest's plain-DDIM evaluation (same prompts, seed, steps, scale) with the judge."""
    from doodl.digits.train import GUIDANCE_SCALE
    from doodl.digits.train_generator import sample

    ev = manifest["evaluation"]
    target = torch.arange(10).repeat_interleave(ev["generator_samples_per_digit"])
    images = sample(assets.load_pipeline(), [data.caption(int(d)) for d in target], manifest["seeds"]["samples"],
                    ev["ddim_steps"], ev["guidance_scale"])
    assert ev["guidance_scale"] == GUIDANCE_SCALE
    with torch.no_grad():
        judged = assets.load_judge()(images).argmax(-1)
    seen = target < 8
    acc = (judged[seen] == target[seen]).float().mean().item()
    assert acc == pytest.approx(manifest["scores"]["generator_judge_accuracy_0_7"], abs=0.02)
