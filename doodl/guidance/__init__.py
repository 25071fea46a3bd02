"""Guidance losses: images in [0, 1] -> per-sample loss (SPEC.md section 6), one file per loss."""

from .aesthetic import AestheticLoss, AestheticMLP
from .base import GuidanceLoss
from .classifier import IMAGENET_MEAN, IMAGENET_STD, ClassifierLoss
from .clip_model import OpenCLIP, spherical_distance
from .clip_text import CLIPTextLoss
from .composite import CallableLoss, CompositeLoss
from .cutouts import Cutouts
from .hpsv2 import HPSv2Loss
from .image_similarity import ImageSimilarityLoss, load_image
from .pickscore import PickScoreLoss

__all__ = [
    "AestheticLoss",
    "AestheticMLP",
    "CallableLoss",
    "ClassifierLoss",
    "CLIPScore",
    "CLIPTextLoss",
    "CompositeLoss",
    "Cutouts",
    "GuidanceLoss",
    "HPSv2Loss",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageSimilarityLoss",
    "OpenCLIP",
    "PickScoreLoss",
    "TensorFeatures",
    "load_image",
    "spherical_distance",
]


def __getattr__(name: str):
    # CLIPScore pulls in torchmetrics (seconds to import): load it only when asked for.
    if name in ("CLIPScore", "TensorFeatures"):
        from . import clip_score

        return getattr(clip_score, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
