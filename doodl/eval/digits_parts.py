"""The digits world's parts for `doodl compare` configs: the feature space of KID / FID (the
independent judge's penultimate activations) and the real test digits of a group as references.

    features: doodl.eval.digits_parts.digits_judge_features
    reference_loader: doodl.eval.digits_parts.digits_test_images   (with by_group: true)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from doodl.digits import assets
from doodl.digits.data import SEEN

GROUPS = {"seen": tuple(SEEN), "unseen": (8, 9)}  # the digits the generator saw / never saw


class JudgeFeatures(nn.Module):
    """The digits judge's activations before its last layer, (B, 3, 16, 16) in [0, 1] -> (B, 128)."""

    def __init__(self, judge: nn.Module):
        super().__init__()
        self.judge = judge

    def forward(self, images: Tensor) -> Tensor:
        if images.shape[-2:] != (16, 16):
            raise ValueError(f"the digits judge's features need 16x16 images, got {tuple(images.shape)}")
        return self.judge.net[:-1](2 * images.mean(dim=1) - 1)  # the judge's own input: 2 * gray - 1


def digits_judge_features(root: str | None = None) -> JudgeFeatures:
    """The feature extractor of the digits benchmark's KID / FID, frozen."""
    return JudgeFeatures(assets.load_judge(root)).eval().requires_grad_(False)


def digits_test_images(group: str | None = None, root: str | None = None) -> Tensor:
    """The held-out real test digits (N, 3, 16, 16) in [0, 1]: all of them, or those of a group
    ("seen": 0-7, "unseen": 8 and 9)."""
    images, labels = assets.test_set(root)
    if group is None:
        return images
    if group not in GROUPS:
        raise ValueError(f"unknown digits group {group!r}; groups: {', '.join(GROUPS)}")
    return images[torch.isin(labels, torch.tensor(GROUPS[group]))]
