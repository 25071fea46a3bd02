"""The image an item delivers is the image its PNG holds: what is scored is what is saved.

A decoded image has pixels a little outside [0, 1] (the VAE is not bounded); its PNG holds it
clamped to [0, 1] and rounded to 8 bits. ``delivered`` is that image as a float tensor: the scores,
the early stop and the best iterate are taken on it, and every PNG doodl writes comes from
``to_uint8``, so that ``doodl test`` on the saved files gives back the scores the run reported.
The loss keeps the unclamped, differentiable image.
"""

from __future__ import annotations

import torch
from torch import Tensor


def to_uint8(images: Tensor) -> Tensor:
    """The 8-bit pixels of images in [0, 1], (..., 3, H, W) -> uint8 on the CPU, rounded as
    ``torchvision.utils.save_image`` does (x * 255 + 0.5, clamped to [0, 255], truncated).
    NaN pixels become 0 (an iterate with any is never an item's result: ``ItemState.record``)."""
    x = torch.nan_to_num(images.detach().float().cpu(), nan=0.0)
    return x.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)


def delivered(images: Tensor) -> Tensor:
    """``images`` as their PNG files hold them: clamped to [0, 1], 8 bits, back as floats in the
    images' dtype and on their device (k / 255, as ``doodl.run.start.load_image`` reads a PNG)."""
    return to_uint8(images).to(device=images.device, dtype=images.dtype) / 255.0


def all_finite(images: Tensor) -> Tensor:
    """(B,) bool: which images of a (B, 3, H, W) batch have only finite pixels."""
    return torch.isfinite(images.detach()).flatten(1).all(dim=1)
