"""Every shipped config parses through the CLI (``--print_config``: nothing is instantiated, no
weights are needed), its prompt file reads and validates, and a classifier named in it is one
``ClassifierLoss`` can build."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from doodl.app.cli import main
from doodl.app.data import read_items

ROOT = Path(__file__).resolve().parents[1]


def _is_compare(cfg: Path) -> bool:
    """A ``doodl compare`` config (methods x judges), checked by ``test_compare_config_parses``."""
    return "methods" in (yaml.safe_load(cfg.read_text()) or {})


ALL_CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
CONFIGS = [c for c in ALL_CONFIGS if not _is_compare(c)]
COMPARE_CONFIGS = [c for c in ALL_CONFIGS if _is_compare(c)]
BASE = ROOT / "configs" / "sd15_clip.yaml"  # what overlay configs are laid over


def load(cfg: Path) -> dict:
    return yaml.safe_load(cfg.read_text()) or {}


def is_overlay(cfg: Path) -> bool:
    """An overlay sets a few keys on top of a full config: it names no model backend."""
    return "model" not in (load(cfg).get("model") or {})


def stack(cfg: Path) -> list[Path]:
    return [BASE, cfg] if is_overlay(cfg) else [cfg]


def print_config(cfgs: list[Path], capsys) -> dict:
    args = ["fit"]
    for c in cfgs:
        args += ["-c", str(c)]
    with pytest.raises(SystemExit) as e:
        main([*args, "--print_config"])
    out = capsys.readouterr().out
    assert e.value.code == 0, out
    return yaml.safe_load(out)


def test_configs_are_found():
    names = {c.name for c in CONFIGS}
    assert {"sd15_clip.yaml", "onestep.yaml", "digits.yaml"} <= names
    assert BASE.is_file() and not is_overlay(BASE)


@pytest.mark.parametrize("cfg", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_config_parses(cfg, capsys, monkeypatch):
    monkeypatch.chdir(ROOT.parent)  # a config's data path is relative to its own folder, not the working one
    printed = print_config(stack(cfg), capsys)
    raw = load(cfg)
    # what the config sets is what the CLI resolved (the last config wins)
    for key, value in (raw.get("model") or {}).items():
        if not isinstance(value, dict):
            assert printed["model"][key] == value, key
    for part in ("model", "guidance"):
        want = (raw.get("model") or {}).get(part)
        if want is not None:
            assert printed["model"][part]["class_path"] == want["class_path"]
    if is_overlay(cfg):
        assert printed["model"]["guidance"]["class_path"] == load(BASE)["model"]["guidance"]["class_path"]
    data = printed["data"]
    if data.get("path"):
        source = [c for c in stack(cfg) if (load(c).get("data") or {}).get("path")][-1]  # the config that set it
        items = read_items(source.parent / data["path"], data.get("seeds") or [0])  # every row valid, images exist
        assert items and all(it["prompt"].strip() for it in items)
        for it in items:
            for image in [it.get("image"), *(it.get("reference_images") or [])]:
                assert image is None or Path(image).is_file()


def _classifier_spec_ok(spec) -> bool:
    """True where ``ClassifierLoss(model=spec)`` can build the model without downloads."""
    if not isinstance(spec, str):
        return True  # a class_path dict: an nn.Module built by the CLI
    if spec.startswith("timm:"):
        import timm

        return spec[5:] in timm.list_models()
    if spec.startswith("torchvision:"):
        import torchvision

        return spec[12:] in torchvision.models.list_models()
    return spec.endswith((".pt", ".pt2", ".ts", ".jit"))  # a TorchScript / torch.export file


@pytest.mark.parametrize("cfg", COMPARE_CONFIGS, ids=[c.stem for c in COMPARE_CONFIGS])
def test_compare_config_parses(cfg, capsys, monkeypatch):
    """``doodl compare -c X --print_config`` resolves (nothing instantiated), what the config sets is
    what resolves, and its prompt file reads and validates."""
    from doodl.app.compare_cli import compare_main

    monkeypatch.chdir(ROOT.parent)
    with pytest.raises(SystemExit) as e:
        compare_main(["-c", str(cfg), "--print_config"])
    out = capsys.readouterr().out
    assert e.value.code == 0, out
    printed, raw = yaml.safe_load(out), load(cfg)
    assert [m["class_path"] for m in printed["methods"]] == [m["class_path"] for m in raw["methods"]]
    assert [j["init_args"].get("name") for j in printed["judges"]] == [
        (j.get("init_args") or {}).get("name", printed["judges"][k]["init_args"].get("name"))
        for k, j in enumerate(raw["judges"])]
    assert printed["guide"] is None or printed["guide"] in [j["init_args"]["name"] for j in printed["judges"]]
    items = read_items(cfg.parent / raw["data"]["path"], raw["data"].get("seeds") or [0])
    assert items and all(it["prompt"].strip() for it in items)


def test_compare_configs_are_found():
    assert "digits_compare.yaml" in {c.name for c in COMPARE_CONFIGS}


CLASSIFIER_CONFIGS = [c for c in CONFIGS if "ClassifierLoss" in c.read_text()]


@pytest.mark.parametrize("cfg", CLASSIFIER_CONFIGS, ids=[c.stem for c in CLASSIFIER_CONFIGS])
def test_classifier_is_buildable_by_name(cfg):
    guidance = load(cfg)["model"]["guidance"]
    args = guidance.get("init_args") or {}
    if "model" in args:
        assert _classifier_spec_ok(args["model"]), f"{cfg.name}: model {args['model']!r}"
