"""The shipped compare configs run end to end (issue 10, parts 6-7), each reduced from the real file
by editing its YAML (few items, T = 3, 2 DOODL iterations, 2 seeds searched): the digits
applications on the shipped weights; the paper's four protocols on tiny random stand-ins of SD,
open_clip, the aesthetic heads and the timm classifiers, saved with the libraries' own save
functions and loaded through the config's own class paths. Everything else (methods, judges,
guide, chain settings other than size and steps) is the config's."""

from __future__ import annotations

import copy
import csv
import importlib
import inspect
import json
from pathlib import Path

import pytest
import torch
import yaml

from doodl.app.compare_cli import compare_main

from .guidance.conftest import TINY_CLIP_CFG

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
PROMPTS = CONFIGS / "prompts"
T, ITERATIONS, SEEDS_SEARCHED, SIZE = 3, 2, 2, 16
REPORT = ("summary.md", "summary.csv", "summary.json", "scores.csv", "scores.jsonl", "summary.png", "sheet.png")


def load(name: str) -> dict:
    return yaml.safe_load((CONFIGS / name).read_text())


def write_items(tmp: Path, rows: list[dict]) -> str:
    path = tmp / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def prompt_rows(name: str, keep) -> list[dict]:
    """Rows of configs/prompts/<name> picked by ``keep(index, row)``, their file paths made absolute."""
    rows = [json.loads(line) for line in (PROMPTS / name).read_text().splitlines() if line.strip()]
    out = []
    for k, row in enumerate(rows):
        if keep(k, row):
            if "image" in row:
                row["image"] = str((PROMPTS / row["image"]).resolve())
            if "reference_images" in row:
                row["reference_images"] = [str((PROMPTS / p).resolve()) for p in row["reference_images"]]
            out.append(row)
    return out


def reduce(cfg: dict, tmp: Path, rows: list[dict], size: int | None = None) -> Path:
    """The config on ``rows``, T steps, ITERATIONS DOODL iterations, SEEDS_SEARCHED seeds searched, one batch."""
    cfg = copy.deepcopy(cfg)
    cfg["data"] = {"path": write_items(tmp, rows)}
    cfg["output"] = str(tmp / "out")
    cfg["threads"], cfg["batch_size"], cfg["wandb"] = 1, len(rows), None
    cfg["chain"]["num_steps"] = T
    if size is not None:
        cfg["chain"]["height"] = cfg["chain"]["width"] = size
    for m in cfg["methods"]:
        if m["class_path"].endswith(".DOODL"):
            m["init_args"]["iterations"] = ITERATIONS
        if m["class_path"].endswith(".SeedSearch"):
            m["init_args"]["n"] = SEEDS_SEARCHED
    path = tmp / "reduced.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def judge_names(cfg: dict) -> list[str]:
    names = []
    for j in cfg["judges"]:
        name = (j.get("init_args") or {}).get("name")
        if name is None:  # the class's default name (KID / FID: "kid" / "fid")
            module, _, cls = j["class_path"].rpartition(".")
            name = inspect.signature(getattr(importlib.import_module(module), cls)).parameters["name"].default
        names.append(name)
    return names


def method_names(cfg: dict) -> list[str]:
    out = []
    for m in cfg["methods"]:
        module, _, cls = m["class_path"].rpartition(".")
        out.append((m.get("init_args") or {}).get("name") or getattr(importlib.import_module(module), cls).default_name)
    return out


def check_report(cfg_path: Path, n_items: int) -> list[dict]:
    """Every report file, every (method, item) pair finished with its image, every judge's column;
    returns the summary's rows (read back from summary.json: what the user gets)."""
    cfg = yaml.safe_load(cfg_path.read_text())
    folder = Path(cfg["output"])
    for name in REPORT:
        assert (folder / name).is_file(), name
    judges, methods = judge_names(cfg), method_names(cfg)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["judges"] == judges and summary["methods"] == methods and summary["guide"] == cfg["guide"]
    rows = summary["rows"]
    assert {r["method"] for r in rows} == set(methods)
    for row in rows:
        assert set(row["judges"]) == set(judges), row["judges"].keys()
        assert row["failed"] == 0
    with open(folder / "scores.csv", newline="") as f:
        scores = list(csv.DictReader(f))
    assert len(scores) == n_items * len(methods)
    assert all(s["status"] in ("done", "stopped_early") for s in scores), [s["status"] for s in scores]
    set_level = {n for j, n in zip(cfg["judges"], judges) if j["class_path"].rsplit(".", 1)[1] in ("KID", "FID")}
    for name in set(judges) - set_level:  # a per-item judge scored every image with a finite value
        assert name in scores[0], (name, list(scores[0]))
        assert all(float(s[name]) == float(s[name]) for s in scores), name
    for m in methods:
        assert len(list((folder / "methods" / m).glob("*.png"))) == n_items, m
    return rows


def run(path: Path, n_items: int) -> list[dict]:
    compare_main(["-c", str(path)])
    return check_report(path, n_items)


# --- the digits applications, on the shipped weights -------------------------------------------------


def test_digits_clip_compare(tmp_path):
    """CLIP text guidance, judged by the independent judge classifier against each prompt's digit."""
    cfg = load("digits_clip_compare.yaml")
    every = prompt_rows("digits_clip_compare.jsonl", lambda k, r: True)
    unseen = [r for r in every if r["group"] == "unseen"]
    assert len(unseen) >= 100 and {r["target_class"] for r in unseen} == {8, 9}
    assert {r["target_class"] for r in every if r["group"] == "seen"} == set(range(8))
    assert all(r["prompt"].endswith(("eight", "nine")) for r in unseen)
    rows = every[:2] + every[-2:]  # 2 seen, 2 unseen
    path = reduce(cfg, tmp_path, rows)
    rows_out = run(path, len(rows))
    assert {r["group"] for r in rows_out} == {"seen", "unseen"}
    assert all(r["judges"]["judge"]["ci"] == "wilson" for r in rows_out)  # an accuracy: Wilson intervals


def test_digits_bold_compare(tmp_path):
    """Boldness guidance, judged by ink mass from the pixels and by the judge classifier."""
    cfg = load("digits_bold_compare.yaml")
    rows = prompt_rows("digits_bold_compare.jsonl", lambda k, r: k < 3)
    path = reduce(cfg, tmp_path, rows)
    rows_out = run(path, len(rows))
    inks = [j for j in cfg["judges"] if j["class_path"] == "doodl.eval.judges.InkMass"]
    assert inks and all(j["init_args"]["ink"] == "light" for j in inks)
    for row in rows_out:
        assert 0.0 < row["judges"]["ink_mass"]["value"] < 1.0
        assert row["gaps"] == {}  # guide: null, the guide's [1, 10] and ink's [0, 1] share no scale


def test_the_boldness_guide_pushes_ink_mass_up():
    """The bold config's `ink: light` is the direction the guide moves: on the real test digits
    (light strokes on dark) the boldness score rises with light-ink mass, falls with dark-ink mass,
    and a small step down the guide's loss gradient adds ink to every image."""
    from doodl.digits import assets
    from doodl.digits.guidance import DigitBoldnessLoss
    from doodl.eval.judges import InkMass

    images, _ = assets.test_set()
    guide = DigitBoldnessLoss(mode="maximize")
    score = guide.score(images)
    light, dark = InkMass("light").score(images), InkMass("dark").score(images)
    assert torch.corrcoef(torch.stack([score, light]))[0, 1] > 0.9
    assert torch.corrcoef(torch.stack([score, dark]))[0, 1] < -0.9
    x = images[:64].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(guide(x, None).sum(), x)
    step = x.detach() - 0.02 * grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    assert bool((InkMass("light").score(step) > InkMass("light").score(x.detach())).all())


def test_digits_personalize_compare(tmp_path):
    """Reference-image guidance, judged by the judge classifier against the references' digit."""
    cfg = load("digits_personalize_compare.yaml")
    all_rows = prompt_rows("digits_personalize_compare.jsonl", lambda k, r: True)
    assert len(all_rows) >= 100 and {r["target_class"] for r in all_rows} == {9}
    assert all(Path(p).name.startswith("nine_") for r in all_rows for p in r["reference_images"])
    rows = all_rows[:3]
    path = reduce(cfg, tmp_path, rows)
    rows_out = run(path, len(rows))
    for row in rows_out:  # the guide and the text judge are both cosine similarities: a gap
        assert set(row["gaps"]) == {"clip_prompt"}


# --- the paper's four protocols, on tiny random stand-ins ------------------------------------------

CLIPS = ("ViT-g-14", "ViT-H-14", "ViT-L-14", "ViT-B-32")  # every open_clip model the protocols name
TIMM = {"inception_v3": "test_resnet", "resnet50": "test_efficientnet"}  # guide / judge classifier stand-ins
INPUT_SIZES = {512: SIZE, 224: SIZE // 2}  # the classifiers' input sizes, scaled with the image (512 -> 16 px)
REAL_WEIGHTS = ("cuda", "weights/", "laion2b", "openai", "stable-diffusion-v1-5", "fp16", "float16", *CLIPS, *TIMM)


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    """Tiny random weights for every model the paper protocols load, saved with the libraries' own
    save functions: a diffusers SD pipeline, open_clip models (one registered config per CLIP
    the configs name, each with its own random weights), LAION-shaped aesthetic heads and timm
    classifiers with 120 classes."""
    import open_clip
    import timm
    from torch import nn

    from doodl.guidance import AestheticMLP
    from doodl.models.tiny import save_tiny_pipeline

    root = tmp_path_factory.mktemp("paper_stand_ins")
    out = {"pipe": str(save_tiny_pipeline(root / "pipe", "sd")), "clip": {}, "heads": {}, "timm": {}}
    for k, real in enumerate(CLIPS):
        name = f"doodl-tiny-compare-{real.lower()}"
        cfg = root / f"{name}.json"
        cfg.write_text(json.dumps(TINY_CLIP_CFG))
        open_clip.add_model_config(cfg)
        torch.manual_seed(k)
        ckpt = root / f"{name}.pt"
        torch.save(open_clip.create_model(name).state_dict(), ckpt)
        out["clip"][real] = (name, str(ckpt))
    dim = TINY_CLIP_CFG["embed_dim"]
    for k, kind in enumerate(("mlp", "linear")):  # the LAION heads' two shapes
        torch.manual_seed(10 + k)
        head = AestheticMLP(dim) if kind == "mlp" else nn.Linear(dim, 1)
        last = head.layers[-1] if kind == "mlp" else head
        with torch.no_grad():
            last.bias.fill_(5.0)  # scores inside [1, 10], where the clip passes gradients
            last.weight.mul_(20.0 if kind == "mlp" else 1.0)  # random stacked layers are nearly flat
        path = root / f"aesthetic_{kind}.pth"
        torch.save(head.state_dict(), path)
        out["heads"][kind] = str(path)
    for k, (real, tiny) in enumerate(TIMM.items()):
        torch.manual_seed(20 + k)
        path = root / f"{tiny}.pth"
        torch.save(timm.create_model(tiny, pretrained=False, num_classes=120).state_dict(), path)
        out["timm"][real] = (tiny, str(path))
    return out


def with_stand_ins(node, s: dict):
    """A copy of a config (dict / list) with every model's weights replaced by a stand-in of ``s``:
    the same class paths and settings, CPU and float32, the classifiers' input sizes scaled."""
    if isinstance(node, list):
        return [with_stand_ins(v, s) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: with_stand_ins(v, s) for k, v in node.items()}
    args = node.get("init_args")
    if node.get("class_path") == "doodl.guidance.OpenCLIP":
        name, ckpt = s["clip"][args["model_name"]]
        node["init_args"] = {**args, "model_name": name, "pretrained": ckpt, "precision": "fp32", "device": "cpu"}
    elif node.get("class_path") == "doodl.models.StableDiffusion":
        node["init_args"] = {**args, "pretrained": s["pipe"], "dtype": "float32", "device": "cpu"}
    if "head_path" in node:  # an AestheticLoss's init_args: 'auto' reads the MLP head as the real file
        node["head_path"] = s["heads"]["linear" if node.get("head") == "linear" else "mlp"]
    if isinstance(node.get("model"), str) and node["model"].startswith("timm:"):
        tiny, weights = s["timm"][node["model"][5:]]
        node["model"], node["weights"] = f"timm:{tiny}", weights
        if "input_size" in node:
            node["input_size"] = INPUT_SIZES[node["input_size"]]
    return node


def loading_values(node, key=None):
    """(key, value) of every setting that says what is loaded, and where and how."""
    if isinstance(node, list):
        for v in node:
            yield from loading_values(v)
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from loading_values(v, k)
    elif key in ("pretrained", "model_name", "precision", "device", "dtype", "head_path", "weights", "model"):
        yield key, node


def paper_config(name: str, s: dict, tmp: Path, rows: list[dict]) -> Path:
    cfg = load(name)
    tiny = with_stand_ins(cfg, s)
    path = reduce(tiny, tmp, rows, size=SIZE)
    loaded = dict(loading_values(yaml.safe_load(path.read_text())))
    assert {"pretrained", "dtype", "device"} <= set(loaded)
    for key, value in loading_values(yaml.safe_load(path.read_text())):  # every weight loaded is a stand-in
        assert not any(real in str(value) for real in REAL_WEIGHTS), (key, value)
    # and nothing else changed: methods and judges are the config's
    assert [m["class_path"] for m in tiny["methods"]] == [m["class_path"] for m in cfg["methods"]]
    assert judge_names(tiny) == judge_names(cfg) and tiny["guide"] == cfg["guide"]
    return path


def text_rows(name: str, n: int) -> list[dict]:
    lines = [ln for ln in (PROMPTS / name).read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return [{"prompt": ln, "seed": 0} for ln in lines[:n]]


def test_paper_compositional_compare(stand_ins, tmp_path):
    path = paper_config("paper_compositional_compare.yaml", stand_ins, tmp_path, text_rows("compositional.txt", 2))
    rows_out = run(path, 2)
    for row in rows_out:
        assert "clip_h" in row["gaps"]  # guide minus the held-out CLIP: both cosine similarities to the prompt
        assert 1.0 <= row["judges"]["aesthetic"]["value"] <= 10.0


def test_paper_vocabulary_compare(stand_ins, tmp_path):
    """(About 40 s on one busy thread, most of it the parser resolving each 'timm:<name>' string
    against every nn.Module subclass loaded, for the `nn.Module | str` type of the classifiers'
    `model`; about 10 s with `str` first in those types.)"""
    rows = [{**{k: v for k, v in r.items() if k != "seeds"}, "seed": 0}
            for r in prompt_rows("dogs.jsonl", lambda k, r: True)]
    path = paper_config("paper_vocabulary_compare.yaml", stand_ins, tmp_path, rows)
    rows_out = run(path, len(rows))
    for row in rows_out:
        assert set(row["gaps"]) == {"judge"}  # the guide's accuracy minus the held-out classifier's
        assert row["judges"]["judge"]["ci"] == "wilson"


def test_paper_aesthetic_edit_compare(stand_ins, tmp_path):
    rows = prompt_rows("edits.jsonl", lambda k, r: True)
    assert rows and all(Path(r["image"]).is_file() for r in rows)
    cfg = load("paper_aesthetic_edit_compare.yaml")
    assert not any(m["class_path"].endswith(".SeedSearch") for m in cfg["methods"])  # it refuses edit items
    assert cfg["chain"]["edit_strength"] < 1
    path = paper_config("paper_aesthetic_edit_compare.yaml", stand_ins, tmp_path, rows)
    rows_out = run(path, len(rows))
    for row in rows_out:
        assert "aesthetic_b32" in row["gaps"]  # guide minus the held-out aesthetic head: both on [1, 10]


def test_paper_personalize_compare(stand_ins, tmp_path):
    rows = prompt_rows("personal.jsonl", lambda k, r: True)
    assert rows and all(Path(p).is_file() for r in rows for p in r["reference_images"])
    path = paper_config("paper_personalize_compare.yaml", stand_ins, tmp_path, rows)
    rows_out = run(path, len(rows))
    for row in rows_out:
        assert "clip_h_refs" in row["gaps"]  # guide minus the held-out CLIP, both to the references
