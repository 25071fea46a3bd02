"""Find and load the components of a diffusers-format Stable Diffusion folder (or hub id).

The local path comes first. A hub id is looked up in the Hugging Face cache without any network
call; only when that fails and downloads are allowed (``HF_HUB_OFFLINE`` unset and
``local_files_only`` not set) is the hub asked. Every component is then loaded from one local
folder, so a hub model and a user's own folder go through the same code. The resolution itself
(local path, cache, hub, offline) is ``doodl.hub``'s, shared with the guidance models.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..hub import resolve_folder
from .tokenizer import EOS_TOKEN, clip_tokenizer_from_open_clip

DTYPES = {
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
    "float64": torch.float64, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16,
}
_WEIGHT_FOLDERS = ("unet", "vae", "text_encoder", "text_encoder_2")
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_FOLDER_HELP = (
    "a diffusers-format Stable Diffusion folder holds model_index.json, unet/, vae/, scheduler/, "
    "text_encoder/ and tokenizer/ (SDXL adds text_encoder_2/ and tokenizer_2/); write one with "
    "diffusers' pipeline.save_pretrained(path)"
)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> cuda when available, else cpu."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {device!r} is not a torch device (use 'cpu', 'cuda' or 'cuda:0')") from err


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None`` -> float16 on cuda, float32 elsewhere; strings as in ``DTYPES``."""
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"dtype {dtype} is not a model precision: use one of {', '.join(DTYPES)}")
        return dtype
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in DTYPES:
        return DTYPES[dtype.removeprefix("torch.")]
    raise ValueError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)} (or a torch.dtype)")


def resolve_pretrained(
    pretrained: str | os.PathLike,
    local_files_only: bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    revision: str | None = None,
    variant: str | None = None,
) -> Path:
    """Local folder of ``pretrained``: a folder path, or a hub id ("owner/name") from the cache.

    ``local_files_only=None`` follows ``HF_HUB_OFFLINE``. Raises FileNotFoundError at once, with
    what is missing and how to supply it, when nothing local is found and downloads are off
    (``doodl.hub.resolve_folder``).
    """
    if not isinstance(pretrained, (str, os.PathLike)) or not str(pretrained):
        raise ValueError(f"pretrained must be a folder path or a hub id 'owner/name', got {pretrained!r}")
    file_hint = (f"single-file checkpoints are not read here; pass a diffusers-format folder instead "
                 f"({_FOLDER_HELP}, e.g. after StableDiffusionPipeline.from_single_file)")
    return resolve_folder(pretrained, "pipeline folder", _FOLDER_HELP, file_hint, local_files_only, cache_dir,
                          revision, hub_patterns(variant))


def hub_patterns(variant: str | None = None) -> list[str]:
    """Files of a hub repo that loading reads: configs, tokenizers, and the safetensors weights
    of ``variant`` only (a hub repo often also holds .bin, .ckpt, fp16 and non-EMA copies)."""
    tag = f".{variant}" if variant else ""
    patterns = ["model_index.json", "scheduler/*", "tokenizer/*", "tokenizer_2/*"]
    for sub in _WEIGHT_FOLDERS:
        patterns.append(f"{sub}/config.json")
        patterns.append(f"{sub}/*.safetensors.index.json")
        for name in ("diffusion_pytorch_model", "model"):
            patterns += [f"{sub}/{name}{tag}.safetensors", f"{sub}/{name}{tag}-*-of-*.safetensors"]
    return patterns


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}): re-export the folder with save_pretrained") from err


def _require(folder: Path, sub: str, config: str = "config.json") -> Path:
    if not (folder / sub).is_dir():
        raise FileNotFoundError(f"{folder} has no {sub}/ subfolder: {_FOLDER_HELP}")
    if not (folder / sub / config).is_file():
        raise FileNotFoundError(f"{folder / sub} has no {config}: {_FOLDER_HELP}")
    return folder / sub


@dataclass
class PipelineParts:
    """Frozen components of one pipeline folder, ready for ``StableDiffusion.from_components``."""

    unet: Any
    vae: Any
    scheduler: Any
    text_encoders: list
    tokenizers: list
    force_zeros_for_empty_prompt: bool = False


def is_sdxl_folder(folder: Path) -> bool:
    """SDXL: a text_encoder_2/ subfolder, or a UNet conditioned on text and time ids."""
    unet_config = read_json(_require(folder, "unet") / "config.json")
    return (folder / "text_encoder_2").is_dir() or unet_config.get("addition_embed_type") == "text_time"


def _tokenizer(folder: Path, sub: str, encoder_config: Any, pad_token: str | None):
    from transformers import CLIPTokenizer

    if (folder / sub).is_dir():
        return CLIPTokenizer.from_pretrained(folder, subfolder=sub, local_files_only=True)
    if pad_token is None:  # OpenAI CLIP (quick_gelu) was used with '<|endoftext|>' padding; OpenCLIP pads with id 0
        pad_token = EOS_TOKEN if encoder_config.hidden_act == "quick_gelu" else "!"
    warnings.warn(
        f"{folder} has no {sub}/: using CLIP's tokenizer built from open_clip's BPE vocabulary, "
        f"padding with {pad_token!r}; pass tokenizer_pad_token to choose the padding token",
        stacklevel=3,
    )
    return clip_tokenizer_from_open_clip(pad_token=pad_token, model_max_length=encoder_config.max_position_embeddings)


def read_frozen(cls: Any, folder: Path, sub: str, dtype: torch.dtype, device: torch.device, variant: str | None,
                **kwargs: Any) -> Any:
    """``cls.from_pretrained`` of ``folder/sub`` (local files only, ``variant``, ``kwargs``) in ``dtype`` on
    ``device``, frozen (``eval().requires_grad_(False)``). Missing weights: a FileNotFoundError; unreadable
    ones (truncated, corrupt): a ValueError naming the file and the fix."""
    from safetensors import SafetensorError

    try:
        model = cls.from_pretrained(folder, subfolder=sub, local_files_only=True, variant=variant, **kwargs)
    except (OSError, RuntimeError, ValueError, SafetensorError) as err:  # weights file missing or unreadable
        weights = sorted(p.name for p in (folder / sub).iterdir() if p.suffix in _WEIGHT_SUFFIXES)
        if isinstance(err, OSError) and not weights:
            raise FileNotFoundError(
                f"could not load {sub}/ of {folder} (variant={variant!r}): {str(err).rstrip('.')}. It needs its "
                f"config and weights (diffusion_pytorch_model[.variant].safetensors or model[.variant].safetensors)"
            ) from err
        reason = (str(err).strip().splitlines() or [""])[0][:300].rstrip(".")
        raise ValueError(
            f"could not load {sub}/ of {folder} (variant={variant!r}) from {', '.join(weights) or 'its files'}: "
            f"{type(err).__name__}: {reason}. A weights file may be truncated or corrupt: download the model "
            f"again or re-export the folder with save_pretrained"
        ) from err
    if model.dtype != dtype:
        model = model.to(dtype=dtype)
    return model.to(device=device).eval().requires_grad_(False)


def load_pipeline(
    folder: Path,
    dtype: torch.dtype,
    device: torch.device,
    vae_dtype: torch.dtype | None = None,
    variant: str | None = None,
    tokenizer_pad_token: str | None = None,
) -> PipelineParts:
    """Load UNet, VAE, DDIM scheduler, text encoder(s) and tokenizer(s) from a local folder.

    The scheduler is always ``DDIMScheduler`` built from the folder's scheduler config (betas,
    prediction type, timestep spacing as configured; DOODL needs DDIM with eta = 0).
    All models are frozen (``eval().requires_grad_(False)``) and moved to ``device``; UNet and
    text encoders in ``dtype``, the VAE in ``vae_dtype``. ``vae_dtype=None``: ``dtype``, except
    float32 when ``dtype`` is float16 and the VAE config sets ``force_upcast`` (as diffusers
    does: SDXL's VAE overflows in float16).
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    index = read_json(folder / "model_index.json") if (folder / "model_index.json").is_file() else {}
    sdxl = is_sdxl_folder(folder)
    encoders = [("text_encoder", CLIPTextModel)]
    if sdxl:
        if not (folder / "text_encoder").is_dir() and (folder / "text_encoder_2").is_dir():
            raise ValueError(
                f"{folder} looks like the SDXL refiner (no text_encoder/): only SDXL base-style pipelines are supported"
            )
        encoders.append(("text_encoder_2", CLIPTextModelWithProjection))
    vae_config = read_json(_require(folder, "vae") / "config.json")
    _require(folder, "scheduler", "scheduler_config.json")
    for sub, _ in encoders:
        _require(folder, sub)
    if vae_dtype is None:
        upcast = dtype == torch.float16 and vae_config.get("force_upcast", False)
        vae_dtype = torch.float32 if upcast else dtype
    # diffusers models are loaded directly in their dtype (torch_dtype)
    unet = read_frozen(UNet2DConditionModel, folder, "unet", dtype, device, variant, torch_dtype=dtype)
    vae = read_frozen(AutoencoderKL, folder, "vae", vae_dtype, device, variant, torch_dtype=vae_dtype)
    scheduler = DDIMScheduler.from_pretrained(folder, subfolder="scheduler", local_files_only=True)
    text_encoders, tokenizers = [], []
    for sub, cls in encoders:
        enc = read_frozen(cls, folder, sub, dtype, device, variant)
        text_encoders.append(enc)
        tokenizers.append(_tokenizer(folder, sub.replace("text_encoder", "tokenizer"), enc.config, tokenizer_pad_token))
    zeros = bool(index.get("force_zeros_for_empty_prompt", sdxl)) if sdxl else False
    return PipelineParts(unet, vae, scheduler, text_encoders, tokenizers, zeros)
