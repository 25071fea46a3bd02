"""The digits data: scikit-learn's bundled 8x8 handwritten digits, upsampled to RGB images in
[0, 1], a fixed three-way split, captions, and the visible "boldness" property."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

IMAGE_SIZE = 16
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SEEN = tuple(range(8))  # the generator and its text encoder never see 8 and 9
TEMPLATES = (
    "a handwritten digit {}",
    "a drawing of the number {}",
    "the digit {}",
    "a handwritten {}",
)
STYLED_TEMPLATES = (  # the same with a style word, tiny-CLIP captions only
    "a {style} handwritten digit {}",
    "a {style} drawing of the number {}",
    "a {style} digit {}",
    "a {style} handwritten {}",
)
EVAL_TEMPLATE = TEMPLATES[0]
STYLE_WORDS = ("thin", "thick")  # the lightest / heaviest third of split A by ink
SPLIT_SEED = 0
SPLIT_SIZES = {"test": 297, "A": 800, "B": 700}  # sums to the 1797 images


@dataclass
class Digits:
    images: torch.Tensor  # (N, 3, 16, 16) float32 in [0, 1], gray repeated
    labels: torch.Tensor  # (N,) int64 in 0..9
    ink: torch.Tensor  # (N,) mean ink of the original 8x8 image, in [0, 1]


def load(image_size: int = IMAGE_SIZE) -> Digits:
    """All 1797 digits; 16 gray levels scaled to [0, 1], bilinear upsampling from 8x8."""
    raw = load_digits()
    small = torch.tensor(raw.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8)
    big = F.interpolate(small, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = big.clamp(0, 1).repeat(1, 3, 1, 1).contiguous()
    return Digits(images, torch.tensor(raw.target, dtype=torch.int64), small.mean(dim=(1, 2, 3)))


def split_indices(n: int = 1797, seed: int = SPLIT_SEED) -> dict[str, list[int]]:
    """Disjoint index lists: test (held out), A (guidance models + generator), B (judge only).

    Rule: a permutation of range(n) by numpy's default_rng(seed), cut in that order into
    test, A, B of SPLIT_SIZES; each list is then sorted."""
    if sum(SPLIT_SIZES.values()) != n:
        raise ValueError(f"split sizes {SPLIT_SIZES} do not add up to {n}")
    perm = np.random.default_rng(seed).permutation(n)
    out, start = {}, 0
    for name, size in SPLIT_SIZES.items():
        out[name] = sorted(int(i) for i in perm[start : start + size])
        start += size
    return out


def boldness(ink: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """The scorer's target: mean ink mapped linearly from [lo, hi] to [1, 10] and clipped."""
    return (1 + 9 * (ink - lo) / (hi - lo)).clamp(1, 10)


def caption(label: int, template: int = 0, style: str | None = None) -> str:
    """E.g. caption(3) = "a handwritten digit three"; caption(3, 2, "thick") = "a thick digit three"."""
    if style is None:
        return TEMPLATES[template].format(WORDS[label])
    return STYLED_TEMPLATES[template].format(WORDS[label], style=style)


def random_captions(labels: torch.Tensor, generator: torch.Generator, drop: float = 0.0,
                    styles: torch.Tensor | None = None) -> list[str]:
    """One caption per label with a random template; the empty prompt with probability ``drop``
    (classifier-free guidance dropout); ``styles`` (-1, 0, 1 per item) picks thin / none / thick."""
    n = len(labels)
    tmpl = torch.randint(len(TEMPLATES), (n,), generator=generator)
    keep = torch.rand(n, generator=generator) >= drop
    use_style = torch.rand(n, generator=generator) < 0.5
    out = []
    for i in range(n):
        style = None
        if styles is not None and styles[i] != 0 and use_style[i]:
            style = STYLE_WORDS[int(styles[i] > 0)]
        out.append(caption(int(labels[i]), int(tmpl[i]), style) if keep[i] else "")
    return out


def shift(images: torch.Tensor, generator: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Random translation by up to ``max_shift`` pixels (zero fill): light augmentation."""
    n, _, h, w = images.shape
    pad = F.pad(images, (max_shift,) * 4)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    return torch.stack([pad[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
