"""``doodl fit -c config.yaml`` (and ``predict``, ``test``): LightningCLI over DOODL and prompt data.

Models, losses, loggers and callbacks are injected as ``class_path``/``init_args``. Always
present, configurable under their own keys: ``checkpoint`` (latent checkpoints for exact resume),
``image_writer`` (PNGs, grids, W&B images), ``results_table`` (CSV, JSONL, W&B table) and
``prediction_writer``. A resolved ``config.yaml`` is saved in every run's folder.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from .callbacks import ImageWriter, ResultsTable
from .checkpoint import LatentCheckpoint
from .data import PromptDataModule
from .module import DOODL
from .paths import run_dir
from .prediction_writer import PredictionWriter
from .strategy import ItemParallelStrategy

TRAINER_DEFAULTS: dict[str, Any] = {
    "max_epochs": -1,  # one epoch is one iteration of every item; the module stops when all are done
    "devices": 1,
    "use_distributed_sampler": False,  # PromptDataModule shards items itself: no padding, no repeats
    "num_sanity_val_steps": 0,
    "default_root_dir": "outputs",
    "log_every_n_steps": 1,
    "logger": {"class_path": "doodl.app.loggers.WandbLogger", "init_args": {"project": "doodl", "save_dir": "outputs"}},
}


class RunConfig(SaveConfigCallback):
    """Saves the resolved config as ``config.yaml`` in the run's own folder (never overwriting)."""

    def __init__(self, parser: LightningArgumentParser, config: Any, **kwargs: Any) -> None:
        super().__init__(parser, config, save_to_log_dir=False, **kwargs)

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        run_dir(trainer)  # its first call broadcasts: every rank makes it (save_config runs on rank 0 only)
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: Any, pl_module: Any, stage: str) -> None:
        path = run_dir(trainer) / self.config_filename
        self.parser.save(self.config, str(path), skip_unset=False, overwrite=False, multifile=False)


class DOODLCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(LatentCheckpoint, "checkpoint")
        parser.add_lightning_class_args(ImageWriter, "image_writer")
        parser.add_lightning_class_args(ResultsTable, "results_table")
        parser.add_lightning_class_args(PredictionWriter, "prediction_writer")

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> Any:
        several = str(config.get("devices", 1)) not in ("1", "[0]") or int(config.get("num_nodes") or 1) > 1
        if config.get("strategy", "auto") == "auto" and several:
            config["strategy"] = ItemParallelStrategy()  # never DDP's gradient averaging across items
        return super()._instantiate_trainer(config, callbacks)


def main(args: list[str] | None = None, run: bool = True) -> DOODLCLI:
    """Entry point of the ``doodl`` command; tests call ``main(["fit", "-c", "tests/conf/x.yaml"])``.

    A run stopped by SIGTERM saves ``last.ckpt`` (``LatentCheckpoint``) and exits with status
    143 (128 + SIGTERM), so that schedulers see an interrupted job, not a finished one.
    """
    try:
        return DOODLCLI(
            DOODL, PromptDataModule, args=args, run=run, trainer_defaults=TRAINER_DEFAULTS,
            save_config_callback=RunConfig, auto_configure_optimizers=False,
        )
    except SIGTERMException as e:
        raise SystemExit(143) from e


def console(args: list[str] | None = None) -> int:
    """The ``doodl`` console script: ``main`` with exit status 0 on success (``main`` returns the
    CLI object, which ``sys.exit`` would print and turn into status 1)."""
    main(args)
    return 0
