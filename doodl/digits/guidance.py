"""The paper's other three applications in the digits world, as guidance losses on the shipped
weights, ready for LightningCLI ``class_path``s (``configs/digits_clip.yaml``,
``configs/digits_bold.yaml``, ``configs/digits_personalize.yaml``).

    DigitsCLIP()                      the shipped tiny CLIP behind ``doodl.guidance.OpenCLIP``
    DigitCLIPTextLoss(prompt=None)    CLIP text guidance (paper section 5.1, open-vocabulary prompts)
    DigitBoldnessLoss(mode=...)       aesthetic improvement (section 5.4): the boldness head stands
                                      in for the LAION aesthetic predictor
    DigitReferenceLoss(reference_images=None)   personalization from a few reference images (5.3)

Each builds its own frozen tiny CLIP (0.4 M parameters) from ``root`` (default: the shipped
weights). The generic losses do the work; these classes only wire the shipped files in.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch

from doodl.guidance import AestheticLoss, CLIPTextLoss, Cutouts, ImageSimilarityLoss, OpenCLIP
from doodl.guidance.clip_text import Reduction
from doodl.guidance.image_similarity import Reference

from .assets import load_scorer, manifest, weights_dir
from .nets import CLIP_NAME


class DigitsCLIP(OpenCLIP):
    """The shipped tiny CLIP (16x16 images, 64-d embeddings) as an ``OpenCLIP`` adapter, with the
    truncated 4096-id tokenizer it was trained with (open_clip's own tokenizer for the name would
    give ids up to 49407). Its custom open_clip config is registered on first use."""

    def __init__(self, root: str | None = None, device: str | torch.device = "cpu"):
        import open_clip

        folder = weights_dir(root)
        info = manifest(folder)["components"]["clip"]
        if CLIP_NAME not in open_clip.list_models():
            open_clip.add_model_config(folder / info["config"])
        super().__init__(CLIP_NAME, str(folder / info["path"]), device=device,
                         tokenizer=str(folder / info["tokenizer"]))


class DigitCLIPTextLoss(CLIPTextLoss):
    """CLIP text guidance (paper section 5.1): spherical tiny-CLIP distance between random crops
    and each item's "prompt" (or a fixed ``prompt``). The tiny CLIP knows all ten digits and the
    style words "thin" / "thick"; the generator never saw 8 or 9.

    Args: see ``doodl.guidance.CLIPTextLoss``; ``cutouts``: crop settings bound to the 16 px input,
    whose ``min_size`` lets crops be smaller than it (else every crop is the whole image;
    configs/digits_clip.yaml: ``Cutouts(n=8, min_size=12)``); None: the whole image.
    ``root``: weights folder (default: shipped)."""

    def __init__(self, prompt: str | None = None, cutouts: Cutouts | None = None, reduction: Reduction = "mean",
                 weight: float = 1.0, root: str | None = None):
        super().__init__(DigitsCLIP(root), prompt=prompt, cutouts=cutouts, reduction=reduction, weight=weight)


class DigitReferenceLoss(ImageSimilarityLoss):
    """Personalization (paper section 5.3): spherical tiny-CLIP distance to the renormalized mean
    embedding of a few reference images: fixed ``reference_images`` (paths or tensors), or each
    item's "reference_images" (e.g. ``configs/references/*.png``, real test digits).

    Args: see ``doodl.guidance.ImageSimilarityLoss`` (configs/digits_personalize.yaml crops with
    ``Cutouts(n=8, min_size=12)``); ``root``: weights folder (default: shipped)."""

    def __init__(self, reference_images: Reference | Sequence[Reference] | None = None, cutouts: Cutouts | None = None,
                 reduction: Reduction = "mean", weight: float = 1.0, root: str | None = None):
        super().__init__(DigitsCLIP(root), reference_images=reference_images, cutouts=cutouts, reduction=reduction,
                         weight=weight)


class DigitBoldnessLoss(AestheticLoss):
    """Aesthetic improvement (paper section 5.4) with the boldness head standing in for the LAION
    aesthetic predictor: a linear head on the normalized tiny-CLIP image embedding, fitted to
    stroke thickness mapped to [1, 10] (the aesthetic scale, so ``AestheticLoss``'s [1, 10]
    clipping fits). 'maximize' makes digits bolder; 'target' moves the score toward
    ``target_score`` (or each item's "target_score"), e.g. 2 for thin digits.

    Args: see ``doodl.guidance.AestheticLoss``; ``root``: weights folder (default: shipped)."""

    def __init__(self, mode: Literal["maximize", "target"] = "maximize", target_score: float | None = None,
                 cutouts: Cutouts | None = None, weight: float = 1.0, root: str | None = None):
        head = load_scorer(root).linear  # ScorerHead keeps the LAION head's Linear(D, 1) as .linear
        super().__init__(DigitsCLIP(root), dict(head.state_dict()), head="linear", mode=mode, target_score=target_score,
                         cutouts=cutouts, weight=weight)
