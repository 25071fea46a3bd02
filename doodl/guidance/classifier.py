"""Vocabulary expansion: a classifier's cross-entropy toward a target class (SPEC.md section 6).

    x       = (resize(image) - mean) / std        (the classifier's own input size and normalization)
    loss    = weight * CE(classifier(x), target)  (mean over crops when cutouts are on)
    score   = softmax(classifier(x))[target]      (mean over a fixed set of crops, or the whole image: score_on)
The classifier is any ``nn.Module``, a TorchScript or torch.export (.pt2) file, or 'timm:<name>' / 'torchvision:<name>'
built without downloads and loaded from a local state dict file (tensors only: ``weights_only``).
TorchScript and .pt2 files carry code: only use files you trust.
"""

from __future__ import annotations

import difflib
import operator
import os
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .aesthetic import load_state_dict_file
from .base import GuidanceLoss, Items, check_images, missing_key, per_item
from .cutouts import Cutouts, _pair, bind_cutouts, check_cutouts

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SCORE_ON = ("crops", "image")
_HOW = ("pass model='timm:<name>' or 'torchvision:<name>' with weights=<local state dict file>, "
        "a TorchScript file, a torch.export .pt2 file, or an nn.Module")


def _unknown(library: str, name: str, known: Sequence[str]) -> ValueError:
    close = difflib.get_close_matches(name, known, n=8)
    hint = f"; close matches: {', '.join(close)}" if close else ""
    return ValueError(f"unknown {library} model {name!r} ({len(known)} known, see {library}.list_models()){hint}")


def build_classifier(model: nn.Module | str, weights: str | None = None, num_classes: int | None = None) -> nn.Module:
    """Resolve ``model`` (module, 'timm:name', 'torchvision:name' or TorchScript file) and load ``weights``."""
    if isinstance(model, nn.Module) or isinstance(model, torch.jit.ScriptModule):
        net = model
        if num_classes is not None:
            raise ValueError("num_classes only applies to models built by name: the given module is used as is")
    elif not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be an nn.Module or a string; {_HOW}")
    elif str(model).startswith(("timm:", "torchvision:")):
        library, name = str(model).split(":", 1)
        if weights is None:
            raise ValueError(f"{model!r} needs weights=<local state dict file> (.pth/.pt/.safetensors); nothing is downloaded")
        kwargs = {} if num_classes is None else {"num_classes": int(num_classes)}
        if library == "timm":
            import timm

            if name not in timm.list_models():
                raise _unknown("timm", name, timm.list_models())
            net = timm.create_model(name, pretrained=False, **kwargs)
        else:
            import torchvision

            if name not in torchvision.models.list_models():
                raise _unknown("torchvision", name, torchvision.models.list_models())
            net = torchvision.models.get_model(name, weights=None, **kwargs)
    else:
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"classifier file {path!r} not found: {_HOW}")
        if weights is not None:
            raise ValueError(f"weights is for models built by name or given as modules; {path!r} is loaded as TorchScript")
        return _load_program(path)
    if weights is not None:
        state = load_state_dict_file(weights, "classifier", _HOW)
        net.load_state_dict(state, strict=True)
    return net


def _load_program(path: str) -> nn.Module:
    """A TorchScript file, or a torch.export ``.pt2`` file, as a module. Both carry a program, not
    only weights: this loads code: only use files you trust."""
    if path.endswith(".pt2"):
        try:
            return _Exported(torch.export.load(path).module())
        except Exception as err:  # torch raises RuntimeError, ValueError, zipfile/pickle errors, ...
            raise ValueError(f"classifier file {path!r} is not a torch.export .pt2 archive "
                             f"({type(err).__name__}: {err}); {_HOW}") from err
    try:
        return torch.jit.load(path, map_location="cpu")
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"classifier file {path!r} is not a TorchScript archive ({type(err).__name__}); {_HOW}") from err


class _Exported(nn.Module):
    """A torch.export program as a module: its train/eval behaviour was fixed when it was exported."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x)

    def train(self, mode: bool = True) -> "_Exported":
        return self  # exported graphs do not support train(); export them in eval mode


def _num_classes(net: nn.Module) -> int | None:
    for attr in ("num_classes",):
        value = getattr(net, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


class ClassifierLoss(GuidanceLoss):
    """Cross-entropy of a frozen classifier toward a target class.

    Args:
        model: an ``nn.Module``, a TorchScript or torch.export ``.pt2`` file path (these load code: only use
            files you trust), or 'timm:<name>' / 'torchvision:<name>'.
        weights: local state dict file (.pth / .pt / .safetensors) loaded strictly into ``model``.
        num_classes: classes of a model built by name (its head size); default: the library's.
        target_class: a fixed class index; None reads ``items[i]["target_class"]``.
        input_size: the classifier's input size (int or (h, w)); None feeds the image at its own size.
        mean, std: input normalization (ImageNet by default).
        cutouts: the crop settings (``Cutouts``, bound here to ``input_size``, which they require; their
            ``min_size`` lets crops be smaller than it); None (default): the whole image.
        weight: scale of the loss.
        score_on: what ``score`` (the early stop's and the best iterate's) reads with cutouts on:
            "crops" (default: a fixed set of them) or "image" (the whole image, as it is shown).
    """

    score_direction = "max"  # probability of the target class

    def __init__(
        self,
        model: str | nn.Module,  # the string first: jsonargparse matches a string against every nn.Module class loaded
        weights: str | None = None,
        num_classes: int | None = None,
        target_class: int | None = None,
        input_size: int | tuple[int, int] | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        cutouts: Cutouts | None = None,
        weight: float = 1.0,
        score_on: str = "crops",
    ):
        super().__init__(weight)
        check_cutouts(cutouts, "the classifier")  # before any model loads
        if score_on not in SCORE_ON:
            raise ValueError(f"score_on must be one of {', '.join(map(repr, SCORE_ON))} (what the score reads with "
                             f"cutouts on: a fixed set of crops, or the whole image), got {score_on!r}")
        self.score_on = score_on
        self.model = build_classifier(model, weights, num_classes)
        self.num_classes = num_classes if num_classes is not None else _num_classes(self.model)
        self.input_size = None if input_size is None else _pair(input_size)
        self.cutouts = bind_cutouts(cutouts, self.input_size, "the classifier")
        self.target_class = None if target_class is None else self._check_class(target_class)
        device = next((p.device for p in self.model.parameters()), torch.device("cpu"))  # follow the model
        as_buffer = dict(dtype=torch.float32, device=device)
        self.register_buffer("mean", torch.tensor(mean, **as_buffer).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, **as_buffer).view(1, 3, 1, 1), persistent=False)
        self.freeze_()

    @property
    def item_keys(self) -> tuple[str, ...]:
        return () if self.target_class is not None else ("target_class",)

    def classes(self) -> int | None:
        """The number of classes: ``num_classes`` (given, or the model's attribute), else the size of
        the logits of one forward of a zeros image at ``input_size`` (None without an input size)."""
        if self.num_classes is None and self.input_size is not None and not hasattr(self, "_probed"):
            param = next(self.model.parameters(), None)
            zeros = torch.zeros(1, 3, *self.input_size, dtype=param.dtype if param is not None else torch.float32,
                                device=param.device if param is not None else "cpu")
            try:
                with torch.no_grad():
                    out = self.model(zeros)
                self._probed = out.shape[-1] if isinstance(out, Tensor) and out.dim() == 2 else None
            except Exception:  # the model's own error comes with the first real step, in full
                self._probed = None
        return self.num_classes if self.num_classes is not None else getattr(self, "_probed", None)

    def check_item(self, item) -> list[str]:
        """The item's ``target_class``, unless fixed: present, an integer, in the classifier's range."""
        if self.target_class is not None:
            return []
        missing = missing_key("target_class", item)
        if missing:
            return [missing]
        index = item["target_class"]
        if isinstance(index, bool) or not isinstance(index, int):
            return [f"target_class must be an integer class index, got {index!r}"]
        n = self.classes()
        if n is not None and not 0 <= index < n:
            return [f"target_class {index} is out of range for a {n}-class classifier (0-{n - 1})"]
        return []

    def _check_class(self, index, num_classes: int | None = None) -> int:
        num_classes = num_classes if num_classes is not None else self.num_classes
        try:
            if isinstance(index, bool):
                raise TypeError
            index = operator.index(index)
        except TypeError:
            raise ValueError(f"target_class must be an integer class index, got {index!r}") from None
        if num_classes is not None and not 0 <= index < num_classes:
            raise ValueError(
                f"target_class {index} is out of range: the classifier has {num_classes} classes (0..{num_classes - 1})"
            )
        return index

    def logits(self, images: Tensor, items: Items | None = None, fixed: bool = False, whole: bool = False) -> Tensor:
        """(B, n, classes) logits of every crop (n = 1: the whole image at ``input_size``, or with
        ``whole``); fresh crops from the items' generators, or the same crops every call when ``fixed``."""
        check_images(images)
        if self.cutouts is not None and not whole:
            crops = self.cutouts.for_items(images, items, fixed)
        elif self.input_size is not None:
            crops = F.adaptive_avg_pool2d(images, self.input_size)[:, None]
        else:
            crops = images[:, None]
        batch, n = crops.shape[:2]
        x = (crops.flatten(0, 1).float() - self.mean) / self.std
        dtype = next((p.dtype for p in self.model.parameters()), x.dtype)
        out = self.model(x.to(dtype))
        if not isinstance(out, Tensor) or out.dim() != 2:
            raise ValueError(f"the classifier must return (N, classes) logits, got {getattr(out, 'shape', type(out))}")
        return out.float().view(batch, n, -1)

    def _targets(self, items: Items | None, batch: int, classes: int, device) -> Tensor:
        targets = per_item("target_class", self.target_class, items, batch)
        return torch.tensor([self._check_class(t, classes) for t in targets], device=device)

    def forward(self, images: Tensor, items: Items | None = None) -> Tensor:
        logits = self.logits(images, items)  # (B, n, C)
        batch, n, classes = logits.shape
        target = self._targets(items, batch, classes, logits.device)
        ce = F.cross_entropy(logits.flatten(0, 1), target.repeat_interleave(n), reduction="none")
        return self.weight * ce.view(batch, n).mean(1)

    @torch.no_grad()
    def score(self, images: Tensor, items: Items | None = None) -> Tensor:
        """Probability of the target class, (B,); with cutouts, the mean over a FIXED set of crops
        (the same every call: a steady score for early stopping and the best iterate, that still
        asks the image to hold up under cropping as the loss does); with ``score_on="image"``, on
        the whole image."""
        logits = self.logits(images, items, fixed=True, whole=self.score_on == "image")
        target = self._targets(items, logits.shape[0], logits.shape[2], logits.device)
        probs = logits.softmax(-1)
        return probs.gather(2, target.view(-1, 1, 1).expand(-1, probs.shape[1], 1)).squeeze(2).mean(1)
