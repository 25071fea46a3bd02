"""Find and load the components of a diffusers-format SD3 / SD3.5 / FLUX.1 folder (or hub id).

A folder path, or a hub id from the Hugging Face cache (the hub only where downloads are
allowed), resolves through ``doodl.hub.resolve_folder`` like the Stable Diffusion backend, so
offline errors read the same. Every component is then loaded from one local folder; a missing
part is a FileNotFoundError that names it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..hub import resolve_folder
from .loading import _tokenizer, read_frozen, read_json
# (subfolder, transformers / diffusers class) of each pipeline kind; None: T5, loaded by AutoTokenizer
LAYOUTS = {
    "sd3": {
        "pipeline": "StableDiffusion3Pipeline", "transformer": "SD3Transformer2DModel",
        "encoders": [("text_encoder", "CLIPTextModelWithProjection", "tokenizer"),
                     ("text_encoder_2", "CLIPTextModelWithProjection", "tokenizer_2"),
                     ("text_encoder_3", "T5EncoderModel", "tokenizer_3")],
    },
    "flux": {
        "pipeline": "FluxPipeline", "transformer": "FluxTransformer2DModel",
        "encoders": [("text_encoder", "CLIPTextModel", "tokenizer"),
                     ("text_encoder_2", "T5EncoderModel", "tokenizer_2")],
    },
}
BACKENDS = {"sd3": "doodl.models.SD3", "flux": "doodl.models.Flux"}


def folder_help(kind: str) -> str:
    subs = ", ".join(f"{e}/ and {t}/" for e, _, t in LAYOUTS[kind]["encoders"])
    return (f"a diffusers-format {LAYOUTS[kind]['pipeline']} folder holds model_index.json, transformer/, vae/, "
            f"scheduler/, {subs}; write one with diffusers' pipeline.save_pretrained(path)")


def flow_hub_patterns(kind: str, variant: str | None = None, t5: bool = True) -> list[str]:
    """Files of a hub repo that loading reads (configs, tokenizers, safetensors of ``variant``)."""
    tag = f".{variant}" if variant else ""
    patterns = ["model_index.json", "scheduler/*"]
    subs = ["transformer", "vae"]
    for enc, cls, tok in LAYOUTS[kind]["encoders"]:
        if cls == "T5EncoderModel" and not t5:
            continue
        subs.append(enc)
        patterns.append(f"{tok}/*")
    for sub in subs:
        patterns += [f"{sub}/config.json", f"{sub}/*.safetensors.index.json"]
        for name in ("diffusion_pytorch_model", "model"):
            patterns += [f"{sub}/{name}{tag}.safetensors", f"{sub}/{name}{tag}-*-of-*.safetensors"]
    return patterns


def resolve_flow_pretrained(
    pretrained: str | os.PathLike, kind: str, local_files_only: bool | None = None, cache_dir: Any = None,
    revision: str | None = None, variant: str | None = None, t5: bool = True,
) -> Path:
    """Local folder of ``pretrained``: a folder path, or a hub id "owner/name" (cache first)."""
    return resolve_folder(
        pretrained, "pipeline folder", folder_help(kind),
        file_hint=f"single-file checkpoints are not read here; pass a diffusers-format folder ({folder_help(kind)})",
        local_files_only=local_files_only, cache_dir=cache_dir, revision=revision,
        allow_patterns=flow_hub_patterns(kind, variant, t5),
    )


@dataclass
class FlowParts:
    """Frozen components of one SD3 / FLUX folder, ready for ``SD3`` / ``Flux.from_components``.
    ``text_encoders`` / ``tokenizers`` follow ``LAYOUTS[kind]``; a T5 left out is None."""

    transformer: Any
    vae: Any
    scheduler: Any
    text_encoders: list
    tokenizers: list


def _require(folder: Path, sub: str, kind: str, config: str = "config.json") -> Path:
    if not (folder / sub / config).is_file():
        what = f"no {sub}/ subfolder" if not (folder / sub).is_dir() else f"no {sub}/{config}"
        raise FileNotFoundError(f"{folder} has {what}: {folder_help(kind)}")
    return folder / sub


def check_kind(folder: Path, kind: str) -> None:
    """ValueError naming the right backend when transformer/ holds another kind of model."""
    name = read_json(_require(folder, "transformer", kind) / "config.json").get("_class_name")
    want = LAYOUTS[kind]["transformer"]
    if name != want:
        other = [k for k, v in LAYOUTS.items() if v["transformer"] == name]
        hint = f"load it with {BACKENDS[other[0]]}" if other else "this backend reads only " + want
        raise ValueError(f"{folder}/transformer is a {name}, not a {want}: {hint}")


def load_flow_pipeline(
    folder: Path, kind: str, dtype: torch.dtype, device: torch.device, vae_dtype: torch.dtype | None = None,
    variant: str | None = None, t5: bool = True, tokenizer_pad_token: str | None = None,
) -> FlowParts:
    """Load transformer, VAE, FlowMatchEulerDiscreteScheduler, text encoders and tokenizers.

    The scheduler is always ``FlowMatchEulerDiscreteScheduler`` built from the folder's config
    (shift, dynamic shifting as configured). ``t5=False`` leaves the T5 encoder out (SD3 only:
    its context is then zeros, as diffusers does without text_encoder_3). Models are frozen and
    moved to ``device``: the VAE in ``vae_dtype`` (default ``dtype``), the rest in ``dtype``.
    """
    import diffusers
    import transformers
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler

    check_kind(folder, kind)
    _require(folder, "vae", kind)
    _require(folder, "scheduler", kind, "scheduler_config.json")
    encoders = []
    for enc, cls, tok in LAYOUTS[kind]["encoders"]:
        if cls == "T5EncoderModel" and not t5:
            if kind == "flux":
                raise ValueError("FLUX.1 needs its T5 text encoder (its whole text context): t5=False is for SD3 only")
            encoders.append(None)
            continue
        if cls == "T5EncoderModel" and kind == "sd3" and not (folder / enc).is_dir() and not (folder / tok).is_dir():
            encoders.append(None)  # saved without T5 (text_encoder_3=None): diffusers then uses zeros too
            continue
        _require(folder, enc, kind)
        encoders.append((enc, getattr(transformers, cls), tok))
    def read(cls, sub, dt):
        return read_frozen(cls, folder, sub, dt, device, variant, torch_dtype=dt)

    transformer = read(getattr(diffusers, LAYOUTS[kind]["transformer"]), "transformer", dtype)
    vae = read(AutoencoderKL, "vae", vae_dtype or dtype)
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(folder, subfolder="scheduler", local_files_only=True)
    text_encoders, tokenizers = [], []
    for entry in encoders:
        if entry is None:
            text_encoders.append(None)
            tokenizers.append(None)
            continue
        sub, cls, tok = entry
        model = read(cls, sub, dtype)
        text_encoders.append(model)
        if cls.__name__ == "T5EncoderModel":
            tokenizers.append(_t5_tokenizer(folder, tok, kind))
        else:
            tokenizers.append(_tokenizer(folder, tok, model.config, tokenizer_pad_token))
    return FlowParts(transformer, vae, scheduler, text_encoders, tokenizers)


def _t5_tokenizer(folder: Path, sub: str, kind: str):
    from transformers import AutoTokenizer

    if not (folder / sub).is_dir():
        raise FileNotFoundError(f"{folder} has no {sub}/ (the T5 tokenizer): {folder_help(kind)}")
    return AutoTokenizer.from_pretrained(folder, subfolder=sub, local_files_only=True)
