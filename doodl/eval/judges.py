"""Judges: what `doodl compare` scores finished images with (issue 10), injected from YAML
(``class_path`` / ``init_args``), never used for guidance unless it is the guide itself.

    judge.score(images, items) -> (B,)   images (B, 3, H, W) in [0, 1]; one value per image
    judge.name, judge.direction          "max" or "min": which way the value improves
    judge.kind                           "accuracy" (values 0/1: Wilson intervals), "mean"
                                         (bootstrap intervals) or "set" (one value per set of images:
                                         KID / FID in ``doodl.eval.distances``)
    judge.check(item, height, width)     what stops it scoring such images / items, as messages,
                                         asked before any model runs

Per-item judges here: ``LossJudge`` (any guidance loss's ``score``), ``ClassifierJudge`` (accuracy
of a classifier's argmax against the item's target class) and ``InkMass`` (a pixel measure, no
learned model). ``doodl.eval.registry`` names the kinds (``judge_class``) and looks judges up by name.
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from doodl.guidance.base import GuidanceLoss, Items, check_images, missing_key, per_item

Direction = Literal["max", "min"]
DIRECTIONS = ("max", "min")
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma weights of R, G, B


class Judge(nn.Module):
    """Base class of every judge (an ``nn.Module`` so ``.to(device)`` moves its models).

    Args:
        name: the judge's column in every table; unique within a comparison.
        direction: "max" or "min".
        description: one line for the summary's list of judges (default: the class's own).
        gap: report the adversarial gap guide minus this judge (True); False for a judge whose
            values are on another scale than the guide's (a 1-10 aesthetic score beside a CLIP
            similarity), where the difference means nothing.
    """

    kind: str = "mean"
    set_level: bool = False

    def __init__(self, name: str, direction: Direction, description: str | None = None, gap: bool = True):
        super().__init__()
        self.gap = bool(gap)
        if not isinstance(name, str) or not name.strip() or name != name.strip() or "," in name:
            raise ValueError(f"judge name must be a non-empty string without commas or outer spaces, got {name!r}")
        if direction not in DIRECTIONS:
            raise ValueError(f"judge {name!r}: direction must be 'max' or 'min', got {direction!r}")
        self.name, self.direction = name, direction
        self._description = description

    @property
    def description(self) -> str:
        return self._description or self.default_description()

    def default_description(self) -> str:
        return type(self).__name__

    @property
    def device(self) -> torch.device:
        tensor = next(iter([*self.parameters(), *self.buffers()]), None)
        return tensor.device if tensor is not None else torch.device("cpu")

    def score(self, images: Tensor, items: Items) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def check(self, item: Mapping[str, Any], height: int, width: int) -> list[str]:
        """Messages saying why this judge cannot score a ``height`` x ``width`` image of ``item``
        (empty when it can): the default scores one black image of that size and reports its error."""
        try:
            with torch.no_grad():
                out = self.score(torch.zeros(1, 3, height, width, device=self.device), [item])
        except Exception as err:  # the judge's own error, named; the fix comes with it
            return [f"judge {self.name!r} cannot score {height}x{width} images: {err}"]
        if not isinstance(out, Tensor) or out.shape != (1,):
            return [f"judge {self.name!r} returned {getattr(out, 'shape', type(out))} for 1 image, not a (1,) tensor"]
        return []

    def train(self, mode: bool = True) -> "Judge":
        """Judges are frozen: dropout and batch norm stay in eval mode whatever ``mode`` is."""
        return super().train(False)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, kind={self.kind!r}, direction={self.direction!r}"


def _frozen(module: nn.Module) -> nn.Module:
    module.requires_grad_(False)
    module.eval()
    return module


class LossJudge(Judge):
    """A guidance loss's ``score`` as a judge: the guide itself (its score is the guide's view, so
    the adversarial gap guide minus judge can be read off), or a held-out CLIP / aesthetic /
    classifier / PickScore loss. The value is ``loss.score(images, items)`` (for a loss with crops,
    its fixed set of crops), a mean-kind judge whose direction is the loss's ``score_direction``.

    Args:
        loss: any ``doodl.guidance.GuidanceLoss``.
        name: the judge's name.
        direction: only for a loss whose ``score_direction`` is None; it may not contradict the loss's.
    """

    kind = "mean"

    def __init__(self, loss: GuidanceLoss, name: str, direction: Direction | None = None, description: str | None = None,
                 gap: bool = True):
        if not isinstance(loss, GuidanceLoss):
            raise TypeError(f"LossJudge {name!r} needs a doodl.guidance.GuidanceLoss, got {type(loss).__name__}")
        own = loss.score_direction
        if own is None and direction is None:
            raise ValueError(f"judge {name!r}: {type(loss).__name__}.score has no direction; set direction: max or min")
        if own is not None and direction is not None and direction != own:
            raise ValueError(f"judge {name!r}: direction {direction!r} contradicts {type(loss).__name__}'s "
                             f"score_direction {own!r}; leave direction unset")
        super().__init__(name, direction or own, description, gap)
        self.loss = loss.train(False)

    def default_description(self) -> str:
        return f"{type(self.loss).__name__}.score"

    @torch.no_grad()
    def score(self, images: Tensor, items: Items) -> Tensor:
        return self.loss.score(images, items).detach().float()

    def check(self, item: Mapping[str, Any], height: int, width: int) -> list[str]:
        problems = [f"judge {self.name!r}: {m}" for m in self.loss.check_item(item)]
        return problems or super().check(item, height, width)


def resolve_model(model: nn.Module | Callable[[], nn.Module] | str, weights: str | None = None,
                  num_classes: int | None = None) -> nn.Module:
    """A module as given; a loader function called (e.g. ``doodl.digits.assets.load_judge``); or a
    string resolved as ``doodl.guidance.ClassifierLoss`` does ('timm:<name>' / 'torchvision:<name>'
    with local ``weights``, a TorchScript or .pt2 file)."""
    if not isinstance(model, (nn.Module, str)) and callable(model):
        model = model()
        if not isinstance(model, nn.Module):
            raise TypeError(f"the model loader returned a {type(model).__name__}, not an nn.Module")
    from doodl.guidance.classifier import build_classifier

    return _frozen(build_classifier(model, weights, num_classes))


class ClassifierJudge(Judge):
    """Accuracy of a classifier: 1 where argmax(classifier((x - mean) / std)) equals the item's
    "target_class" (or a fixed ``target_class``), else 0. For the digits world:
    ``model: doodl.digits.assets.load_judge`` (the independent judge) or ``load_classifier`` (the
    guide), both reading 16x16 images in [0, 1] (mean 0, std 1, the defaults here).

    Args:
        model: an ``nn.Module``, a loader function returning one, or a string as
            ``doodl.guidance.ClassifierLoss`` takes ('timm:<name>' ... with ``weights``).
        input_size: the size the classifier reads (int or (h, w)); None: images go in at their own size.
        resize: resize images of another size to ``input_size`` by area averaging (adaptive average
            pooling, as ``ClassifierLoss`` does); without it such images are an error.
        mean, std: input normalization.
    """

    kind = "accuracy"

    # the string first: jsonargparse tries the types in order, and matching a string against every
    # nn.Module subclass loaded (thousands, once timm and open_clip are imported) made parsing slow
    def __init__(self, model: Callable[[], nn.Module] | str | nn.Module, name: str = "classifier",
                 weights: str | None = None, num_classes: int | None = None, target_class: int | None = None,
                 input_size: int | tuple[int, int] | None = None, resize: bool = False,
                 mean: Sequence[float] = (0.0, 0.0, 0.0), std: Sequence[float] = (1.0, 1.0, 1.0),
                 description: str | None = None, gap: bool = True):
        super().__init__(name, "max", description, gap)
        if resize and input_size is None:
            raise ValueError(f"judge {name!r}: resize needs the classifier's input_size")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"judge {name!r}: mean and std need 3 values each, std > 0; got {mean}, {std}")
        self.model = resolve_model(model, weights, num_classes)
        self.input_size = None if input_size is None else tuple(int(s) for s in (
            (input_size, input_size) if isinstance(input_size, int) else input_size))
        self.resize, self.target_class = bool(resize), target_class
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def default_description(self) -> str:
        return f"accuracy of {type(self.model).__name__}'s argmax against the item's target_class"

    def _input(self, images: Tensor) -> Tensor:
        size = tuple(images.shape[-2:])
        if self.input_size is not None and size != self.input_size:
            if not self.resize:
                h, w = self.input_size
                raise ValueError(f"judge {self.name!r} reads {h}x{w} images, got {size[0]}x{size[1]}: set "
                                 f"resize: true on the judge (area averaging to {h}x{w}), or generate at {h}x{w}")
            images = F.adaptive_avg_pool2d(images, self.input_size)
        return (images.float() - self.mean) / self.std

    def logits(self, images: Tensor) -> Tensor:
        check_images(images)
        x = self._input(images)
        dtype = next((p.dtype for p in self.model.parameters()), x.dtype)
        try:
            out = self.model(x.to(dtype))
        except Exception as err:
            fix = ("set input_size (and resize: true) on the judge" if self.input_size is None
                   else "check the classifier's input")
            raise ValueError(f"judge {self.name!r}: the classifier failed on {tuple(x.shape)} input "
                             f"({type(err).__name__}: {err}); {fix}") from err
        if not isinstance(out, Tensor) or out.dim() != 2:
            raise ValueError(f"judge {self.name!r}: the classifier must return (B, classes) logits, "
                             f"got {getattr(out, 'shape', type(out))}")
        return out.float()

    @torch.no_grad()
    def score(self, images: Tensor, items: Items) -> Tensor:
        logits = self.logits(images)
        targets = per_item("target_class", self.target_class, items, len(images))
        for t in targets:
            if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < logits.shape[1]:
                raise ValueError(f"judge {self.name!r}: target_class {t!r} is not a class index of a "
                                 f"{logits.shape[1]}-class classifier")
        return (logits.argmax(1) == torch.tensor(targets, device=logits.device)).float()

    def check(self, item: Mapping[str, Any], height: int, width: int) -> list[str]:
        missing = None if self.target_class is not None else missing_key("target_class", item)
        if missing:
            return [f"judge {self.name!r}: {missing}"]
        return super().check(item, height, width)


class InkMass(Judge):
    """Boldness from the pixels alone, no learned model: the mean ink over all pixels,

        Y   = 0.299 R + 0.587 G + 0.114 B     (ITU-R BT.601 luma, in [0, 1])
        ink = Y for light ink on a dark background ("light", the digits world), 1 - Y for dark
              ink on a light background ("dark")
        value = mean over the H x W pixels of ink, in [0, 1]; with ``threshold``, the fraction of
              pixels whose ink exceeds it.

    For the digits world (gray images, Y = the gray level), this is the bilinearly upsampled
    version of ``doodl.digits.data``'s per-image ``ink``.

    Args:
        ink: "light" or "dark" (no default: the sign of the measure depends on it).
        direction: "max" (bolder is better, the default) or "min".
    """

    kind = "mean"

    def __init__(self, ink: Literal["light", "dark"], name: str = "ink_mass", direction: Direction = "max",
                 threshold: float | None = None, description: str | None = None, gap: bool = True):
        super().__init__(name, direction, description, gap)
        if ink not in ("light", "dark"):
            raise ValueError(f"judge {name!r}: ink must be 'light' (light strokes on dark) or 'dark', got {ink!r}")
        if threshold is not None and not 0 <= threshold < 1:
            raise ValueError(f"judge {name!r}: threshold must be in [0, 1), got {threshold}")
        self.ink, self.threshold = ink, threshold

    def default_description(self) -> str:
        what = "1 - luma" if self.ink == "dark" else "luma"
        if self.threshold is None:
            return f"mean ink per pixel (ink = {what}, BT.601), no learned model"
        return f"fraction of pixels with ink > {self.threshold} (ink = {what}, BT.601), no learned model"

    @torch.no_grad()
    def score(self, images: Tensor, items: Items | None = None) -> Tensor:
        check_images(images)
        luma = torch.tensor(LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        y = (images * luma).sum(1)  # (B, H, W)
        ink = y if self.ink == "light" else 1 - y
        if self.threshold is not None:
            ink = (ink > self.threshold).to(images.dtype)
        return ink.flatten(1).mean(1).float()


def __getattr__(name: str):
    # the set-level judges pull in torchmetrics (seconds to import): load them only when asked for
    if name in ("KID", "FID", "SetJudge"):
        from . import distances

        return getattr(distances, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
