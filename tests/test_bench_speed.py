"""The speed benchmark on a reduced setting (seconds): every row, its counts, its exactness."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def test_reduced_run(tmp_path):
    speed = load("speed")
    out = tmp_path / "speed.json"
    speed.main(["--steps", "2", "--repeats", "1", "--flat-steps", "2", "4", "--out", str(out)])
    result = json.loads(out.read_text())
    rows = {r["row"]: r for r in result["rows"]}
    assert set(rows) == {"sample", "onestep", "invert", "checkpoint", "naive", "auto", "auto-half", "reference"}
    assert result["machine"]["cpu"] and result["machine"]["torch_threads"] >= 1
    assert rows["sample"]["ratio_to_sample"] == 1.0
    # UNet calls per step: batched CFG for doodl, two batch-1 calls per eps for the reference
    assert (rows["sample"]["unet_calls_per_step_no_graph"], rows["sample"]["unet_calls_per_step_with_graph"]) == (2, 0)
    for m in ("invert", "checkpoint"):
        assert (rows[m]["unet_calls_per_step_no_graph"], rows[m]["unet_calls_per_step_with_graph"]) == (2, 2)
    assert (rows["naive"]["unet_calls_per_step_no_graph"], rows["naive"]["unet_calls_per_step_with_graph"]) == (0, 2)
    assert rows["auto"]["unet_calls_per_step_no_graph"] == 0  # the default budget holds this graph
    assert (rows["reference"]["unet_calls_per_step_no_graph"], rows["reference"]["batch_per_unet_call"]) == (4, 1)
    assert rows["onestep"]["unet_calls_per_step_with_graph"] == 1
    for m in ("invert", "checkpoint", "auto", "auto-half", "reference"):
        assert rows[m]["grad_rel_err_vs_naive"] < 1e-4, m  # float32, T = 2
    assert rows["naive"]["grad_rel_err_vs_naive"] == 0.0
    assert rows["auto-half"]["peak_mb"] < rows["naive"]["peak_mb"]
    for m in ("invert", "checkpoint"):
        by_T = result["peak_mb_by_T"][m]
        assert abs(by_T["4"] / by_T["2"] - 1) < 0.1
    md = out.with_suffix(".md").read_text()
    assert "| 2 | reference |" in md and "reference_over_best_constant" in md


def test_reference_emulation_is_exact_float64():
    """The emulation's gradient is the exact one (float64, against naive) and its weight gradients,
    computed in backward, are dropped: no .grad left, the UNet frozen again afterwards."""
    speed = load("speed")
    models = load("speed_models")
    world = models.build("tiny", dtype=torch.float64, latent=8)
    b = speed.Bench(world, 3)
    b.z = b.z.double()
    g_naive, g_ref = b.grads("naive"), b.grads("reference")
    assert float((g_ref - g_naive).norm() / g_naive.norm()) < 1e-10
    assert all(p.grad is None and not p.requires_grad for p in world.unet.parameters())
    assert world.calls["ref_graph"] == 3 * 4  # recompute: 2 half-steps x 2 batch-1 calls per step


def test_unknown_scale_is_an_error():
    with pytest.raises(ValueError, match="unknown scale 'sd2'"):
        load("speed_models").build("sd2")


@pytest.mark.parametrize("scale, batch", [("tiny-sd3", 2), ("tiny-flux", 1)])
def test_reduced_flow_run(tmp_path, scale, batch):
    """The flow worlds through the same benchmark: doodl's SD3 / FLUX backend velocity on a flow
    schedule, calls per step as for SD (SD3: CFG batched, FLUX: one branch), no reference row."""
    speed = load("speed")
    out = tmp_path / "flow.json"
    speed.main(["--scale", scale, "--steps", "2", "--repeats", "1", "--flat-steps", "2", "4", "--flat-modes", "invert",
                "--modes", "invert", "naive", "--text-tokens", "5", "--out", str(out)])
    result = json.loads(out.read_text())
    rows = {r["row"]: r for r in result["rows"]}
    assert set(rows) == {"sample", "onestep", "invert", "naive"} and result["text_tokens"] == 5
    assert (rows["invert"]["unet_calls_per_step_no_graph"], rows["invert"]["unet_calls_per_step_with_graph"]) == (2, 2)
    assert all(r["batch_per_unet_call"] == batch for r in rows.values())
    assert rows["invert"]["grad_rel_err_vs_naive"] < 1e-4
    assert set(result["peak_mb_by_T"]) == {"invert"}
    assert abs(result["peak_mb_by_T"]["invert"]["4"] / result["peak_mb_by_T"]["invert"]["2"] - 1) < 0.1


def test_flow_world_is_the_backend_on_its_flow_schedule():
    models = load("speed_models")
    world = models.build("tiny-sd3", dtype=torch.float64)
    sampler = world.sampler(3)
    assert sampler.kind == "flow" and [s.kind for s in sampler.steps] == ["flow"] * 3
    assert world.latents().shape == (1, world.backend.latent_channels, 8, 8)
    z = world.latents(dtype=torch.float64)
    v = world.eps(z, 500.0)
    assert v.dtype == torch.float64 and v.shape == z.shape and world.calls["plain"] == 1


def test_reference_is_refused_for_flow_scales(capsys):
    with pytest.raises(SystemExit):
        load("speed").main(["--scale", "tiny-sd3", "--modes", "reference"])
    assert "authors' SD-only code path" in capsys.readouterr().err


def test_gpu_plan_grad_errors_on_a_flow_world():
    """benchmarks/gpu.py's gradient check on a flow world: no reference row (SD-only); float64 model,
    float32 latents and coupling as in the GPU run, so each mode agrees with naive to float32's level."""
    gpu, models = load("gpu"), load("speed_models")
    world = models.build("tiny-flux", dtype=torch.float64)
    Bench = load("speed").Bench
    b = Bench(world, 2)
    assert b.sampler.kind == "flow"
    errs = gpu.grad_errors(world, T=2)
    assert set(errs) == {"invert", "checkpoint", "auto"}
    assert max(errs.values()) < 1e-6
    assert {scale for scale, *_ in gpu.PLAN} == {"sd15", "sdxl", "sd3", "flux"} and set(gpu.SMOKE) == {"sd15", "sdxl", "sd3", "flux"}


def test_formats_reduced_run(tmp_path):
    """benchmarks/speed_formats.py: every variant timed against float32 in one run, with its gradient error."""
    out = tmp_path / "formats.json"
    load("speed_formats").main(["--steps", "1", "--repeats", "1", "--latent", "8", "--out", str(out)])
    rows = json.loads(out.read_text())["tiny"]["variants"]
    assert set(rows) == {"float32", "float32-channels-last", "bfloat16", "bfloat16-channels-last"}
    assert rows["float32"]["iteration_over_float32"] == 1.0 and rows["float32"]["grad_rel_err_vs_float32"] == 0.0
    assert rows["float32-channels-last"]["grad_rel_err_vs_float32"] < 1e-4  # the same arithmetic, reordered
    assert 1e-4 < rows["bfloat16"]["grad_rel_err_vs_float32"] < 0.5  # bfloat16 rounding, not garbage
