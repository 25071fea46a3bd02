"""The default progress bar of ``doodl fit``: ``iteration k/N`` (one epoch is one DOODL iteration
of every item; N is ``model.iterations``), not Lightning's ``Epoch k/-2`` of an open-ended run."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar


def iteration_text(epoch: int, iterations: int | None) -> str:
    """``iteration 3/50`` for epoch 2 (epochs count from 0, iterations from 1)."""
    return f"iteration {epoch + 1}/{iterations}" if iterations else f"iteration {epoch + 1}"


class IterationBar(TQDMProgressBar):
    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        hparams = getattr(trainer.lightning_module, "hparams", {})
        self.train_progress_bar.set_description(iteration_text(trainer.current_epoch, hparams.get("iterations")))
