"""An always-present callback: whether the run's first step began, and Ctrl-C during ``fit``.

Errors raised before the first step are the user's (``doodl.app.errors``). The first Ctrl-C
(SIGINT) of ``fit`` takes the SIGTERM path: the run stops after the current step, saves
``last.ckpt`` and exits with status 130; a second Ctrl-C stops at once.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

import lightning as L


class RunGuard(L.Callback):
    def __init__(self) -> None:
        self.started = False  # the first step of fit, predict or test began
        self.interrupted = False  # a Ctrl-C stopped fit
        self._previous: Any = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = True
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = True

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = True

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupted = True
        print("\ndoodl: Ctrl-C: stopping after this step and saving last.ckpt (Ctrl-C again: stop now, save nothing)",
              file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)  # Lightning's SIGTERM handler stops after the step (and tells other ranks)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
