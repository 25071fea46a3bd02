"""Loading tiny pipeline folders through the user's code path, and the errors on bad input."""

import json
import shutil
import time

import pytest
import torch
from diffusers import DDIMScheduler

from doodl.models import StableDiffusion
from doodl.models.loading import resolve_dtype, resolve_pretrained
from doodl.models.tiny import save_tiny_pipeline

from .helpers import latents, quiet

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fake_hub_cache(cache, repo_id, source):
    """Lay out ``source`` as the Hugging Face cache would after downloading ``repo_id``."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(source, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return repo


@pytest.mark.parametrize("kind", ["sd", "sdv", "sdxl"])
def test_round_trip(kind, request):
    folder = request.getfixturevalue(f"{kind}_folder")
    backend = StableDiffusion(folder, dtype="float32", device="cpu")
    assert backend.is_sdxl == (kind == "sdxl")
    assert backend.prediction_type == ("v_prediction" if kind == "sdv" else "epsilon")
    assert isinstance(backend.scheduler, DDIMScheduler)
    saved = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    for key in ("beta_start", "beta_end", "beta_schedule", "set_alpha_to_one", "steps_offset", "prediction_type"):
        assert backend.scheduler.config[key] == saved[key]
    assert backend.scaling_factor == json.loads((folder / "vae" / "config.json").read_text())["scaling_factor"]
    assert backend.vae_scale_factor == 2 and backend.latent_shape(16, 24, 3) == (3, 4, 8, 12)
    # every weight is frozen, every network in eval mode, even after .train()
    backend.train()
    modules = [backend.unet, backend.vae, *backend.text_encoders]
    assert not any(p.requires_grad for m in modules for p in m.parameters())
    assert not any(m.training for m in modules)
    cond = backend.encode_prompt(["a cat", "a dog"])
    x = latents(backend, batch=2, dtype=torch.float32)
    eps = backend.eps_fn(cond)(x, 981)
    assert eps.shape == x.shape and eps.dtype == torch.float32 and torch.isfinite(eps).all()
    images = backend.decode(x)
    assert images.shape == (2, 3, 16, 16) and images.dtype == torch.float32
    z = backend.encode(images.clamp(0, 1))
    assert z.shape == x.shape and z.dtype == torch.float32


def test_dtypes(sd64, sd_folder):
    assert sd64.dtype == torch.float64 and sd64.vae.dtype == torch.float64
    assert all(e.dtype == torch.float64 for e in sd64.text_encoders)
    mixed = StableDiffusion(sd_folder, dtype=torch.float32, vae_dtype="bfloat16", device="cpu")
    assert mixed.unet.dtype == torch.float32 and mixed.vae.dtype == torch.bfloat16
    x = latents(mixed, dtype=torch.float64)
    assert mixed.decode(x).dtype == torch.float64  # results come back in the latents' dtype
    assert resolve_dtype(None, torch.device("cpu")) == torch.float32
    assert resolve_dtype(None, torch.device("cuda")) == torch.float16
    assert resolve_dtype("torch.bfloat16", torch.device("cpu")) == torch.bfloat16


def test_missing_tokenizer_is_built_from_open_clip(tmp_path, sd):
    folder = save_tiny_pipeline(tmp_path / "pipe", "sd", tokenizer=False)
    assert not (folder / "tokenizer").exists()
    with pytest.warns(UserWarning, match="open_clip"):
        backend = StableDiffusion(folder, device="cpu")
    assert backend.tokenizers[0].pad_token == "<|endoftext|>"  # OpenAI CLIP (quick_gelu) padding
    assert torch.equal(backend.encode_prompt("a cat").cond, sd.encode_prompt("a cat").cond)


def test_missing_tokenizer_padding_follows_the_text_encoder(tmp_path, sdv_folder):
    """An OpenCLIP text encoder (SD 2.x, gelu) pads with '!', as open_clip's tokenizer does."""
    openclip = tmp_path / "openclip"
    shutil.copytree(sdv_folder, openclip)
    shutil.rmtree(openclip / "tokenizer")
    backend = quiet(StableDiffusion, openclip, device="cpu")
    assert backend.tokenizers[0].pad_token == "!"
    backend = quiet(StableDiffusion, openclip, device="cpu", tokenizer_pad_token="<|endoftext|>")
    assert backend.tokenizers[0].pad_token == "<|endoftext|>"


def test_cached_hub_id_loads_offline(tmp_path, sd_folder, sd):
    fake_hub_cache(tmp_path, "tiny-owner/tiny-sd", sd_folder)
    backend = StableDiffusion("tiny-owner/tiny-sd", cache_dir=tmp_path, device="cpu")
    x = latents(sd, dtype=torch.float32)
    cond = sd.encode_prompt("a cat")
    assert torch.equal(backend.eps_fn(cond)(x, 501), sd.eps_fn(cond)(x, 501))


def _fast(fn, *args, **kwargs):
    start = time.monotonic()
    fn(*args, **kwargs)
    assert time.monotonic() - start < 5.0


def test_uncached_hub_id_offline_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError) as err:
        _fast(resolve_pretrained, "nobody-owner/not-cached-model", cache_dir=tmp_path)
    message = str(err.value)
    assert "nobody-owner/not-cached-model" in message and "not in the local Hugging Face cache" in message
    assert "HF_HUB_OFFLINE" in message and "local folder" in message
    # local_files_only=True forbids downloads whatever the environment says
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(FileNotFoundError, match="local folder"):
        _fast(StableDiffusion, "nobody-owner/not-cached-model", cache_dir=tmp_path, local_files_only=True, device="cpu")


def test_missing_folder_and_subfolders(tmp_path, sd_folder, sdxl_folder):
    with pytest.raises(FileNotFoundError, match="does not exist.*folder"):
        _fast(StableDiffusion, tmp_path / "nowhere", device="cpu")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _fast(StableDiffusion, "./relative/nowhere", device="cpu")
    with pytest.raises(FileNotFoundError, match="neither an existing folder nor a valid hub id"):
        _fast(StableDiffusion, "bad--name/x..y", device="cpu")
    for kind, source, sub, config in [
        ("sd", sd_folder, "vae", "config.json"), ("sd", sd_folder, "unet", "config.json"),
        ("sd", sd_folder, "scheduler", "scheduler_config.json"), ("sd", sd_folder, "text_encoder", "config.json"),
        ("sdxl", sdxl_folder, "text_encoder_2", "config.json"),
    ]:
        broken = tmp_path / f"{kind}-no-{sub}"
        shutil.copytree(source, broken)
        (broken / sub / config).unlink()
        with pytest.raises(FileNotFoundError, match=f"{sub} has no {config}.*save_pretrained"):
            _fast(StableDiffusion, broken, device="cpu")
        shutil.rmtree(broken / sub)
        if sub == "text_encoder_2":  # the UNet still asks for SDXL's second encoder
            with pytest.raises(FileNotFoundError, match="no text_encoder_2/ subfolder"):
                StableDiffusion(broken, device="cpu")
        else:
            with pytest.raises(FileNotFoundError, match=f"no {sub}/ subfolder"):
                StableDiffusion(broken, device="cpu")


def test_bad_arguments(tmp_path, sd_folder):
    with pytest.raises(ValueError, match="unknown dtype 'float8'.*float16"):
        StableDiffusion(sd_folder, dtype="float8")
    with pytest.raises(ValueError, match="not a model precision"):
        StableDiffusion(sd_folder, dtype=torch.int8)
    with pytest.raises(ValueError, match="not a torch device"):
        StableDiffusion(sd_folder, device="gpu0")
    single = tmp_path / "model.safetensors"
    single.write_bytes(b"")
    with pytest.raises(ValueError, match="is a file.*diffusers-format folder"):
        StableDiffusion(single)
    with pytest.raises(ValueError, match="folder path or a hub id"):
        StableDiffusion("")
    broken = tmp_path / "badjson"
    shutil.copytree(sd_folder, broken)
    (broken / "model_index.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        StableDiffusion(broken, device="cpu")
    with pytest.raises(ValueError, match="unknown kind"):
        save_tiny_pipeline(tmp_path / "x", "sd3")


def test_hub_patterns_select_what_loading_reads(sd_folder, sdxl_folder):
    """A hub download with these patterns gets every file of a saved pipeline, and no copies."""
    from fnmatch import fnmatch

    from doodl.models.loading import hub_patterns

    def wanted(path, variant=None):
        return any(fnmatch(path, p) for p in hub_patterns(variant))

    for folder in (sd_folder, sdxl_folder):
        files = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
        assert any(f.endswith(".safetensors") for f in files)
        assert all(wanted(f) for f in files), [f for f in files if not wanted(f)]
    for extra in ("unet/diffusion_pytorch_model.bin", "unet/diffusion_pytorch_model.fp16.safetensors",
                  "unet/diffusion_pytorch_model.non_ema.bin", "v1-5-pruned.ckpt", "safety_checker/model.safetensors",
                  "text_encoder/flax_model.msgpack"):
        assert not wanted(extra), extra
    assert wanted("unet/diffusion_pytorch_model.fp16.safetensors", "fp16")
    assert wanted("unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors", "fp16")
    assert not wanted("unet/diffusion_pytorch_model.safetensors", "fp16")


def test_missing_weights_file(tmp_path, sd_folder):
    for sub, name in [("unet", "diffusion_pytorch_model.safetensors"), ("text_encoder", "model.safetensors")]:
        broken = tmp_path / f"no-{sub}-weights"
        shutil.copytree(sd_folder, broken)
        (broken / sub / name).unlink()
        with pytest.raises(FileNotFoundError, match=f"could not load {sub}/.*safetensors"):
            StableDiffusion(broken, device="cpu")


def test_scheduler_config_of_another_class_becomes_ddim(tmp_path, sd_folder, sd):
    """SD 1.5 on the hub ships a PNDMScheduler config: the same betas give the DDIM chain."""
    from diffusers import PNDMScheduler

    folder = tmp_path / "pndm"
    shutil.copytree(sd_folder, folder)
    shutil.rmtree(folder / "scheduler")
    PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", set_alpha_to_one=False,
                  steps_offset=1, skip_prk_steps=True).save_pretrained(folder / "scheduler")
    backend = StableDiffusion(folder, device="cpu")
    assert isinstance(backend.scheduler, DDIMScheduler)
    torch.testing.assert_close(backend.scheduler.alphas_cumprod, sd.scheduler.alphas_cumprod, rtol=0, atol=0)
    assert backend.sampler(5).timesteps == sd.sampler(5).timesteps == [801, 601, 401, 201, 1]


def test_unsupported_prediction_type(tmp_path, sd_folder):
    folder = tmp_path / "sample"
    shutil.copytree(sd_folder, folder)
    path = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(path.read_text())
    config["prediction_type"] = "sample"
    path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="prediction_type 'sample' is not supported"):
        StableDiffusion(folder, device="cpu")


def test_from_components_without_a_folder(sd64):
    """Components built in memory go through the same backend (frozen on the way in)."""
    from doodl.models import PipelineParts
    from doodl.models.tiny import tiny_clip_text, tiny_scheduler, tiny_unet, tiny_vae

    unet, vae, text = tiny_unet().double(), tiny_vae().double(), tiny_clip_text(1).double()
    unet.requires_grad_(True)
    parts = PipelineParts(unet, vae, tiny_scheduler(), [text], sd64.tokenizers)
    backend = StableDiffusion.from_components(parts)
    assert not any(p.requires_grad for p in backend.unet.parameters())
    cond = sd64.encode_prompt("a cat")
    x = latents(sd64)
    # same seeds as the saved tiny folder: identical weights, identical eps
    torch.testing.assert_close(backend.eps_fn(cond)(x, 301), sd64.eps_fn(cond)(x, 301), rtol=0, atol=0)
    torch.testing.assert_close(backend.encode_prompt("a cat").cond, cond.cond, rtol=0, atol=0)
