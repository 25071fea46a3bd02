"""The small networks of the digits world: guidance classifier, independent judge, boldness
scorer head, and the tiny CLIP's open_clip model config. Every network takes images in [0, 1]."""

from __future__ import annotations

import torch
from torch import nn

CLIP_NAME = "doodl-digits-clip"


def tiny_clip_config(image_size: int = 16, vocab_size: int = 4096, context_length: int = 16) -> dict:
    """open_clip custom model config (ViT on 4x4 patches, 2-layer text transformer, 64-d embedding)."""
    return {
        "embed_dim": 64,
        "vision_cfg": {"image_size": image_size, "layers": 3, "width": 64, "head_width": 32,
                       "patch_size": 4, "mlp_ratio": 2.0},
        "text_cfg": {"context_length": context_length, "vocab_size": vocab_size, "width": 64,
                     "heads": 2, "layers": 2, "mlp_ratio": 2.0},
    }


class DigitClassifier(nn.Module):
    """Guidance classifier: a small CNN, (B, 3, 16, 16) in [0, 1] -> (B, 10) logits."""

    def __init__(self, width: int = 32, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, w, 8, 8)
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 2w, 4, 4)
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 16, 64), nn.ReLU(), nn.Linear(64, num_classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-2:] != (16, 16):
            raise ValueError(f"DigitClassifier expects 16x16 images, got {tuple(images.shape)}")
        return self.head(self.features(2 * images - 1))


class DigitJudge(nn.Module):
    """Independent judge: an MLP on the gray pixels (a different architecture from the guide)."""

    def __init__(self, hidden: int = 256, num_classes: int = 10, dropout: float = 0.2):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(256, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden // 2), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden // 2, num_classes),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-2:] != (16, 16):
            raise ValueError(f"DigitJudge expects 16x16 images, got {tuple(images.shape)}")
        gray = images.mean(dim=1)  # (B, 16, 16)
        return self.net(2 * gray - 1)


class ScorerHead(nn.Module):
    """Boldness predictor: a linear head on the normalized tiny-CLIP image embedding (the LAION
    aesthetic predictor's shape); predicts a score on [1, 10] (clipping is the caller's)."""

    def __init__(self, embed_dim: int = 64):
        super().__init__()
        self.linear = nn.Linear(embed_dim, 1)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.linear(embedding).squeeze(-1)
