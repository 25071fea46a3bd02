"""Training of the guidance models (classifier, tiny CLIP, boldness scorer) and of the judge."""

from __future__ import annotations

import math
from typing import Callable

import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torch import nn

from . import data
from .nets import DigitClassifier, DigitJudge, ScorerHead


def cosine_lr(opt: torch.optim.Optimizer, steps: int, warmup: int = 50) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay to zero."""
    warmup = min(warmup, max(steps // 10, 1))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(steps - warmup, 1)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def train_supervised(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int, seed: int,
                     batch: int = 64, lr: float = 2e-3, weight_decay: float = 1e-4) -> nn.Module:
    """Cross-entropy training with 1-pixel random shifts; returns the model frozen in eval mode."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = cosine_lr(opt, steps)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(images), (batch,), generator=g)
        x = data.shift(images[idx], g)
        loss = F.cross_entropy(model(x), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval().requires_grad_(False)


def train_classifier(images: torch.Tensor, labels: torch.Tensor, steps: int, seed: int) -> DigitClassifier:
    """The guidance classifier (vocabulary expansion), on split A, all ten classes."""
    torch.manual_seed(seed)
    return train_supervised(DigitClassifier(), images, labels, steps, seed)


def train_judge(images: torch.Tensor, labels: torch.Tensor, steps: int, seed: int) -> DigitJudge:
    """The independent judge, on split B only (disjoint from every guidance model's data)."""
    torch.manual_seed(seed)
    return train_supervised(DigitJudge(), images, labels, steps, seed, lr=1e-3)


@torch.no_grad()
def accuracy(model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, labels: torch.Tensor) -> float:
    return (model(images).argmax(-1) == labels).float().mean().item()


def clip_normalize(images: torch.Tensor) -> torch.Tensor:
    """CLIP's pixel normalization of images in [0, 1] (the tiny CLIP is trained with it)."""
    mean = torch.tensor(OPENAI_DATASET_MEAN, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std


def style_of(ink: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """-1 (thin) below the ``lo`` ink threshold, +1 (thick) above ``hi``, else 0."""
    return (ink > hi).long() - (ink < lo).long()


def train_clip(model: nn.Module, tokenize: Callable[[list[str]], torch.Tensor], images: torch.Tensor,
               labels: torch.Tensor, styles: torch.Tensor, steps: int, seed: int, batch: int = 128,
               lr: float = 2e-3) -> nn.Module:
    """Contrastive (InfoNCE, open_clip.ClipLoss) training on image/caption pairs of all ten digits."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    sched = cosine_lr(opt, steps)
    loss_fn = open_clip.ClipLoss()
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(images), (batch,), generator=g)
        x = clip_normalize(data.shift(images[idx], g))
        text = tokenize(data.random_captions(labels[idx], g, styles=styles[idx]))
        image_features, text_features, logit_scale = model(x, text)[:3]
        loss = loss_fn(image_features, text_features, logit_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
    return model.eval().requires_grad_(False)


@torch.no_grad()
def clip_image_embeddings(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Normalized tiny-CLIP image embeddings, (N, D)."""
    return F.normalize(model.encode_image(clip_normalize(images)), dim=-1)


@torch.no_grad()
def clip_zero_shot(model: nn.Module, tokenize: Callable[[list[str]], torch.Tensor], images: torch.Tensor,
                   labels: torch.Tensor) -> float:
    """Zero-shot accuracy: the nearest of the ten captions ``data.EVAL_TEMPLATE`` by cosine."""
    text = F.normalize(model.encode_text(tokenize([data.caption(d) for d in range(10)])), dim=-1)
    return ((clip_image_embeddings(model, images) @ text.T).argmax(-1) == labels).float().mean().item()


@torch.no_grad()
def fit_scorer(embeddings: torch.Tensor, targets: torch.Tensor, ridge: float = 1e-3) -> ScorerHead:
    """The linear head by closed-form ridge regression (exact, deterministic) on frozen embeddings."""
    x = torch.cat([embeddings, torch.ones(len(embeddings), 1)], dim=1).double()
    reg = ridge * torch.eye(x.shape[1], dtype=x.dtype)
    reg[-1, -1] = 0  # the bias is not penalized
    w = torch.linalg.solve(x.T @ x + reg, x.T @ targets.double().unsqueeze(1)).squeeze(1)
    head = ScorerHead(embeddings.shape[1])
    head.linear.weight.copy_(w[:-1].float().unsqueeze(0))
    head.linear.bias.copy_(w[-1:].float())
    return head.eval().requires_grad_(False)


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    return (a @ b / (a.norm() * b.norm())).item()
