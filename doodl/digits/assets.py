"""Loaders for the digits world's trained weights (written by ``python -m doodl.digits.train``).

Every loader takes an optional ``root`` (default: the weights shipped in the package) and returns
frozen modules in eval mode on the CPU, in float32. Nothing is loaded at import time."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import torch
from safetensors.torch import load_file

from . import data
from .nets import CLIP_NAME, DigitClassifier, DigitJudge, ScorerHead

WEIGHTS = Path(__file__).parent / "weights"


def weights_dir(root: str | Path | None = None) -> Path:
    root = Path(root) if root is not None else WEIGHTS
    if not (root / "manifest.json").is_file():
        raise FileNotFoundError(f"{root / 'manifest.json'} not found: run `python -m doodl.digits.train --out {root}`")
    return root


def manifest(root: str | Path | None = None) -> dict:
    """The training manifest: command, seeds, data split, held-out scores, file list."""
    return json.loads((weights_dir(root) / "manifest.json").read_text())


def pipeline_path(root: str | Path | None = None) -> Path:
    """The diffusers Stable Diffusion pipeline folder (load it like any SD checkpoint)."""
    return weights_dir(root) / "pipeline"


def load_pipeline(root: str | Path | None = None):
    """diffusers.StableDiffusionPipeline from the folder, offline."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(pipeline_path(root), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.eval().requires_grad_(False)
    return pipe


def _load_module(module: torch.nn.Module, name: str, root: str | Path | None) -> torch.nn.Module:
    module.load_state_dict(load_file(str(weights_dir(root) / manifest(root)["components"][name]["path"])))
    return module.eval().requires_grad_(False)


def load_classifier(root: str | Path | None = None) -> DigitClassifier:
    """The guidance classifier: (B, 3, 16, 16) images in [0, 1] -> (B, 10) logits."""
    return _load_module(DigitClassifier(), "classifier", root)


def load_judge(root: str | Path | None = None) -> DigitJudge:
    """The independent judge (evaluation only, never guidance): images in [0, 1] -> (B, 10) logits."""
    return _load_module(DigitJudge(), "judge", root)


def load_scorer(root: str | Path | None = None) -> ScorerHead:
    """The boldness head: normalized tiny-CLIP image embedding (B, 64) -> (B,) score on about [1, 10]."""
    return _load_module(ScorerHead(), "scorer", root)


def load_clip(root: str | Path | None = None) -> tuple[torch.nn.Module, open_clip.tokenizer.HFTokenizer]:
    """(tiny open_clip model, tokenizer). The model expects 16x16 images normalized with CLIP's
    mean/std (``model.visual.image_mean`` / ``image_std``); the tokenizer maps a list of strings to
    (B, 16) token ids of the same truncated BPE vocabulary as the generator's tokenizer."""
    root = weights_dir(root)
    info = manifest(root)["components"]["clip"]
    if CLIP_NAME not in open_clip.list_models():
        open_clip.add_model_config(root / info["config"])
    model = open_clip.create_model(CLIP_NAME, pretrained=str(root / info["path"]))
    context = json.loads((root / info["config"]).read_text())["text_cfg"]["context_length"]
    tokenizer = open_clip.tokenizer.HFTokenizer(str(root / info["tokenizer"]), context_length=context)
    return model.eval().requires_grad_(False), tokenizer


def split(root: str | Path | None = None) -> dict[str, list[int]]:
    """The data split of the manifest: index lists "A", "B", "test" into load_digits()."""
    return manifest(root)["data"]["splits"]


def test_set(root: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out test split: (N, 3, 16, 16) images in [0, 1] and (N,) labels."""
    digits, idx = data.load(), torch.tensor(split(root)["test"])
    return digits.images[idx], digits.labels[idx]
