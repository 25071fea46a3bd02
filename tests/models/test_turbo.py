"""Few-step models: SD-Turbo / SDXL-Turbo (DDIM over their scheduler's trailing timesteps, no CFG)
against diffusers' own pipelines with the models' own Euler schedulers, and FLUX.1-schnell's
1-4 steps against FlowMatchEulerDiscreteScheduler.step."""

import pytest
import torch

import doodl
from doodl.core.onestep import one_step_guided_sample
from doodl.models import Flux, StableDiffusion, Turbo
from doodl.models.tiny_flow import flow_scheduler, save_tiny_turbo_pipeline

from .helpers import quiet


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("turbo")
    return {k: quiet(save_tiny_turbo_pipeline, root / k, k) for k in ("sd-turbo", "sdxl-turbo")}


def pipeline(folder, kind):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    cls = StableDiffusionPipeline if kind == "sd-turbo" else StableDiffusionXLPipeline
    return quiet(cls.from_pretrained, folder, torch_dtype=torch.float64, local_files_only=True)


def run_pipeline(pipe, xT, steps):
    return pipe("a cat", num_inference_steps=steps, guidance_scale=0.0, height=16, width=16, latents=xT.clone(),
                output_type="latent").images


@pytest.mark.parametrize("kind,steps", [("sd-turbo", 1), ("sd-turbo", 4), ("sdxl-turbo", 1)])
def test_chain_is_the_turbo_pipeline(folders, kind, steps):
    """diffusers' pipeline with the model's own (Euler, trailing) scheduler and guidance_scale 0:
    its result equals the plain DDIM chain over the same timesteps; for one step, the first
    EDICT half-step from (x_T, x_T). (Euler ancestral, SDXL-Turbo's, adds noise after one step.)"""
    model = quiet(Turbo, folders[kind], dtype="float64", device="cpu")
    pipe = pipeline(folders[kind], kind)
    assert type(pipe.scheduler).__name__.startswith("Euler") and pipe.scheduler.config.timestep_spacing == "trailing"
    sampler = model.sampler(steps)
    pipe.scheduler.set_timesteps(steps)
    assert sampler.timesteps == [int(t) for t in pipe.scheduler.timesteps] and sampler.timesteps[0] == 999
    assert sampler.steps[-1].abar_p == 1.0
    # the pipeline draws N(0, I) and scales it by its scheduler's init_noise_sigma; Turbo starts in
    # DDIM's variable, where that noise reads N(0, I) * init_noise_sigma / sqrt(sigma_max^2 + 1)
    raw = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    xT = model.initial_noise(1, 16, 16, generator=0, dtype=torch.float64)
    abar_T = float(model.alphas_cumprod[999])
    assert model.noise_scale == pytest.approx((1 - abar_T) ** 0.5, rel=1e-6)  # trailing: no signal left
    torch.testing.assert_close(xT, raw * model.noise_scale, rtol=0, atol=0)
    eps_fn = model.eps_fn(model.encode_prompt("a cat"))  # CFG off by default
    ref = run_pipeline(pipe, raw, steps)
    torch.testing.assert_close(one_step_guided_sample(sampler, eps_fn, None, xT), ref, rtol=1e-5, atol=1e-5)
    if steps == 1:
        s = sampler.steps[0]
        torch.testing.assert_close(s.a * xT + s.b * eps_fn(xT, s.t), ref, rtol=1e-5, atol=1e-5)


def test_turbo_unet_calls_without_cfg(folders):
    model = quiet(Turbo, folders["sd-turbo"], dtype="float64", device="cpu")
    batches = []
    hook = model.unet.register_forward_pre_hook(lambda m, args: batches.append(args[0].shape[0]))
    try:
        xT = model.initial_noise(2, 16, 16, generator=0, dtype=torch.float64).requires_grad_(True)
        x0, _ = doodl.sample_with_grad(model.sampler(2), model.eps_fn(model.encode_prompt(["a", "b"])), xT, xT)
        assert batches == [2] * 4  # one branch of batch N, 2 calls per step
    finally:
        hook.remove()


def test_a_leading_scheduler_is_not_a_turbo(tmp_path):
    from doodl.models.tiny import save_tiny_pipeline

    folder = quiet(save_tiny_pipeline, tmp_path / "sd", "sd")
    with pytest.raises(ValueError, match="trailing.*doodl.models.StableDiffusion"):
        Turbo(folder, dtype="float64", device="cpu")
    assert quiet(StableDiffusion, folder, dtype="float64", device="cpu").sampler(1).steps[-1].abar_p < 1.0


@pytest.mark.parametrize("steps", [1, 2, 3, 4])
def test_flux_schnell_steps_match_diffusers(steps, tmp_path_factory):
    """FLUX.1-schnell's 1-4 steps (the FluxPipeline's sigmas, shift 1): every x + b*v is the
    scheduler's own step."""
    from doodl.models.tiny_flow import save_tiny_flow_pipeline

    folder = tmp_path_factory.getbasetemp() / "schnell"
    if not folder.exists():
        quiet(save_tiny_flow_pipeline, folder, "flux-schnell")
    model = quiet(Flux, folder, dtype="float64", device="cpu", max_sequence_length=8)
    sampler = model.sampler(steps, height=16, width=16)
    ref = flow_scheduler("flux-schnell")
    ref.set_timesteps(sigmas=model.pipeline_sigmas(steps))
    v_fn = model.eps_fn(model.encode_prompt("a cat"), None)
    x = model.initial_noise(1, 16, 16, generator=1, dtype=torch.float64)
    for s, t in zip(sampler.steps, ref.timesteps):
        v = v_fn(x, s.t)
        want = ref.step(v, t, x).prev_sample
        x = s.a * x + s.b * v
        torch.testing.assert_close(x, want, rtol=1e-6, atol=1e-6)
    assert sampler.steps[-1].sigma_next == 0.0
