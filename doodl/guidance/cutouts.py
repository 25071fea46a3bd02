"""Random square crops ("cutouts") of each image, pooled to a guidance model's input size.

SPEC.md section 4. For each of n crops of an image of size (H, W):
    min_size = min(H, W, cut_size)        max_size = min(H, W)
    size = int(u ** power * (max_size - min_size) + min_size),  u ~ U[0, 1)
    (top, left) uniform over the positions where the crop fits
    crop -> adaptive average pool to the model's input size
power < 1 favours large crops (0.3 by default). ``min_cut`` lowers min_size below the model's input
size, for images no larger than that input (the digits world: 16 px images for a 16 px classifier,
where the SPEC rule makes every crop the whole image); a crop smaller than the input is upsampled to
it bilinearly instead of pooled. Every call draws fresh crops, separately for each
image, from one explicit ``torch.Generator``, so a seeded run repeats exactly. A caller may
instead give one generator per image (``generators_of(items)``: an item's "generator" key), so
that an image's crops depend only on its own stream, not on the batch it is in.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise ValueError(f"cut_size must be an int or (height, width), got {size}")
    return size


def generators_of(items: Sequence[Mapping[str, Any]] | None) -> list[torch.Generator | None] | None:
    """Each item's own crop generator (its "generator" key), or None when no item has one."""
    if not items or not any(isinstance(it.get("generator"), torch.Generator) for it in items):
        return None
    return [it.get("generator") for it in items]


SCORE_STREAM = 7919  # offset of the fixed score crops' seed from the loss's own crop seed


def fixed_generators(batch: int, seed: int) -> list[torch.Generator]:
    """One generator per image, all seeded alike (``seed + SCORE_STREAM``): the same crops for every
    image and every call, for a score that does not change from call to call (the loss draws
    fresh crops instead, from a different stream)."""
    return [torch.Generator().manual_seed(int(seed) + SCORE_STREAM) for _ in range(batch)]


MIN_CUT_WITHOUT_CROPS = "min_cut is set but cutouts is off (0 crops: the whole image): set cutouts=<crops per image> or drop min_cut"


class Cutouts:
    """Draws ``n`` random crops of each image, each pooled to ``cut_size``.

    Args:
        cut_size: the guidance model's input size, an int or (height, width).
        n: crops per image (16 by default); 0 or None pools the whole image to ``cut_size`` instead.
        power: exponent on the uniform draw of the crop size (0.3 by default).
        generator: the CPU ``torch.Generator`` for sizes and positions; built from ``seed`` when None.
        seed: seed of the generator built when ``generator`` is None.
        min_cut: smallest crop side in pixels; None (default) is SPEC.md's min(H, W, cut_size).
    """

    def __init__(
        self,
        cut_size: int | tuple[int, int],
        n: int | None = 16,
        power: float = 0.3,
        generator: torch.Generator | None = None,
        seed: int = 0,
        min_cut: int | None = None,
    ):
        self.cut_size = _pair(cut_size)
        if min(self.cut_size) < 1:
            raise ValueError(f"cut_size must be positive, got {self.cut_size}")
        if n is not None and n < 0:
            raise ValueError(f"n must be >= 0 (0 or None: whole image), got {n}")
        if not power > 0:
            raise ValueError(f"power must be > 0, got {power}")
        if min_cut is not None and (not isinstance(min_cut, int) or isinstance(min_cut, bool) or min_cut < 1):
            raise ValueError(f"min_cut must be a positive number of pixels or None (SPEC's min(side, cut_size)), got {min_cut!r}")
        if min_cut is not None and not n:
            raise ValueError(MIN_CUT_WITHOUT_CROPS)
        self.n = int(n or 0)
        self.seed = int(seed)
        self.power = float(power)
        self.min_cut = None if min_cut is None else int(min_cut)
        if generator is None:
            generator = torch.Generator().manual_seed(int(seed))
        elif generator.device.type != "cpu":
            raise ValueError("generator must be a CPU torch.Generator (it draws crop sizes and positions)")
        self.generator = generator

    def sample_boxes(self, height: int, width: int, generator: torch.Generator | None = None) -> list[tuple[int, int, int]]:
        """``n`` crops as (top, left, size), drawn from ``generator`` (default: the cutouts' own)."""
        gen = self.generator if generator is None else generator
        max_size = min(height, width)
        if self.min_cut is None:
            min_size = min(height, width, *self.cut_size)
        elif self.min_cut > max_size:
            raise ValueError(
                f"min_cut={self.min_cut} is larger than the {height}x{width} image: lower min_cut to at most {max_size}"
            )
        else:
            min_size = self.min_cut
        boxes = []
        for _ in range(self.n):
            u = torch.rand((), generator=gen).item()
            size = int(u**self.power * (max_size - min_size) + min_size)
            top = int(torch.randint(0, height - size + 1, (), generator=gen))
            left = int(torch.randint(0, width - size + 1, (), generator=gen))
            boxes.append((top, left, size))
        return boxes

    def __call__(self, images: Tensor, generators: Sequence[torch.Generator | None] | None = None) -> Tensor:
        """(B, C, H, W) -> (B, n, C, *cut_size); n = 1 (the whole image) when crops are off.
        ``generators``: one per image (None entries use the cutouts' own generator)."""
        if images.dim() != 4:
            raise ValueError(f"images must be (B, C, H, W), got {tuple(images.shape)}")
        batch, channels, height, width = images.shape
        if generators is not None and len(generators) != batch:
            raise ValueError(f"got {len(generators)} generators for {batch} images: pass one per image")
        if self.n == 0:
            return F.adaptive_avg_pool2d(images, self.cut_size).unsqueeze(1)
        crops = []
        for b in range(batch):
            gen = None if generators is None else generators[b]
            for top, left, size in self.sample_boxes(height, width, gen):
                crops.append(self.resize(images[b : b + 1, :, top : top + size, left : left + size]))
        return torch.cat(crops).view(batch, self.n, channels, *self.cut_size)

    @classmethod
    def optional(cls, cut_size, n: int | None, power: float = 0.3, seed: int = 0, min_cut: int | None = None
                 ) -> "Cutouts | None":
        """Cutouts for ``n`` crops, or None when crops are off (``min_cut`` then is an error)."""
        if not n:
            if min_cut is not None:
                raise ValueError(MIN_CUT_WITHOUT_CROPS)
            return None
        return cls(cut_size, n=n, power=power, seed=seed, min_cut=min_cut)

    def for_items(self, images: Tensor, items: Sequence[Mapping[str, Any]] | None = None, fixed: bool = False) -> Tensor:
        """Crops for a loss: fresh ones from each item's "generator" (else the cutouts' own), or
        with ``fixed`` the same crops at every call (a score's; ``fixed_generators`` of ``seed``)."""
        gens = fixed_generators(images.shape[0], self.seed) if fixed else generators_of(items)
        return self(images, gens)

    def resize(self, crop: Tensor) -> Tensor:
        """A crop to ``cut_size``: adaptive average pooling (SPEC), or bilinear upsampling when the
        crop is smaller than ``cut_size`` (only with ``min_cut``)."""
        small = crop.shape[-2] < self.cut_size[0] or crop.shape[-1] < self.cut_size[1]
        if self.min_cut is not None and small:
            return F.interpolate(crop, size=self.cut_size, mode="bilinear", align_corners=False)
        return F.adaptive_avg_pool2d(crop, self.cut_size)

    def __repr__(self) -> str:
        extra = "" if self.min_cut is None else f", min_cut={self.min_cut}"
        return f"Cutouts(cut_size={self.cut_size}, n={self.n}, power={self.power}{extra})"
