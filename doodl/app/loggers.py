"""Weights & Biases by default, offline when no API key is configured (sync later with
``wandb sync``); CSV and TensorBoard are Lightning's own loggers."""

from __future__ import annotations

import netrc
import os
from typing import Any

from lightning.pytorch.loggers import WandbLogger as _WandbLogger


def wandb_api_key_configured() -> bool:
    """True when W&B can authenticate: WANDB_API_KEY, or an api.wandb.ai entry in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


class WandbLogger(_WandbLogger):
    """Lightning's WandbLogger with ``offline=None`` meaning: offline unless an API key is set, and
    ``save_dir=None`` meaning: the run's ``trainer.default_root_dir`` under ``doodl`` (``outputs`` elsewhere)."""

    def __init__(self, project: str = "doodl", offline: bool | None = None, save_dir: str | None = None, **kwargs: Any):
        if save_dir is None:
            save_dir = "outputs"
        if offline is None:
            offline = not wandb_api_key_configured() or os.environ.get("WANDB_MODE") in ("offline", "dryrun")
        super().__init__(project=project, offline=offline, save_dir=save_dir, **kwargs)
        init = getattr(self, "_wandb_init", None)  # Lightning's wandb.init arguments
        if isinstance(init, dict) and init.get("anonymous") is None:
            # Lightning always passes anonymous=None, which wandb >= 0.19 answers with "The anonymous
            # setting has no effect" on every run: leave the unset setting out
            init.pop("anonymous", None)

    @property
    def experiment(self) -> Any:
        """The W&B run, started on first use; its folder is made then (a run refused before it starts leaves none)."""
        if self.save_dir is not None:
            os.makedirs(self.save_dir, exist_ok=True)
        return super().experiment
