"""Latent checkpoints: every item's latents, momentum and random streams, so that
``doodl fit -c config.yaml --ckpt_path .../last.ckpt`` resumes exactly where a run stopped."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from .paths import run_dir


class LatentCheckpoint(ModelCheckpoint):
    """``last.ckpt`` (and the newest ``epoch=E-step=S.ckpt``) after every ``every_n_epochs`` epochs (an epoch is one DOODL iteration of
    every item) or ``every_n_train_steps`` steps, and on SIGTERM (cluster preemption, ``kill``) or a first Ctrl-C
    (``doodl.app.run_guard``: both stop after the current step, so the saved state is whole).

    The checkpoint holds no network weights (``DOODL.on_save_checkpoint``), only the items'
    state and the loop's progress: a few hundred KB per item at Stable Diffusion sizes.
    """

    def __init__(
        self,
        dirpath: str | Path | None = None,
        every_n_epochs: int | None = 1,
        every_n_train_steps: int | None = None,
        save_on_sigterm: bool = True,
    ):
        super().__init__(
            # save_top_k=1 with no monitor keeps the newest numbered checkpoint; Lightning writes
            # last.ckpt only in the steps where it saved a numbered one
            dirpath=dirpath, save_last=True, save_top_k=1,
            every_n_epochs=every_n_epochs if not every_n_train_steps else None,
            every_n_train_steps=every_n_train_steps, save_on_train_epoch_end=True,
        )
        self.save_on_sigterm = save_on_sigterm
        self._user_dirpath = dirpath

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if self._user_dirpath is None:  # keep checkpoints with the run's other outputs
            self.dirpath = str(run_dir(trainer) / "checkpoints")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if self.save_on_sigterm and isinstance(exception, SIGTERMException) and self.dirpath is not None:
            path = Path(self.dirpath) / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"
            trainer.save_checkpoint(path)
            trainer.print(f"stopped (SIGTERM or Ctrl-C): saved {path}; resume with --ckpt_path {path}")
        elif isinstance(exception, KeyboardInterrupt):  # a second Ctrl-C: it may land inside a step
            trainer.print("stopped at once (a second Ctrl-C): the latest checkpoint is the last finished epoch's")
