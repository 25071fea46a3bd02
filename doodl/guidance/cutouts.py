"""Random square crops ("cutouts") of each image, pooled to a guidance model's input size.

SPEC.md section 4. For each of n crops of an image of size (H, W):
    min_size = min(H, W, cut_size)        max_size = min(H, W)
    size = int(u ** power * (max_size - min_size) + min_size),  u ~ U[0, 1)
    (top, left) uniform over the positions where the crop fits
    crop -> adaptive average pool to the model's input size
power < 1 favours large crops (0.3 by default). A set ``min_size`` lowers the smallest crop side
below the model's input size, for images no larger than that input (the digits world: 16 px images
for a 16 px classifier, where the SPEC rule makes every crop the whole image); a crop smaller than
the input is upsampled to it bilinearly instead of pooled. Every call draws fresh crops, separately
for each image, from one explicit ``torch.Generator``, so a seeded run repeats exactly. A caller may
instead give one generator per image (``generators_of(items)``: an item's "generator" key), so
that an image's crops depend only on its own stream, not on the batch it is in.
"""

from __future__ import annotations

import copy
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


def new_form(n: int = 16) -> str:
    """How to write ``n`` crops now (the hint of the old form's error)."""
    return (f"write cutouts: {{class_path: doodl.guidance.cutouts.Cutouts, init_args: {{n: {n}, power: 0.3, min_size: null}}}} "
            f"in a config or cutouts=Cutouts(n={n}) in Python (None / null: the whole image, no crops)")


class Cutouts:
    """The crop settings a loss is given, and (bound to the loss's input size) the crops themselves.

    A config injects the settings, never the size: the loss binds them to its own model's input
    size, so the user does not repeat it::

        guidance:
          class_path: doodl.digits.world.DigitClassifierLoss
          init_args:
            cutouts: {class_path: doodl.guidance.cutouts.Cutouts, init_args: {n: 16, min_size: 8}}

    (``cutouts: {n: 16, min_size: 8}`` is the same, jsonargparse adds the class path; ``cutouts:
    null`` turns crops off.) A loss calls ``bind_cutouts(cutouts, cut_size)``: ``bind`` returns a
    NEW bound ``Cutouts`` with ``cut_size`` and its own generator, ``torch.Generator().manual_seed(seed)``;
    the given object is never changed, so one settings object can serve several losses, each with
    a stream of its own (the very stream a fresh object would give). Only a bound object crops.

    Args:
        n: crops per image (16 by default), at least 1.
        power: exponent on the uniform draw of the crop size (0.3 by default; < 1 favours large crops).
        min_size: smallest crop side in pixels; None (default) is SPEC.md's min(H, W, cut_size).
        seed: seed of the crop generator, and (``+ SCORE_STREAM``) of a score's fixed crops.
    """

    def __init__(self, n: int = 16, power: float = 0.3, min_size: int | None = None, seed: int = 0):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a number of crops >= 1, got {n!r}; for the whole image set the loss's cutouts to None (cutouts: null)")
        if not power > 0:
            raise ValueError(f"power must be > 0, got {power}")
        if min_size is not None and (not isinstance(min_size, int) or isinstance(min_size, bool) or min_size < 1):
            raise ValueError(f"min_size must be a positive number of pixels or None (SPEC's min(side, cut_size)), got {min_size!r}")
        self.n = int(n)
        self.power = float(power)
        self.min_size = None if min_size is None else int(min_size)
        self.seed = int(seed)
        self.cut_size: tuple[int, int] | None = None  # set by bind
        self.generator: torch.Generator | None = None

    def bind(self, cut_size: int | tuple[int, int], generator: torch.Generator | None = None) -> "Cutouts":
        """A new ``Cutouts`` with these settings that crops to ``cut_size`` (the model's input size, an
        int or (height, width)), drawing from ``generator`` (a CPU one; default: a fresh one of ``seed``)."""
        cut_size = _pair(cut_size)
        if min(cut_size) < 1:
            raise ValueError(f"cut_size must be positive, got {cut_size}")
        if generator is None:
            generator = torch.Generator().manual_seed(self.seed)
        elif generator.device.type != "cpu":
            raise ValueError("generator must be a CPU torch.Generator (it draws crop sizes and positions)")
        bound = copy.copy(self)
        bound.cut_size, bound.generator = cut_size, generator
        return bound

    def _check_bound(self) -> tuple[int, int]:
        if self.cut_size is None:
            raise RuntimeError("these Cutouts are not bound to an input size: call cutouts.bind(cut_size) "
                               "(a guidance loss does this with its model's input size)")
        return self.cut_size

    def sample_boxes(self, height: int, width: int, generator: torch.Generator | None = None) -> list[tuple[int, int, int]]:
        """``n`` crops as (top, left, size), drawn from ``generator`` (default: the cutouts' own)."""
        cut_size = self._check_bound()
        gen = self.generator if generator is None else generator
        max_size = min(height, width)
        if self.min_size is None:
            min_size = min(height, width, *cut_size)
        elif self.min_size > max_size:
            raise ValueError(
                f"min_size={self.min_size} is larger than the {height}x{width} image: lower min_size to at most {max_size}"
            )
        else:
            min_size = self.min_size
        boxes = []
        for _ in range(self.n):
            u = torch.rand((), generator=gen).item()
            size = int(u**self.power * (max_size - min_size) + min_size)
            top = int(torch.randint(0, height - size + 1, (), generator=gen))
            left = int(torch.randint(0, width - size + 1, (), generator=gen))
            boxes.append((top, left, size))
        return boxes

    def __call__(self, images: Tensor, generators: Sequence[torch.Generator | None] | None = None) -> Tensor:
        """(B, C, H, W) -> (B, n, C, *cut_size). ``generators``: one per image (None entries use the
        cutouts' own generator)."""
        cut_size = self._check_bound()
        if images.dim() != 4:
            raise ValueError(f"images must be (B, C, H, W), got {tuple(images.shape)}")
        batch, channels, height, width = images.shape
        if generators is not None and len(generators) != batch:
            raise ValueError(f"got {len(generators)} generators for {batch} images: pass one per image")
        crops = []
        for b in range(batch):
            gen = None if generators is None else generators[b]
            for top, left, size in self.sample_boxes(height, width, gen):
                crops.append(self.resize(images[b : b + 1, :, top : top + size, left : left + size]))
        return torch.cat(crops).view(batch, self.n, channels, *cut_size)

    def for_items(self, images: Tensor, items: Sequence[Mapping[str, Any]] | None = None, fixed: bool = False) -> Tensor:
        """Crops for a loss: fresh ones from each item's "generator" (else the cutouts' own), or
        with ``fixed`` the same crops at every call (a score's; ``fixed_generators`` of ``seed``)."""
        gens = fixed_generators(images.shape[0], self.seed) if fixed else generators_of(items)
        return self(images, gens)

    def resize(self, crop: Tensor) -> Tensor:
        """A crop to ``cut_size``: adaptive average pooling (SPEC), or bilinear upsampling when the
        crop is smaller than ``cut_size`` (only with ``min_size``)."""
        cut_size = self._check_bound()
        small = crop.shape[-2] < cut_size[0] or crop.shape[-1] < cut_size[1]
        if self.min_size is not None and small:
            return F.interpolate(crop, size=cut_size, mode="bilinear", align_corners=False)
        return F.adaptive_avg_pool2d(crop, cut_size)

    def __repr__(self) -> str:
        extra = "" if self.min_size is None else f", min_size={self.min_size}"
        bound = "" if self.cut_size is None else f", cut_size={self.cut_size}"
        return f"Cutouts(n={self.n}, power={self.power}{extra}, seed={self.seed}{bound})"


def check_cutouts(cutouts: Cutouts | None, owner: str = "the loss") -> Cutouts | None:
    """``cutouts`` if it is a ``Cutouts`` or None; the old form (a number of crops) and anything
    else are refused with the new form (a loss checks this first, before it loads a model)."""
    if cutouts is None or isinstance(cutouts, Cutouts):
        return cutouts
    if isinstance(cutouts, int) and not isinstance(cutouts, bool):
        raise ValueError(
            f"cutouts={cutouts} (a number of crops) is the old form; {owner} takes a Cutouts object now, with "
            f"cut_power / min_cut / seed inside it as power / min_size / seed: {new_form(cutouts)}"
        )
    raise ValueError(f"cutouts must be a doodl.guidance.cutouts.Cutouts or None, got {type(cutouts).__name__}: {new_form()}")


def bind_cutouts(cutouts: Cutouts | None, cut_size: int | tuple[int, int] | None, owner: str = "the loss") -> Cutouts | None:
    """What a loss keeps of its ``cutouts`` argument: None (no crops), or the settings bound to its
    input size ``cut_size`` (``check_cutouts`` first)."""
    if check_cutouts(cutouts, owner) is None:
        return None
    if cut_size is None:
        raise ValueError(f"cutouts need {owner}'s input size: set input_size, or cutouts=None")
    return cutouts.bind(cut_size)


def parser_error_hint(message: str) -> str | None:
    """The new form, for a parser (jsonargparse) error that refused a number where a ``Cutouts`` is
    expected (an old config's ``cutouts: 16``); None for any other error. The ``doodl`` command
    can append it to the parser's message."""
    if "doodl.guidance.cutouts.Cutouts" not in message or "Given value type: <class 'int'>" not in message:
        return None
    value = message.rsplit("Given value:", 1)[-1].split()
    n = int(value[0]) if value and value[0].isdigit() and int(value[0]) > 0 else 16
    return (f"cutouts is a Cutouts object now, not a number of crops (cut_power / min_cut / seed moved into it "
            f"as power / min_size / seed): {new_form(n)}")
