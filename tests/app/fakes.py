"""Tiny stand-ins injected by the test configs (tests/conf/*.yaml) in place of heavy models."""

from __future__ import annotations

import torch
from torch import Tensor

from doodl.guidance.base import GuidanceLoss


class MeanColorLoss(GuidanceLoss):
    """Squared distance of the mean colour of random crops to a target colour; an item with
    "poison": true gets a NaN loss (to test that one item's failure leaves the others alone)."""

    score_direction = "max"  # minus the squared distance of the whole image's mean colour
    item_keys = ("poison",)  # the test column that makes an item fail

    def __init__(self, target: tuple[float, float, float] = (1.0, 0.0, 0.0), crop: int = 8, weight: float = 1.0):
        super().__init__(weight)
        self.register_buffer("target", torch.tensor(target).view(1, 3))
        self.crop = crop
        self.freeze_()

    def forward(self, images: Tensor, items=None) -> Tensor:
        losses = []
        for k in range(images.shape[0]):
            g = items[k].get("generator") if items else None
            h, w = images.shape[-2:]
            top = int(torch.randint(0, h - self.crop + 1, (), generator=g))
            left = int(torch.randint(0, w - self.crop + 1, (), generator=g))
            crop = images[k:k + 1, :, top:top + self.crop, left:left + self.crop]
            loss = (crop.mean(dim=(2, 3)) - self.target.to(images.dtype)).square().sum(1)
            if items and items[k].get("poison"):
                loss = loss * float("nan")
            losses.append(loss)
        return self.weight * torch.cat(losses)

    @torch.no_grad()
    def score(self, images: Tensor, items=None) -> Tensor:
        return -(images.mean(dim=(2, 3)) - self.target.to(images.dtype)).square().sum(1)


class KillAt(__import__("lightning").Callback):
    """Sends ``signal`` to its own process at ``batch`` of ``epoch`` (a deterministic preemption)."""

    def __init__(self, signal: str = "SIGTERM", epoch: int = 2, batch: int = 1):
        self.signal, self.epoch, self.batch = signal, epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        import os
        import signal as sig

        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), getattr(sig, self.signal))
