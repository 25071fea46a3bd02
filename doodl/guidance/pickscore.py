"""PickScore (Kirstain et al. 2023): a CLIP model fine-tuned on human preferences, as a guide and a judge.

With unit-norm image and text embeddings u, v of a transformers ``CLIPModel`` and its learned
temperature tau = exp(logit_scale):
    PickScore(image, prompt) = tau * cos(u, v)          (higher is better; ~20-23 for the published model)
    loss                     = weight * -mean_crops PickScore(crop, prompt)
The image goes through the model's ``CLIPProcessor`` preprocessing, redone in torch so gradients
reach the pixels: shortest side resized to ``size`` (bicubic, antialiased; the long side
``int(size * long / short)``), a center crop, then the processor's mean/std. With cutouts, each
crop is pooled to the crop size instead (``Cutouts``) and normalized. ``score`` is always the
whole image, uncropped: the published metric, for judges.

    PickScoreLoss("yuvalkirstain/PickScore_v1", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K")   (hub, or cache offline)
    PickScoreLoss("/models/pickscore", "/models/clip-h-processor")                          local folders
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..hub import resolve_folder
from .base import GuidanceLoss, Items, check_images, per_item
from .clip_model import ModelDtypes, PromptItems, cached_embeddings
from .cutouts import Cutouts, bind_cutouts, check_cutouts

PICKSCORE_MODEL = "yuvalkirstain/PickScore_v1"
PICKSCORE_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"  # the processor PickScore's authors load
_PATTERNS = ("*.json", "*.txt", "*.safetensors")  # configs, tokenizer files and safetensors weights only
_MODEL_HELP = "a transformers CLIP folder holds config.json and model.safetensors: write one with CLIPModel.save_pretrained"
_PROC_HELP = ("a CLIPProcessor folder holds preprocessor_config.json and the tokenizer files: write one with "
              "CLIPProcessor.save_pretrained")
_INTERPOLATION = {2: "bilinear", 3: "bicubic"}  # PIL resample codes the processors use


def _size(value: Any, key: str) -> int | None:
    """A size field of a processor (a dict, transformers' SizeDict or an int)."""
    if isinstance(value, int):
        return value
    got = value.get(key) if hasattr(value, "get") else getattr(value, key, None)
    return None if got is None else int(got)


class CLIPPreprocess(torch.nn.Module):
    """A ``CLIPImageProcessor``'s resize, center crop and normalization on tensors in [0, 1], differentiable.

    Args:
        image_processor: the processor whose settings to follow (``processor.image_processor``).
    """

    def __init__(self, image_processor: Any):
        super().__init__()
        ip = image_processor
        name = type(ip).__name__
        self.resize_short: int | None = None
        self.resize_to: tuple[int, int] | None = None
        if getattr(ip, "do_resize", True):
            short, h, w = _size(ip.size, "shortest_edge"), _size(ip.size, "height"), _size(ip.size, "width")
            if short is not None:
                self.resize_short = short
            elif h is not None and w is not None:
                self.resize_to = (h, w)
            else:
                raise ValueError(f"{name} size {ip.size!r} is not supported: use shortest_edge, or height and width")
            resample = int(getattr(ip, "resample", 3))
            if resample not in _INTERPOLATION:
                raise ValueError(f"{name} resample={resample} is not supported: use 3 (bicubic) or 2 (bilinear)")
            self.mode = _INTERPOLATION[resample]
        self.crop: tuple[int, int] | None = None
        if getattr(ip, "do_center_crop", False):
            self.crop = (_size(ip.crop_size, "height"), _size(ip.crop_size, "width"))
        if self.crop is not None:
            self.image_size = self.crop
        elif self.resize_to is not None:
            self.image_size = self.resize_to
        else:
            raise ValueError(f"{name} neither center-crops nor resizes to a fixed size: the model input size is unknown")
        normalize = getattr(ip, "do_normalize", True)
        mean = ip.image_mean if normalize else (0.0, 0.0, 0.0)
        std = ip.image_std if normalize else (1.0, 1.0, 1.0)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def resize(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) -> (N, 3, *image_size): the processor's resize and center crop."""
        x = images.to(compute_dtype(images))
        if self.resize_short is not None:
            height, width = x.shape[-2:]
            short, long = min(height, width), max(height, width)
            new_long = int(self.resize_short * long / short)
            size = (new_long, self.resize_short) if width <= height else (self.resize_short, new_long)
            x = F.interpolate(x, size=size, mode=self.mode, antialias=True, align_corners=False)
        elif self.resize_to is not None:
            x = F.interpolate(x, size=self.resize_to, mode=self.mode, antialias=True, align_corners=False)
        if self.crop is not None:
            height, width = x.shape[-2:]
            if height < self.crop[0] or width < self.crop[1]:
                raise ValueError(f"images of {height}x{width} after resizing are smaller than the crop {self.crop}")
            top, left = int((height - self.crop[0]) / 2.0), int((width - self.crop[1]) / 2.0)
            x = x[..., top : top + self.crop[0], left : left + self.crop[1]]
        return x

    def normalize(self, images: Tensor) -> Tensor:
        x = images.to(compute_dtype(images))
        return (x - self.mean.to(x.device, x.dtype)) / self.std.to(x.device, x.dtype)

    def forward(self, images: Tensor) -> Tensor:
        return self.normalize(self.resize(images))


def compute_dtype(x: Tensor) -> torch.dtype:
    """float64 stays float64 (exactness tests); every other dtype is computed in float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def features(out: Any) -> Tensor:
    """The projected embedding of ``get_*_features`` (transformers 5 returns an output, 4 a tensor)."""
    return out if isinstance(out, Tensor) else out.pooler_output


class PickScoreLoss(ModelDtypes, PromptItems, GuidanceLoss):
    """Maximize PickScore of each image for its prompt (fixed, or ``item["prompt"]``).

    Args:
        model: folder (or hub id) of the PickScore ``CLIPModel`` (``CLIPModel.save_pretrained``).
        processor: folder (or hub id) of its ``CLIPProcessor``; None: the model's folder.
        prompt: a fixed prompt; None reads ``items[i]["prompt"]``.
        cutouts: the crop settings (``Cutouts``, bound here to the model's input size); None (default)
            scores the whole image (the processor's preprocessing).
        weight: scale of the loss.
        device, dtype: where and in which precision the model runs ("float32", "float16", ...).
        local_files_only, cache_dir, revision: hub resolution (``doodl.hub``; None follows HF_HUB_OFFLINE).
    """

    score_direction = "max"

    def __init__(
        self,
        model: str = PICKSCORE_MODEL,
        processor: str | None = PICKSCORE_PROCESSOR,
        prompt: str | None = None,
        cutouts: Cutouts | None = None,
        weight: float = 1.0,
        device: str | torch.device = "cpu",
        dtype: str = "float32",
        local_files_only: bool | None = None,
        cache_dir: str | None = None,
        revision: str | None = None,
    ):
        super().__init__(weight)
        check_cutouts(cutouts, type(self).__name__)  # before any model loads
        from transformers import CLIPModel, CLIPProcessor

        if prompt is not None and not isinstance(prompt, str):
            raise ValueError(f"prompt must be a string or None, got {type(prompt).__name__}")
        torch_dtype = getattr(torch, str(dtype).removeprefix("torch."), None)
        if not isinstance(torch_dtype, torch.dtype) or not torch_dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating torch dtype name ('float32', 'float16', 'bfloat16'), got {dtype!r}")
        hub = dict(local_files_only=local_files_only, cache_dir=cache_dir, revision=revision, allow_patterns=_PATTERNS)
        folder = resolve_folder(model, "PickScore model folder", _MODEL_HELP, **hub)
        proc_folder = folder if processor is None else resolve_folder(processor, "PickScore processor folder", _PROC_HELP, **hub)
        try:
            net = CLIPModel.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as err:
            raise FileNotFoundError(f"cannot load a CLIPModel from {folder} ({type(err).__name__}: {err}); {_MODEL_HELP}") from err
        try:
            proc = CLIPProcessor.from_pretrained(proc_folder, local_files_only=True)
        except (OSError, ValueError, TypeError) as err:
            raise FileNotFoundError(
                f"cannot load a CLIPProcessor from {proc_folder} ({type(err).__name__}: {err}); {_PROC_HELP}"
                + ("; or pass processor=<its folder>" if processor is None else "")) from err
        self.model = net.to(device=device, dtype=torch_dtype)
        self.tokenizer = proc.tokenizer
        self.preprocess = CLIPPreprocess(proc.image_processor).to(device)
        self.image_size: tuple[int, int] = self.preprocess.image_size
        if tuple(self.image_size) != (net.config.vision_config.image_size,) * 2:
            raise ValueError(f"the processor crops to {self.image_size} but the model takes "
                             f"{net.config.vision_config.image_size} px images: pair the model with its own processor")
        self.prompt = prompt
        self.cutouts = bind_cutouts(cutouts, self.image_size, type(self).__name__)
        self._text_cache: dict[str, Tensor] = {}
        self.freeze_()

    @property
    def temperature(self) -> Tensor:
        """tau = exp(logit_scale), the model's learned scale of the cosine."""
        return self.model.logit_scale.detach().to(self.compute_dtype).exp()

    def embed_images(self, pixels: Tensor) -> Tensor:
        """Normalized pixel values (N, 3, *image_size) -> (N, D) unit-norm embeddings (differentiable)."""
        out = features(self.model.get_image_features(pixel_values=pixels.to(self.dtype)))
        return F.normalize(out.to(self.compute_dtype), dim=-1)

    def embed_text(self, prompts: Sequence[str]) -> Tensor:
        """Prompts -> (N, D) unit-norm embeddings (cached, no gradients)."""
        return cached_embeddings(self._text_cache, prompts, self._embed_new_text)

    def _embed_new_text(self, prompts: list[str]) -> Tensor:
        device = self.preprocess.mean.device
        tokens = self.tokenizer(prompts, padding="max_length", truncation=True, return_tensors="pt",
                                max_length=self.model.config.text_config.max_position_embeddings)
        with torch.no_grad():
            out = self.model.get_text_features(input_ids=tokens["input_ids"].to(device),
                                               attention_mask=tokens["attention_mask"].to(device))
        return F.normalize(features(out).to(self.compute_dtype), dim=-1)

    def pickscore(self, images: Tensor, items: Items | None = None, crops: bool = True) -> Tensor:
        """(B, n) PickScore of every crop, fresh crops from the items' generators (n = 1: the whole
        image, as always with ``crops=False``)."""
        check_images(images)
        text = self.embed_text(per_item("prompt", self.prompt, items, images.shape[0])).to(images.device)
        if crops and self.cutouts is not None:
            pixels = self.preprocess.normalize(self.cutouts.for_items(images, items).flatten(0, 1))
        else:
            pixels = self.preprocess(images)
        batch = images.shape[0]
        embeds = self.embed_images(pixels).view(batch, -1, text.shape[-1])  # (B, n, D)
        return self.temperature.to(images.device) * (embeds * text[:, None]).sum(-1)

    def forward(self, images: Tensor, items: Items | None = None) -> Tensor:
        return self.weight * -self.pickscore(images, items).mean(1)

    @torch.no_grad()
    def score(self, images: Tensor, items: Items | None = None) -> Tensor:
        """PickScore of each whole image for its prompt, (B,): tau * cos(image, text), higher is better."""
        return self.pickscore(images, items, crops=False)[:, 0]
