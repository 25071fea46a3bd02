"""CLIP text guidance: spherical distance between each crop's image embedding and the prompt's.

SPEC.md section 6. With unit-norm CLIP embeddings u (a crop) and v (the text):
    d(u, v) = 2 * arcsin(|u - v| / 2)^2          (= theta^2 / 2, theta the angle between u and v)
    loss    = weight * reduce_crops d(u_k, v)      reduce: min (the reference code) or mean
The score for logging is the cosine similarity of the whole image (resized, no crops) and the text.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import GuidanceLoss, Items, check_images, per_item
from .clip_model import OpenCLIP, spherical_distance
from .cutouts import Cutouts, bind_cutouts, check_cutouts

Reduction = Literal["min", "mean"]


def reduce_crops(distances: Tensor, reduction: str) -> Tensor:
    """(B, n) per-crop distances -> (B,)."""
    if reduction == "min":
        return distances.min(dim=1).values
    if reduction == "mean":
        return distances.mean(dim=1)
    raise ValueError(f"reduction must be 'min' or 'mean', got {reduction!r}")


class CLIPEmbeddingLoss(GuidanceLoss):
    """Shared machinery: crop, embed, spherical distance to a per-sample target embedding, reduce.

    Args:
        clip: the frozen open_clip adapter (can be shared between losses).
        cutouts: the crop settings (``Cutouts(n=16)`` in the paper; power 0.06 in its personalization
            demo), bound here to CLIP's input size; None embeds the whole image pooled to that size.
        reduction: 'min' over crops (reference code) or 'mean' (diffusers' CLIP-guided example).
        weight: scale of the loss.
    """

    score_direction = "max"  # cosine similarity

    def __init__(
        self,
        clip: OpenCLIP,
        cutouts: Cutouts | None = None,
        reduction: Reduction = "min",
        weight: float = 1.0,
    ):
        super().__init__(weight)
        check_cutouts(cutouts, type(self).__name__)  # before any model loads
        if not isinstance(clip, OpenCLIP):
            raise TypeError(f"clip must be a doodl.guidance.OpenCLIP, got {type(clip).__name__}")
        if reduction not in ("min", "mean"):
            raise ValueError(f"reduction must be 'min' or 'mean', got {reduction!r}")
        self.clip = clip
        self.reduction = reduction
        self.cutouts = bind_cutouts(cutouts, clip.image_size, type(self).__name__)

    def targets(self, items: Items | None, batch: int) -> Tensor:  # pragma: no cover - abstract
        """(B, D) unit-norm target embeddings."""
        raise NotImplementedError

    def distances(self, images: Tensor, items: Items | None = None) -> Tensor:
        """(B, n) spherical distance of every crop to its image's target."""
        check_images(images)
        target = self.targets(items, images.shape[0]).to(images.device)  # (B, D)
        if self.cutouts is not None:
            crops = self.cutouts.for_items(images, items)  # (B, n, 3, S, S)
        else:  # the whole image, pooled to the input size (n = 1)
            crops = F.adaptive_avg_pool2d(images, self.clip.image_size)[:, None]
        batch, n = crops.shape[:2]
        embeds = self.clip.embed_images(crops.flatten(0, 1)).view(batch, n, -1)  # (B, n, D)
        return spherical_distance(embeds, target[:, None])

    def forward(self, images: Tensor, items: Items | None = None) -> Tensor:
        return self.weight * reduce_crops(self.distances(images, items), self.reduction)

    @torch.no_grad()
    def score(self, images: Tensor, items: Items | None = None) -> Tensor:
        """Cosine similarity of each whole image (CLIP-preprocessed, no crops) to its target, (B,)."""
        check_images(images)
        target = self.targets(items, images.shape[0]).to(images.device)
        return (self.clip.embed_images(self.clip.resize(images)) * target).sum(-1)


class CLIPTextLoss(CLIPEmbeddingLoss):
    """Spherical CLIP distance to a prompt (fixed, or ``item["prompt"]`` per sample).

    Args:
        clip: ``OpenCLIP(model_name, pretrained)``; the paper's default is ViT-g-14 laion2b_s12b_b42k.
        prompt: a fixed prompt; None reads ``items[i]["prompt"]``.
        cutouts, reduction, weight: see ``CLIPEmbeddingLoss``.
    """

    def __init__(
        self,
        clip: OpenCLIP,
        prompt: str | None = None,
        cutouts: Cutouts | None = None,
        reduction: Reduction = "min",
        weight: float = 1.0,
    ):
        super().__init__(clip, cutouts, reduction, weight)
        if prompt is not None and not isinstance(prompt, str):
            raise ValueError(f"prompt must be a string or None, got {type(prompt).__name__}")
        self.prompt = prompt
        self._text_cache: dict[str, Tensor] = {}
        self.freeze_()

    @property
    def item_keys(self) -> tuple[str, ...]:
        return () if self.prompt is not None else ("prompt",)

    def targets(self, items: Items | None, batch: int) -> Tensor:
        prompts = per_item("prompt", self.prompt, items, batch)
        missing = sorted({p for p in prompts if p not in self._text_cache})
        if missing:
            for prompt, embed in zip(missing, self.clip.embed_text(missing)):
                self._text_cache[prompt] = embed
        return torch.stack([self._text_cache[p] for p in prompts])
