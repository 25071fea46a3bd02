"""The SD3 / SD3.5 backend on tiny random pipelines written by diffusers' save_pretrained and
loaded back through the public path, checked against diffusers' own StableDiffusion3Pipeline."""

import json
import shutil

import pytest
import torch

import doodl
from doodl.models import SD3
from doodl.models.tiny_flow import save_tiny_flow_pipeline

from .helpers import quiet

SEQ = 16  # T5 tokens (the pipeline's default is 256; tiny models, short prompts)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd3")
    return {k: quiet(save_tiny_flow_pipeline, root / k, k) for k in ("sd3", "sd3-no-t5", "sd3.5")}


@pytest.fixture(scope="module")
def sd3(folders):
    return quiet(SD3, folders["sd3"], dtype="float64", device="cpu", max_sequence_length=SEQ)


def pipeline(folder):
    from diffusers import StableDiffusion3Pipeline

    no_t5 = {} if (folder / "text_encoder_3").is_dir() else {"text_encoder_3": None, "tokenizer_3": None}
    return quiet(StableDiffusion3Pipeline.from_pretrained, folder, torch_dtype=torch.float64, local_files_only=True,
                 **no_t5)


def test_encode_prompt_matches_diffusers(sd3, folders):
    pipe = pipeline(folders["sd3"])
    ref = pipe.encode_prompt(["a red cat", "two dogs"], None, None, device="cpu", do_classifier_free_guidance=True,
                             max_sequence_length=SEQ)
    c = sd3.encode_prompt(["a red cat", "two dogs"])
    for mine, theirs in zip((c.cond, c.uncond, c.pooled, c.uncond_pooled), ref):  # float64: rounding apart
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind,scale", [("sd3", 5.0), ("sd3-no-t5", 1.0), ("sd3.5", 4.5)])
def test_first_half_step_is_the_pipelines_step(folders, kind, scale):
    """One step of diffusers' pipeline (CFG, shift, timesteps, Euler step) from x_T equals the
    first half-step of the EDICT chain from (x_T, x_T): x1 = x_T + b * v(x_T)."""
    model = quiet(SD3, folders[kind], dtype="float64", device="cpu", max_sequence_length=SEQ)
    pipe = pipeline(folders[kind])
    xT = model.initial_noise(1, 16, 16, generator=0, dtype=torch.float64)
    for steps in (1, 3):
        sampler = model.sampler(steps, height=16, width=16)
        ref = pipe("a cat", num_inference_steps=1 if steps == 1 else steps, height=16, width=16, latents=xT.clone(),
                   guidance_scale=scale, output_type="latent", max_sequence_length=SEQ,
                   callback_on_step_end=_stop_after_first, callback_on_step_end_tensor_inputs=["latents"]).images
        v_fn = model.eps_fn(model.encode_prompt("a cat"), scale)
        s = sampler.steps[0]
        x1 = xT + s.b * v_fn(xT, s.t)
        torch.testing.assert_close(x1, _FIRST.pop(), rtol=1e-6, atol=1e-6)
        if steps == 1:
            torch.testing.assert_close(x1, ref, rtol=1e-6, atol=1e-6)


_FIRST = []


def _stop_after_first(pipe, i, t, kwargs):
    if i == 0:
        _FIRST.append(kwargs["latents"].clone())
    return kwargs


def test_decode_uses_scaling_and_shift(sd3):
    z = torch.randn(1, 4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sf, shift = sd3.vae.config.scaling_factor, sd3.vae.config.shift_factor
    assert shift != 0
    want = (sd3.vae.decode(z / sf + shift).sample + 1) / 2
    torch.testing.assert_close(sd3.decode(z), want)
    images = sd3.decode(z).clamp(0, 1)
    mean = sd3.vae.encode(images * 2 - 1).latent_dist.mean
    torch.testing.assert_close(sd3.encode(images, dtype=torch.float64), (mean - shift) * sf)


def test_transformer_calls_per_step(sd3):
    """CFG in one batched call: 2 calls of batch 2N per step forward, 2 more per step backward."""
    calls = []
    hook = sd3.transformer.register_forward_pre_hook(
        lambda m, args, kwargs: calls.append(kwargs["hidden_states"].shape[0]), with_kwargs=True)
    try:
        T, n = 4, 2
        sampler = sd3.sampler(T, height=16, width=16)
        v_fn = sd3.eps_fn(sd3.encode_prompt(["a", "b"]), 5.0)
        xT = sd3.initial_noise(n, 16, 16, generator=0, dtype=torch.float64).requires_grad_(True)
        x0, y0 = doodl.sample_with_grad(sampler, v_fn, xT, xT, mode="invert")
        assert calls == [2 * n] * (2 * T)
        (x0.sum() + y0.sum()).backward()
        assert calls == [2 * n] * (4 * T)
        calls.clear()
        sd3.eps_fn(sd3.encode_prompt(["a", "b"]), None)(xT.detach(), 500.0)
        assert calls == [n]  # no CFG: the conditional branch only
    finally:
        hook.remove()


def test_mu_for_dynamic_shifting(sd3):
    """SD3's configs shift statically (mu None); a config with dynamic shifting gets the pipeline's mu."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

    assert sd3.mu(16, 16) is None
    saved = sd3.scheduler
    try:
        sd3.scheduler = FlowMatchEulerDiscreteScheduler.from_config(saved.config, use_dynamic_shifting=True)
        c = sd3.scheduler.config
        assert sd3.mu(32, 16) == pytest.approx(calculate_shift(8 * 4, c.base_image_seq_len, c.max_image_seq_len,
                                                               c.base_shift, c.max_shift))
        assert sd3.sampler(4, height=32, width=16).steps[1].sigma != sd3.sampler(4, height=64, width=64).steps[1].sigma
    finally:
        sd3.scheduler = saved


def test_bad_input(sd3, folders, tmp_path):
    with pytest.raises(ValueError, match="multiples of 4"):
        sd3.latent_shape(18, 16)
    with pytest.raises(ValueError, match="patch packing"):
        sd3.eps_fn(sd3.encode_prompt("a"), 5.0)(torch.zeros(1, 4, 7, 8, dtype=torch.float64), 500.0)
    with pytest.raises(ValueError, match="channels"):
        sd3.eps_fn(sd3.encode_prompt("a"), 5.0)(torch.zeros(1, 3, 8, 8, dtype=torch.float64), 500.0)
    with pytest.raises(ValueError, match="finite number"):
        sd3.eps_fn(sd3.encode_prompt("a"), float("nan"))
    broken = tmp_path / "broken"
    shutil.copytree(folders["sd3"], broken)
    shutil.rmtree(broken / "text_encoder_2")
    with pytest.raises(FileNotFoundError, match="text_encoder_2/"):
        SD3(broken, dtype="float64", device="cpu")
    (broken / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="transformer/"):
        SD3(broken, dtype="float64", device="cpu")
    with pytest.raises(FileNotFoundError, match="not in the local Hugging Face cache"):
        SD3("nobody-owns/this-sd3-model", device="cpu")


def test_loading_a_flux_folder_names_the_right_backend(tmp_path):
    folder = quiet(save_tiny_flow_pipeline, tmp_path / "flux", "flux-schnell")
    with pytest.raises(ValueError, match="doodl.models.Flux"):
        SD3(folder, device="cpu")


def test_scheduler_without_flow_is_refused(sd3):
    from diffusers import DDIMScheduler

    from doodl.models.flow_loading import FlowParts

    parts = FlowParts(sd3.transformer, sd3.vae, DDIMScheduler(), [sd3.encoder(0), sd3.encoder(1), None],
                      sd3.tokenizers[:2] + [None])
    with pytest.raises(ValueError, match="FlowMatchEulerDiscreteScheduler"):
        SD3.from_components(parts)


def test_model_index_names_sd3(folders):
    assert json.loads((folders["sd3"] / "model_index.json").read_text())["_class_name"] == "StableDiffusion3Pipeline"


def test_t5_left_out(folders):
    """t5=False on a folder with T5: its tokens are zeros (as diffusers without text_encoder_3),
    and the hub lookup would not fetch its weights."""
    from doodl.models.flow_loading import flow_hub_patterns

    model = quiet(SD3, folders["sd3"], dtype="float64", device="cpu", t5=False, max_sequence_length=SEQ)
    assert len(model.text_encoders) == 2 and model.encoder(2) is None
    c = model.encode_prompt("a cat")
    assert c.cond.shape[1] == 77 + SEQ and bool((c.cond[:, 77:] == 0).all()) and bool((c.cond[:, :77] != 0).any())
    with_t5, without = flow_hub_patterns("sd3"), flow_hub_patterns("sd3", t5=False)
    assert "text_encoder_3/model.safetensors" in with_t5 and not any("_3" in p for p in without)
    assert "transformer/diffusion_pytorch_model.fp16.safetensors" in flow_hub_patterns("sd3", "fp16")
