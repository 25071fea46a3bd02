"""Editing a real image with ``doodl fit``: the item's "image" is encoded and EDICT-inverted over
the last ``edit_strength`` of the chain, and the optimization starts from the inverted latents
(the paper's aesthetic edit). Tiny random models, CPU, float64 latents."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from doodl.app.cli import main
from doodl.run.start import load_image, psnr

from ..conftest import one_torch_thread

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "tests" / "conf" / "tiny.yaml"
EDIT = ("--model.edit_strength=0.5", "--model.latent_dtype=float64", "--model.update.init_args.tied=false", "--model.update.init_args.renormalize=false")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    from doodl.models.tiny import save_tiny_pipeline

    return save_tiny_pipeline(tmp_path_factory.mktemp("edit_pipe") / "tiny-sd")


def write_png(path, seed=0, size=16):
    """A 16x16 RGB image: a colour gradient plus seeded noise (different seeds, different images)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, size)
    rgb = np.stack([np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size)), np.full((size, size), 90.0)], -1)
    rgb = np.clip(rgb + rng.normal(0, 40, rgb.shape), 0, 255).astype(np.uint8)
    Image.fromarray(rgb).save(path)
    return path


def prompts(tmp_path, image_name, prompt="a photograph"):
    path = tmp_path / "edits.jsonl"
    path.write_text(json.dumps({"prompt": prompt, "image": image_name, "seed": 0}) + "\n")
    return path


def fit(pipeline, root, prompt_file, *extra):
    cli = main(["fit", "-c", str(CONF), f"--model.model.init_args.pretrained={pipeline}",
                f"--trainer.default_root_dir={root}", f"--trainer.logger.init_args.save_dir={root}",
                f"--data.path={prompt_file}", "--data.prompts=null", *EDIT, *extra])
    return cli.trainer, cli.model


def test_edit_reports_inversion_psnr_and_round_trip_is_exact(pipeline, tmp_path):
    image_file = write_png(tmp_path / "photo.png", seed=0)
    trainer, model = fit(pipeline, tmp_path, prompts(tmp_path, "photo.png"))
    assert model.context.start_step == 2  # 4 steps, edit_strength 0.5: the last two are inverted

    rows = [json.loads(l) for l in (Path(trainer.log_dir) / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["iterations"] == 3
    reported = rows[0]["scores"]["inversion_psnr"]
    assert isinstance(reported, float) and np.isfinite(reported)
    (out,) = model.final_outputs
    assert out.scores["inversion_psnr"] == reported

    (item,) = trainer.datamodule.items
    assert Path(item["image"]).resolve() == image_file.resolve()
    st = model.states[item["id"]]
    assert st.x.dtype == torch.float64 and not torch.equal(st.x, st.y)  # untied pair, float64

    sd, sampler, h = model.model, model.context.sampler, model.hparams
    with torch.no_grad():
        x, y, extra = model.context.start(item)  # the unoptimized start: the inversion of the image
        assert extra["inversion_psnr"] == pytest.approx(reported, abs=1e-9)
        assert x.dtype == torch.float64 and not torch.equal(x, y)
        noise = sd.initial_noise(1, 16, 16, generator=0, dtype=torch.float64)
        assert (x - noise).abs().max() > 0.1, "the edit started from seeded noise, not from the image"

        image = load_image(image_file, 16, 16)
        z0 = sd.encode(image, dtype=torch.float64)
        vae_only = sd.decode(z0).clamp(0, 1)  # the best any inversion can do
        eps_fn = sd.eps_fn(sd.encode_prompt([item["prompt"]]), h.cfg_scale)
        x0, y0 = sampler.sample(eps_fn, x, y, start=model.context.start_step)
        torch.testing.assert_close(x0, z0, rtol=0, atol=1e-9)
        torch.testing.assert_close(y0, z0, rtol=0, atol=1e-9)
        round_trip = psnr(sd.decode(x0).clamp(0, 1), vae_only)

        other = sd.decode(sd.encode(load_image(write_png(tmp_path / "other.png", seed=1), 16, 16),
                                    dtype=torch.float64)).clamp(0, 1)
        baseline = psnr(other, vae_only)
    assert round_trip > 80.0, f"round trip PSNR {round_trip:.1f} dB vs the VAE's own reconstruction"
    assert baseline < 50.0 and round_trip > baseline + 40.0
    # the reported PSNR is against the input image: the VAE's own error, as the inversion adds none
    assert reported == pytest.approx(psnr(vae_only, image), abs=1e-4)


def test_unreadable_image_names_the_file(pipeline, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"this is not a PNG file\n" * 4)
    with pytest.raises(ValueError, match=r":1: image .*broken\.png does not decode \(UnidentifiedImageError"):
        fit(pipeline, tmp_path, prompts(tmp_path, "broken.png"), "--model.iterations=1")


def test_missing_image_is_refused_when_the_data_loads(pipeline, tmp_path):
    prompt_file = prompts(tmp_path, "nowhere/missing.png")
    with pytest.raises(ValueError, match=re.escape(f"{prompt_file}:1: image ") + r".*missing\.png does not exist"):
        fit(pipeline, tmp_path / "runs", prompt_file, "--model.iterations=1")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.ckpt"))
