"""The default progress bar of ``doodl fit``: ``iteration k/N`` (one epoch is one DOODL iteration
of every item; N is ``model.iterations``), not Lightning's ``Epoch k/-2`` of an open-ended run."""

from __future__ import annotations

import sys
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

    def print(self, *args: Any, sep: str = " ", **kwargs: Any) -> None:
        """Above the bar while one is open; plainly once closed (Lightning's would drop the text:
        ``DOODL.on_train_end``'s summary comes after the bar closed)."""
        bars = (self._train_progress_bar, self._val_progress_bar, self._test_progress_bar, self._predict_progress_bar)
        if any(bar is not None and not bar.disable for bar in bars):
            super().print(*args, sep=sep, **kwargs)
        else:
            print(*args, sep=sep, **{"file": sys.stdout, **kwargs})
