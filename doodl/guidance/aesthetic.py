"""LAION aesthetic predictor on the normalized CLIP image embedding (SPEC.md section 6).

    e     = CLIP image embedding / |e|          (OpenAI CLIP ViT-L/14: 768; ViT-B/32: 512)
    s     = clip(head(e), 1, 10)
    loss  = weight * (-s)                         (mode 'maximize')
          = weight * |s - target|                 (mode 'target'; target fixed or item["target_score"])
Heads, loaded from a local state dict (torch or safetensors):
    'linear': the original LAION predictor, Linear(D, 1)           keys: weight, bias
    'mlp':    the "improved aesthetic predictor", linear layers with dropout and no activations:
              Linear(D,1024) Dropout(.2) Linear(1024,128) Dropout(.2) Linear(128,64) Dropout(.1)
              Linear(64,16) Linear(16,1)                          keys: layers.{0,2,4,6,7}.{weight,bias}
"""

from __future__ import annotations

import math
import os
import pickle
from typing import Literal, Mapping

import torch
from torch import Tensor, nn

from .base import GuidanceLoss, Items, check_images, missing_key, per_item
from .clip_model import OpenCLIP
from .cutouts import Cutouts, bind_cutouts, check_cutouts

SCORE_MIN, SCORE_MAX = 1.0, 10.0


def linear_head(dim: int) -> nn.Module:
    """The LAION linear aesthetic head."""
    return nn.Linear(dim, 1)


class AestheticMLP(nn.Module):
    """The improved aesthetic predictor's layer layout (its state dict keys are ``layers.<i>.*``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(dim, 1024), nn.Dropout(0.2),
            nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, embeds: Tensor) -> Tensor:
        return self.layers(embeds)


def load_state_dict_file(path: str | os.PathLike, what: str, how: str) -> dict[str, Tensor]:
    """A local torch (.pt/.pth/.bin) or safetensors file -> state dict; errors name the file.

    Torch files are read with ``weights_only=True``: tensors and plain containers only, never the
    code a pickle can carry."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        kind = "is a directory" if os.path.isdir(path) else "not found"
        raise FileNotFoundError(f"{what} weights file {path!r} {kind}: {how}")
    safetensors = path.endswith(".safetensors")
    try:
        if safetensors:
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # safetensors' SafetensorError, pickle's UnpicklingError, RuntimeError, EOFError, ...
        kind = "a safetensors file" if safetensors else "a torch state dict (torch.save(module.state_dict()))"
        if isinstance(err, pickle.UnpicklingError):  # what weights_only refuses, or not a torch.save file at all
            reason = "it is corrupt, or holds objects other than tensors (not loaded: a pickle can run code)"
        else:
            reason = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:300]}"
        raise ValueError(f"{what} weights file {path!r} could not be read as {kind}: {reason}; {how}") from err
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path!r} is not a state dict of tensors ({what}): save it with torch.save(module.state_dict())")
    return state


def head_from_state_dict(state: dict[str, Tensor], kind: str) -> tuple[nn.Module, str]:
    """Build the head that ``state`` belongs to ('auto' reads the kind from its keys) and load it strictly."""
    if kind == "auto":
        if set(state) == {"weight", "bias"}:
            kind = "linear"
        elif "layers.0.weight" in state:
            kind = "mlp"
        else:
            raise ValueError(
                f"cannot tell the aesthetic head from its keys {sorted(state)[:6]}: expected 'weight', 'bias' "
                f"(linear) or 'layers.0.weight' ... 'layers.7.bias' (improved MLP)"
            )
    first = {"linear": "weight", "mlp": "layers.0.weight"}
    if kind not in first:
        raise ValueError(f"head must be 'auto', 'linear' or 'mlp', got {kind!r}")
    if first[kind] not in state:
        raise ValueError(f"head={kind!r} needs a {first[kind]!r} key; the file has {sorted(state)[:6]}")
    dim = state[first[kind]].shape[1]
    head = linear_head(dim) if kind == "linear" else AestheticMLP(dim)
    head.load_state_dict(state, strict=True)
    return head, kind


class AestheticLoss(GuidanceLoss):
    """Maximize the LAION aesthetic score, or move it toward a target score.

    Args:
        clip: ``OpenCLIP("ViT-L-14", "openai")`` for the published heads (768-d; ViT-B-32 for 512-d).
        head_path: local file of the head's state dict (.pth / .pt / .safetensors), or the state
            dict itself (a mapping of tensors, for heads a program already holds).
        head: 'auto' (from the state dict keys), 'linear' or 'mlp'.
        mode: 'maximize' (loss = -score) or 'target' (loss = |score - target|).
        target_score: the fixed target in 'target' mode; None reads ``items[i]["target_score"]``.
        cutouts: the crop settings (``Cutouts``, bound here to CLIP's input size); the score then
            averages over a fixed set of crops (the same every call). None (default) scores the whole
            image (CLIP preprocessing).
        weight: scale of the loss.
    """

    def __init__(
        self,
        clip: OpenCLIP,
        head_path: str | Mapping[str, Tensor],
        head: Literal["auto", "linear", "mlp"] = "auto",
        mode: Literal["maximize", "target"] = "maximize",
        target_score: float | None = None,
        cutouts: Cutouts | None = None,
        weight: float = 1.0,
    ):
        super().__init__(weight)
        check_cutouts(cutouts, type(self).__name__)  # before any model loads
        if not isinstance(clip, OpenCLIP):
            raise TypeError(f"clip must be a doodl.guidance.OpenCLIP, got {type(clip).__name__}")
        if mode not in ("maximize", "target"):
            raise ValueError(f"mode must be 'maximize' or 'target', got {mode!r}")
        if mode == "maximize" and target_score is not None:
            raise ValueError("target_score is set but mode='maximize': use mode='target' to move toward it")
        how = "download the LAION aesthetic head (e.g. sa_0_4_vit_l_14_linear.pth) and pass head_path=<its path>"
        if isinstance(head_path, Mapping):
            state, head_path = dict(head_path), "<state dict>"
        else:
            state = load_state_dict_file(head_path, "aesthetic head", how)
        self.head, self.head_kind = head_from_state_dict(state, head)
        self.head.to(clip.mean.device)
        in_dim = next(self.head.parameters()).shape[1]
        if in_dim != clip.embed_dim:
            raise ValueError(
                f"aesthetic head {head_path!r} takes {in_dim}-d embeddings but {clip.model_name} gives {clip.embed_dim}-d: "
                f"pair the ViT-L/14 head (768) with ViT-L-14 and the ViT-B/32 head (512) with ViT-B-32"
            )
        self.clip = clip
        self.mode = mode
        self.target_score = target_score
        self.cutouts = bind_cutouts(cutouts, clip.image_size, type(self).__name__)
        self.freeze_()

    @property
    def score_direction(self) -> str | None:
        """Higher is better when maximizing; in 'target' mode the score has no better direction."""
        return "max" if self.mode == "maximize" else None

    @property
    def item_keys(self) -> tuple[str, ...]:
        return ("target_score",) if self.mode == "target" and self.target_score is None else ()

    def check_item(self, item) -> list[str]:
        """In 'target' mode without a fixed target: the item's ``target_score``, a finite number."""
        if not self.item_keys:
            return []
        missing = missing_key("target_score", item)
        if missing:
            return [missing]
        v = item["target_score"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return [f"target_score must be a finite number, got {v!r}"]
        return []

    def aesthetic(self, images: Tensor, items: Items | None = None, fixed: bool = False) -> Tensor:
        """(B, n) clipped scores of every crop (n = 1: the whole image); fresh crops from the items'
        generators, or the same crops every call when ``fixed``."""
        check_images(images)
        if self.cutouts is not None:
            crops = self.cutouts.for_items(images, items, fixed)
        else:
            crops = self.clip.resize(images)[:, None]
        batch, n = crops.shape[:2]
        embeds = self.clip.embed_images(crops.flatten(0, 1))  # (B*n, D), unit norm
        head_dtype = next(self.head.parameters()).dtype
        return self.head(embeds.to(head_dtype)).float().view(batch, n).clamp(SCORE_MIN, SCORE_MAX)

    def forward(self, images: Tensor, items: Items | None = None) -> Tensor:
        scores = self.aesthetic(images, items)  # (B, n)
        if self.mode == "maximize":
            return self.weight * -scores.mean(1)
        target = torch.tensor(per_item("target_score", self.target_score, items, images.shape[0]),
                              dtype=scores.dtype, device=scores.device)
        return self.weight * (scores - target[:, None]).abs().mean(1)

    @torch.no_grad()
    def score(self, images: Tensor, items: Items | None = None) -> Tensor:
        """Aesthetic score in [1, 10] of each image, (B,): the whole image, or with cutouts the mean
        over a fixed set of crops (the same every call)."""
        return self.aesthetic(images, items, fixed=True).mean(1)
