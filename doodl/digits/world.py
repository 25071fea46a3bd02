"""The digits world as configurable parts: the backend and guidance losses on its shipped weights,
ready for LightningCLI ``class_path``s (``configs/digits.yaml``)."""

from __future__ import annotations

from typing import Any

from doodl.guidance import ClassifierLoss, Cutouts
from doodl.models import StableDiffusion

from .assets import load_classifier, pipeline_path

IMAGE_SIZE = 16  # pixels; the VAE downsamples by 2 -> 8x8 latents


class DigitsStableDiffusion(StableDiffusion):
    """The project's tiny text-to-image Stable Diffusion (trained on digits 0-7 only); loads
    through exactly the code of a real checkpoint. ``pretrained`` defaults to the shipped folder."""

    def __init__(self, pretrained: str | None = None, dtype: str = "float32", device: str = "cpu", **kwargs: Any):
        super().__init__(str(pretrained or pipeline_path()), dtype=dtype, device=device, **kwargs)


class DigitClassifierLoss(ClassifierLoss):
    """Vocabulary expansion in the digits world: cross-entropy of the guidance classifier (all ten
    digits, trained on split A) toward each item's "target_class" (or a fixed one). ``cutouts``:
    crop settings bound to the 16 px input (``Cutouts(n=16, min_size=8)`` in configs/digits.yaml:
    without a ``min_size`` below 16 every crop is the whole image); None: the whole image.
    ``score_on``: what the score reads with crops on, "crops" or "image" (``ClassifierLoss``)."""

    def __init__(self, target_class: int | None = None, cutouts: Cutouts | None = None, weight: float = 1.0,
                 root: str | None = None, score_on: str = "crops"):
        super().__init__(load_classifier(root), target_class=target_class, input_size=IMAGE_SIZE,
                         mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), cutouts=cutouts, weight=weight,
                         score_on=score_on)
