"""Where an item's optimization starts: seeded noise, or the EDICT inversion of its image."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from doodl.core import EDICTSampler


def load_image(path: str | Path, height: int, width: int) -> Tensor:
    """An image file as a (1, 3, height, width) float tensor in [0, 1] (resized if needed)."""
    from PIL import Image, UnidentifiedImageError
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist: give an existing image file in the item's 'image'")
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (width, height):
                im = im.resize((width, height), Image.Resampling.BICUBIC)
            arr = np.asarray(im, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise ValueError(f"cannot read image {path}: it does not decode ({type(e).__name__}: {e})") from e
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()


def psnr(a: Tensor, b: Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [0, 1]."""
    mse = float((a.float() - b.float()).square().mean())
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


class StartLatents:
    """``(x, y, extra) = StartLatents(...)(item)`` for steps [start_step, T) of ``sampler``.

    Without an "image" key: x = y = seeded noise ("seed" key). With one: the image is encoded,
    and steps [start_step, T) are inverted from (z0, z0) (SPEC.md section 3); ``extra`` then
    holds the PSNR of the unoptimized round trip image -> invert -> sample -> decode.
    """

    def __init__(self, model: Any, sampler: EDICTSampler, height: int, width: int, dtype: torch.dtype, start_step: int,
                 cfg_scale: float | None):
        self.model, self.sampler, self.cfg_scale = model, sampler, cfg_scale
        self.height, self.width, self.dtype, self.start_step = height, width, dtype, start_step

    @torch.no_grad()
    def __call__(self, item: Mapping[str, Any]) -> tuple[Tensor, Tensor, dict[str, float]]:
        if item.get("image") is None:
            z = self.model.initial_noise(1, self.height, self.width, generator=int(item.get("seed", 0)), dtype=self.dtype)
            return z, z.clone(), {}
        image = load_image(item["image"], self.height, self.width).to(self.model.device)
        z0 = self.model.encode(image, dtype=self.dtype)
        # the same noise model as the optimization's chain, so that the round trip is exact
        eps_fn = self.model.eps_fn(self.model.encode_prompt([item.get("prompt", "")]), self.cfg_scale)
        x, y = self.sampler.invert(eps_fn, z0, z0, start=self.start_step)
        x0, _ = self.sampler.sample(eps_fn, x, y, start=self.start_step)
        recon = self.model.decode(x0).clamp(0, 1)
        return x, y, {"inversion_psnr": psnr(recon, image)}
