"""Set-level judges: KID and FID (torchmetrics) between a method's images of one group and a set of
reference images, in the feature space of an injected extractor (for the digits world, the
independent judge's penultimate activations: ``doodl.eval.digits_parts.digits_judge_features``).

    FID = |mu_r - mu_f|^2 + tr(S_r + S_f - 2 (S_r S_f)^(1/2))          (torchmetrics' FrechetInceptionDistance)
    KID = mean over ``subsets`` random subsets of ``subset_size`` images of the unbiased MMD^2 with
          the polynomial kernel k(x, y) = (x.y / D + 1)^3                (torchmetrics' KernelInceptionDistance),
          reported with the std over the subsets; the subsets are drawn from a generator seeded
          with ``seed`` (the same images give the same value)

References: every image file of ``reference_dir`` (sorted by name), or the tensor (N, 3, H, W) in
[0, 1] a ``reference_loader`` function returns; with ``by_group``, ``reference_dir/<group>/`` or
``reference_loader(group)`` per group of items. A missing folder is an error at construction.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from doodl.guidance.base import Items

from .judges import Direction, Judge, resolve_model

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_folder(folder: Path) -> Tensor:
    """Every image file of ``folder`` -> (N, 3, H, W) in [0, 1]; all of one size."""
    from doodl.guidance.image_similarity import load_image

    files = image_files(folder)
    if not files:
        raise FileNotFoundError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in reference folder {str(folder)!r}")
    images = [load_image(f) for f in files]
    sizes = {tuple(im.shape) for im in images}
    if len(sizes) > 1:
        raise ValueError(f"reference images in {str(folder)!r} have several sizes {sorted(sizes)}: give images of one size")
    return torch.stack(images)


class _Features(nn.Module):
    """The extractor as torchmetrics wants it: (B, D) float64 features and a ``num_features``."""

    def __init__(self, module: nn.Module, num_features: int):
        super().__init__()
        self.module, self.num_features = module, num_features

    def forward(self, images: Tensor) -> Tensor:
        return self.module(images.float()).flatten(1).double()


class SetJudge(Judge):
    """Base of KID / FID: ``compute(images, group)`` -> {"value", ...} for one (method, group).

    Args:
        features: an ``nn.Module`` (or a loader function returning one) mapping (B, 3, H, W) images
            in [0, 1] to (B, D) features.
        reference_dir: a folder of reference images (with ``by_group``: a subfolder per group).
        reference_loader: a function returning (N, 3, H, W) reference images in [0, 1] (with
            ``by_group``: called with the group's name).
        by_group: references per group of items instead of one set for all.
    """

    kind = "set"
    set_level = True
    metric_name = ""

    def __init__(self, features: nn.Module | Callable[[], nn.Module], name: str, reference_dir: str | None = None,
                 reference_loader: Callable[..., Any] | None = None, by_group: bool = False,
                 direction: Direction = "min", description: str | None = None):
        super().__init__(name, direction, description)
        if (reference_dir is None) == (reference_loader is None):
            raise ValueError(f"judge {name!r}: give exactly one of reference_dir (a folder of images) "
                             "and reference_loader (a function returning (N, 3, H, W) images in [0, 1])")
        if reference_dir is not None:
            folder = Path(os.path.expanduser(reference_dir))
            if not folder.is_dir():
                raise FileNotFoundError(f"judge {name!r}: reference folder {str(folder)!r} not found: "
                                        "give reference_dir a folder of reference images")
            if not by_group and not image_files(folder):
                subs = sorted(p.name for p in folder.iterdir() if p.is_dir())
                hint = f"; it has subfolders {subs}: set by_group: true for references per group" if subs else ""
                raise FileNotFoundError(f"judge {name!r}: no image files in reference folder {str(folder)!r}{hint}")
            reference_dir = str(folder)
        elif not callable(reference_loader):
            raise TypeError(f"judge {name!r}: reference_loader must be a function, got {type(reference_loader).__name__}")
        self.extractor = resolve_model(features) if not isinstance(features, nn.Module) else features.eval().requires_grad_(False)
        self.reference_dir, self.reference_loader, self.by_group = reference_dir, reference_loader, bool(by_group)
        self._references: dict[str | None, Tensor] = {}

    def reference_source(self, group: str | None) -> str:
        where = self.reference_dir or getattr(self.reference_loader, "__qualname__", repr(self.reference_loader))
        return f"{where}/{group}" if self.by_group and self.reference_dir else (
            f"{where}({group!r})" if self.by_group else where)

    def references(self, group: str | None) -> Tensor:
        """The reference images of ``group`` (the same for every group without ``by_group``), cached."""
        key = group if self.by_group else None
        if key not in self._references:
            if self.by_group and group is None:
                raise ValueError(f"judge {self.name!r} has references per group (by_group) but an item has no "
                                 "'group': give every item a group, or set by_group: false")
            if self.reference_dir is not None:
                folder = Path(self.reference_dir) / group if self.by_group else Path(self.reference_dir)
                if not folder.is_dir():
                    raise FileNotFoundError(f"judge {self.name!r}: no reference folder {str(folder)!r} for group "
                                            f"{group!r}: add it, or set by_group: false")
                images = load_folder(folder)
            else:
                images = self.reference_loader(group) if self.by_group else self.reference_loader()
            if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
                raise ValueError(f"judge {self.name!r}: references from {self.reference_source(group)} must be a float "
                                 f"(N, 3, H, W) tensor in [0, 1], got {getattr(images, 'shape', type(images).__name__)}")
            self._references[key] = images.float()
        return self._references[key]

    def feature_module(self, size: tuple[int, int]) -> _Features:
        with torch.no_grad():
            out = self.extractor(torch.zeros(2, 3, *size, device=self.device))
        if not isinstance(out, Tensor) or out.dim() < 2 or out.shape[0] != 2:
            raise ValueError(f"judge {self.name!r}: the feature extractor must return (B, D) features, "
                             f"got {getattr(out, 'shape', type(out))}")
        return _Features(self.extractor, int(out.flatten(1).shape[1]))

    def score(self, images: Tensor, items: Items | None = None) -> Tensor:
        raise TypeError(f"judge {self.name!r} is set-level: it has compute(images, group), not a per-image score")

    def check(self, item: Mapping[str, Any], height: int, width: int) -> list[str]:
        """The references load, share the generated size, and the extractor reads that size."""
        try:
            refs = self.references(item.get("group"))
            if tuple(refs.shape[-2:]) != (height, width):
                return [f"judge {self.name!r}: reference images from {self.reference_source(item.get('group'))} are "
                        f"{refs.shape[-2]}x{refs.shape[-1]}, the generated ones {height}x{width}: give references "
                        "of the generated size"]
            self.feature_module((height, width))
        except Exception as err:
            return [f"judge {self.name!r} cannot compare {height}x{width} images: {err}"]
        return []

    @torch.no_grad()
    def compute(self, images: Tensor, group: str | None, batch_size: int = 256) -> dict[str, Any]:
        """The distance of ``images`` (N, 3, H, W) to the references of ``group``: {"value", "n_fake",
        "n_real", ...}; a value that the set sizes do not allow is NaN with a "note" saying why."""
        refs = self.references(group)
        if tuple(refs.shape[-2:]) != tuple(images.shape[-2:]):
            raise ValueError(f"judge {self.name!r}: references are {tuple(refs.shape[-2:])}, images "
                             f"{tuple(images.shape[-2:])}: give references of the generated size")
        out: dict[str, Any] = {"value": math.nan, "n_fake": len(images), "n_real": len(refs)}
        note = self.too_few(len(images), len(refs))
        if note:
            return {**out, "note": note}
        metric = self.metric(self.feature_module(tuple(images.shape[-2:])), len(images), len(refs))
        for real, data in ((True, refs), (False, images)):
            for start in range(0, len(data), batch_size):
                metric.update(data[start:start + batch_size].to(self.device), real=real)
        return {**out, **self.result(metric)}

    def too_few(self, n_fake: int, n_real: int) -> str | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def metric(self, features: _Features, n_fake: int, n_real: int):  # pragma: no cover - abstract
        raise NotImplementedError

    def result(self, metric) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError


class KID(SetJudge):
    """Kernel inception distance (lower is better) with the std over its subsets.

    Args: see ``SetJudge``; ``subsets``: random subsets (100); ``subset_size``: images per subset
    (None: the smaller of the two sets; larger than a set gives NaN with a note); ``seed``."""

    def __init__(self, features: nn.Module | Callable[[], nn.Module], name: str = "kid", reference_dir: str | None = None,
                 reference_loader: Callable[..., Any] | None = None, by_group: bool = False, subsets: int = 100,
                 subset_size: int | None = None, seed: int = 0, description: str | None = None):
        super().__init__(features, name, reference_dir, reference_loader, by_group, "min", description)
        if subsets < 1 or (subset_size is not None and subset_size < 2):
            raise ValueError(f"judge {name!r}: subsets must be >= 1 and subset_size >= 2 (or None)")
        self.subsets, self.subset_size, self.seed = int(subsets), subset_size, int(seed)

    def default_description(self) -> str:
        size = self.subset_size or "min(n_fake, n_real)"
        return f"KID (torchmetrics), mean ± std over {self.subsets} subsets of {size} images, seed {self.seed}"

    def too_few(self, n_fake: int, n_real: int) -> str | None:
        size = self.subset_size or min(n_fake, n_real)
        if size < 2 or size > min(n_fake, n_real):
            return f"KID needs subsets of >= 2 images and no more than either set ({n_fake} images, {n_real} references)"
        return None

    def metric(self, features: _Features, n_fake: int, n_real: int):
        from torchmetrics.image.kid import KernelInceptionDistance

        self._size = self.subset_size or min(n_fake, n_real)
        with warnings.catch_warnings():  # its note that it keeps every feature: that is what it is for here
            warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
            return KernelInceptionDistance(feature=features, subsets=self.subsets, subset_size=self._size,
                                           sync_on_compute=False).to(self.device)

    def result(self, metric) -> dict[str, Any]:
        with torch.random.fork_rng(devices=[]):  # torchmetrics draws the subsets from the global generator
            torch.manual_seed(self.seed)
            mean, std = metric.compute()
        return {"value": float(mean), "std": float(std), "subset_size": self._size, "subsets": self.subsets}


class FID(SetJudge):
    """Frechet inception distance (lower is better); NaN with a note for a set of fewer than 2 images.

    Args: see ``SetJudge``."""

    def __init__(self, features: nn.Module | Callable[[], nn.Module], name: str = "fid", reference_dir: str | None = None,
                 reference_loader: Callable[..., Any] | None = None, by_group: bool = False,
                 description: str | None = None):
        super().__init__(features, name, reference_dir, reference_loader, by_group, "min", description)

    def default_description(self) -> str:
        return "FID (torchmetrics) to the reference images"

    def too_few(self, n_fake: int, n_real: int) -> str | None:
        if min(n_fake, n_real) < 2:
            return f"FID needs at least 2 images in each set ({n_fake} images, {n_real} references)"
        return None

    def metric(self, features: _Features, n_fake: int, n_real: int):
        from torchmetrics.image.fid import FrechetInceptionDistance

        return FrechetInceptionDistance(feature=features, sync_on_compute=False).to(self.device)

    def result(self, metric) -> dict[str, Any]:
        return {"value": float(metric.compute())}
