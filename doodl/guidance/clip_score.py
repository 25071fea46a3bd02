"""torchmetrics' CLIPScore that works with transformers 5.

torchmetrics 1.9 normalizes ``model.get_image_features(...)`` as a tensor, but transformers 5's
``CLIPModel.get_image_features`` / ``get_text_features`` return a ``BaseModelOutputWithPooling``
whose ``pooler_output`` holds the projected embedding, so ``CLIPScore.update`` raises
``AttributeError: 'BaseModelOutputWithPooling' object has no attribute 'norm'``.
``TensorFeatures`` wraps the model so both methods return that tensor; ``CLIPScore`` here is
torchmetrics' metric built on the wrapped model, loadable from any local folder or hub id.

    CLIPScore = 100 * max(cos(E_image, E_text), 0), averaged over the samples (torchmetrics' definition)
Images go in as torchmetrics expects: (N, 3, H, W) or a list of (3, H, W), in [0, 255].
"""

from __future__ import annotations

from typing import Any, Callable

from torch import Tensor, nn
from torchmetrics.multimodal.clip_score import CLIPScore as _TorchmetricsCLIPScore


def features_tensor(out: Any) -> Tensor:
    """The embedding tensor from a ``get_*_features`` result: a tensor, or an output's ``pooler_output``."""
    if isinstance(out, Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    if isinstance(pooled, Tensor):
        return pooled
    raise TypeError(f"cannot find the feature tensor in a {type(out).__name__} (no tensor pooler_output)")


class TensorFeatures(nn.Module):
    """A CLIP model whose ``get_image_features`` / ``get_text_features`` return plain tensors.

    Args:
        model: a transformers ``CLIPModel`` (or any model with the two methods and a ``config``).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @property
    def config(self):
        return self.model.config

    def get_image_features(self, *args, **kwargs) -> Tensor:
        return features_tensor(self.model.get_image_features(*args, **kwargs))

    def get_text_features(self, *args, **kwargs) -> Tensor:
        return features_tensor(self.model.get_text_features(*args, **kwargs))

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)


def load_clip(model_name_or_path: str) -> tuple[nn.Module, Any]:
    """(CLIPModel, CLIPProcessor) from a local folder or hub id; offline misses suggest a local folder."""
    from transformers import CLIPModel, CLIPProcessor

    try:
        model = CLIPModel.from_pretrained(model_name_or_path)
        processor = CLIPProcessor.from_pretrained(model_name_or_path)
    except OSError as err:
        raise FileNotFoundError(
            f"cannot load a CLIP model and processor from {model_name_or_path!r} ({err}); pass a local folder "
            f"saved with CLIPModel.save_pretrained and CLIPProcessor.save_pretrained, or download it once while online"
        ) from err
    return model.eval().requires_grad_(False), processor


class CLIPScore(_TorchmetricsCLIPScore):
    """torchmetrics' ``CLIPScore`` on a model wrapped by ``TensorFeatures``.

    Args:
        model_name_or_path: a local folder or hub id of a transformers CLIP model and processor, or a
            callable returning ``(model, processor)`` as torchmetrics accepts.
        **kwargs: passed to torchmetrics' ``Metric``.
    """

    def __init__(self, model_name_or_path: str | Callable[[], tuple[nn.Module, Any]] = "openai/clip-vit-large-patch14",
                 **kwargs: Any):
        def build() -> tuple[nn.Module, Any]:
            if callable(model_name_or_path):
                model, processor = model_name_or_path()
            else:
                model, processor = load_clip(model_name_or_path)
            return (model if isinstance(model, TensorFeatures) else TensorFeatures(model)), processor

        super().__init__(model_name_or_path=build, **kwargs)
