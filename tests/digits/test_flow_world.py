"""The digits world's flow generator (doodl.digits.train_flow, doodl.digits.flow_world): the shipped
SD3 folder loads offline through the SD3 backend, the files are the manifest's, DOODL's gradient
through its EDICT chain and the guide agrees with naive autograd in float64, and the configs
resolve and run (reduced)."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

import doodl
from doodl.core.grad import MODES
from doodl.digits import assets, data
from doodl.digits.flow_world import DigitsSD3, flow_path
from doodl.digits.train_flow import MAX_SEQUENCE_LENGTH, SHIFT
from doodl.models import SD3

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"


@pytest.fixture(scope="module")
def entry():
    return json.loads((flow_path() / "flow_manifest.json").read_text())


@pytest.fixture(scope="module")
def model():
    return DigitsSD3()


def test_folder_is_an_sd3_pipeline_without_t5(model):
    index = json.loads((flow_path() / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusion3Pipeline"
    assert index["text_encoder_3"] == [None, None] and index["tokenizer_3"] == [None, None]
    assert type(model.transformer).__name__ == "SD3Transformer2DModel"
    assert model.encoder_slots == [True, True, False] and model.max_sequence_length == MAX_SEQUENCE_LENGTH
    assert type(model.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    assert model.scheduler.config.shift == SHIFT and not model.scheduler.config.use_dynamic_shifting
    assert model.default_size == data.IMAGE_SIZE and model.latent_shape(16, 16) == (1, 4, 8, 8)
    assert not any(p.requires_grad for p in model.parameters())


def test_files_match_the_manifest_and_weights_are_small(entry):
    folder = flow_path()
    for name, info in entry["files"].items():
        blob = (folder / name).read_bytes()
        assert len(blob) == info["bytes"] and hashlib.sha256(blob).hexdigest() == info["sha256"], name
    weights = sum(p.stat().st_size for p in folder.rglob("*.safetensors"))
    assert weights <= 4 * 2**20, weights
    assert entry["train_steps"] > 100  # a full run, not --quick


def test_plain_sd3_backend_reads_the_folder_like_digits_sd3(model):
    """The folder needs nothing of the digits world: doodl.models.SD3 with the same settings gives the same v."""
    plain = SD3(str(flow_path()), dtype="float32", device="cpu", t5=False, max_sequence_length=MAX_SEQUENCE_LENGTH,
                local_files_only=True)
    prompts = ["a handwritten digit three", "a handwritten digit nine"]
    x = model.initial_noise(2, 16, 16, generator=0)
    v = model.eps_fn(model.encode_prompt(prompts), 3.0)(x, 500.0)
    v_plain = plain.eps_fn(plain.encode_prompt(prompts), 3.0)(x, 500.0)
    assert torch.equal(v, v_plain)
    # the prompt matters, and the trained CLIP-L is the shipped text encoder's weights
    assert float((v[0] - v[1]).norm()) > 1e-3 * float(v.norm())
    shipped = assets.load_pipeline().text_encoder.state_dict()
    for k, t in shipped.items():
        assert torch.equal(model.encoder(0).text_model.state_dict()[k], t), k


def test_generator_meets_the_target(entry):
    scores, ev = entry["scores"], entry["evaluation"]
    assert scores["judge_accuracy_0_7"] >= 0.85, scores
    assert ev["samples_per_digit"] >= 50 and ev["guidance_scale"] in [float(s) for s in ev["cfg_tuning"][
        "guide_accuracy_0_7"]]
    # the CFG scale is the guide's pick on the tuning seeds (the judge never chose it)
    tuning = ev["cfg_tuning"]["guide_accuracy_0_7"]
    assert tuning[str(ev["guidance_scale"])] == max(tuning.values())


@pytest.mark.slow
def test_generator_accuracy_recomputes(entry, model):
    from doodl.digits.train_flow import sample_digits

    ev = entry["evaluation"]
    targets = torch.arange(10).repeat_interleave(ev["samples_per_digit"])
    images = sample_digits(model, targets, entry["seeds"]["samples"], ev["num_steps"], ev["guidance_scale"])
    with torch.no_grad():
        judged = assets.load_judge()(images).argmax(-1)
    seen = targets < 8
    assert abs((judged[seen] == targets[seen]).float().mean().item() - entry["scores"]["judge_accuracy_0_7"]) < 1e-6


def test_doodl_gradient_modes_agree_with_naive_float64():
    """One DOODL gradient (T = 2: EDICT chain, VAE decode, guide's cross-entropy toward 8) in float64."""
    model = DigitsSD3(dtype="float64")
    guide = assets.load_classifier().double()
    sampler = model.sampler(2, height=16, width=16)
    v_fn = model.eps_fn(model.encode_prompt(["a handwritten digit eight"] * 2), 3.0)
    xT = model.initial_noise(2, 16, 16, generator=0, dtype=torch.float64)

    def grad(mode):
        x = xT.clone().requires_grad_(True)
        y = xT.clone().requires_grad_(True)
        x0, y0 = doodl.sample_with_grad(sampler, v_fn, x, y, mode=mode)
        images = model.decode(x0, clamp="none").clamp(0, 1)
        loss = F.cross_entropy(guide(images), torch.full((2,), 8))
        loss.backward()
        return x.grad, y.grad, loss.detach()

    gx, gy, loss = grad("naive")
    assert float(gx.norm()) > 0 and float(gy.norm()) > 0
    for mode in [m for m in MODES if m != "naive"]:
        gx_m, gy_m, loss_m = grad(mode)
        assert torch.equal(loss_m, loss), mode  # the very same forward
        assert float((gx_m - gx).norm() / gx.norm()) < 1e-8, mode
        assert float((gy_m - gy).norm() / gy.norm()) < 1e-8, mode


def test_configs_resolve(capsys, monkeypatch):
    from doodl.app.cli import main
    from doodl.app.compare_cli import compare_main

    monkeypatch.chdir(ROOT.parent)
    with pytest.raises(SystemExit) as e:
        main(["fit", "-c", str(CONFIGS / "digits_flow.yaml"), "--print_config"])
    assert e.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["model"]["class_path"] == "doodl.digits.flow_world.DigitsSD3"
    with pytest.raises(SystemExit) as e:
        compare_main(["-c", str(CONFIGS / "digits_flow_compare.yaml"), "--print_config"])
    assert e.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert [m["class_path"].rsplit(".", 1)[1] for m in printed["methods"]] == ["Unguided", "OneStep", "DOODL"]
    rows = [json.loads(line) for line in (CONFIGS / "prompts" / "digits_flow_compare.jsonl").read_text().splitlines()]
    assert len(rows) >= 100 and all(r["target_class"] in (8, 9) and r["group"] == "unseen" for r in rows)
    # evaluation seeds are not the tuning seeds of doodl.digits.train_flow (CFG) or the one-step tuning
    assert max(r["seed"] for r in rows) < 10_000


def test_reduced_compare_runs(tmp_path):
    """The compare config on 2 unseen items, T = 2, 2 DOODL iterations: every method and judge reports."""
    from doodl.app.compare_cli import compare_main

    cfg = yaml.safe_load((CONFIGS / "digits_flow_compare.yaml").read_text())
    rows = [json.loads(line) for line in (CONFIGS / "prompts" / "digits_flow_compare.jsonl").read_text().splitlines()]
    cfg = copy.deepcopy(cfg)
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    cfg.update(data={"path": str(items)}, output=str(tmp_path / "out"), batch_size=2, wandb=None)
    cfg["chain"]["num_steps"] = 2
    cfg["judges"] = [j for j in cfg["judges"] if j["class_path"].endswith(("ClassifierJudge", "LossJudge"))]
    for m in cfg["methods"]:
        if m["class_path"].endswith(".DOODL"):
            m["init_args"]["iterations"] = 2
    path = tmp_path / "reduced.yaml"
    path.write_text(yaml.safe_dump(cfg))
    compare_main(["-c", str(path)])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["methods"] == ["plain", "onestep", "doodl"]
    for row in summary["rows"]:
        assert row["failed"] == 0 and {"guide", "judge", "guide_prob"} <= set(row["judges"])
    for m in summary["methods"]:
        assert len(list((tmp_path / "out" / "methods" / m).glob("*.png"))) == 2, m


def test_training_is_deterministic_and_rejects_unseen_digits(tmp_path):
    """Two --quick runs (3 steps) write the same transformer bytes; 8 and 9 are refused as training data."""
    from doodl.digits.train_flow import main, train_transformer

    blobs = []
    for k in range(2):
        entry = main(["--quick", "--out", str(tmp_path / str(k))])
        assert entry["train_steps"] == 3 and entry["evaluation"]["samples_per_digit"] == 1
        blobs.append((tmp_path / str(k) / "transformer" / "diffusion_pytorch_model.safetensors").read_bytes())
    assert blobs[0] == blobs[1]
    with pytest.raises(ValueError, match="digits 0-7 only"):
        train_transformer(None, None, {}, torch.zeros(1, 3, 16, 16), torch.tensor([8]), 1, 0)


def test_fit_config_runs_reduced(tmp_path, monkeypatch):
    """configs/digits_flow.yaml through `doodl fit` (2 iterations, T = 2): every item's final image,
    the contact sheet (plain, one-step, DOODL) and the results table."""
    from doodl.app.cli import main
    from doodl.app.data import read_items

    monkeypatch.chdir(ROOT)
    cli = main([
        "fit", "-c", str(CONFIGS / "digits_flow.yaml"), "--model.iterations=2", "--model.num_steps=2",
        f"--trainer.default_root_dir={tmp_path}", "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.enable_progress_bar=false",
    ])
    run = Path(cli.trainer.log_dir)
    n = len(read_items(CONFIGS / "prompts" / "digits.jsonl", [0]))
    assert len(list((run / "final").glob("*.png"))) == n
    assert (run / "contact_sheet.png").is_file() and (run / "results.csv").is_file()
