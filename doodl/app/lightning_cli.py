"""The LightningCLI of ``doodl fit|predict|test`` (``doodl.app.cli.main`` builds it).

Models, losses, loggers and callbacks are injected as ``class_path``/``init_args``. Always
present, configurable under their own keys: ``checkpoint`` (latent checkpoints for exact resume),
``image_writer`` (PNGs, grids, W&B images), ``results_table`` (CSV, JSONL, W&B table),
``prediction_writer`` and ``test_table`` (``doodl test``'s scores). A resolved ``config.yaml`` is
saved in every run's folder.

Checked before any model loads: the prompt file (every bad row at once). Checked after the
models are built and before the trainer, the run folder or a W&B run exist: the items against
the loss, the logger's folder (never another run's), and on resume the model settings against
the checkpoint's (``doodl.app.resume``).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Optional

import yaml
from jsonargparse.typing import PositiveInt
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from . import prompts
from .callbacks import ImageWriter, ResultsTable
from .checkpoint import LatentCheckpoint
from .config_paths import resolve_config_paths
from .paths import check_log_dir_free, run_dir
from .prediction_writer import PredictionWriter
from .progress import IterationBar
from .resume import check_resume
from .strategy import ItemParallelStrategy
from .test_table import TestTable

CKPT_KEYWORDS = ("last", "best", "hpc", "registry")  # --ckpt_path values Lightning resolves itself

TRAINER_DEFAULTS: dict[str, Any] = {
    "max_epochs": -1,  # one epoch is one iteration of every item; the module stops when all are done
    "devices": 1,
    "use_distributed_sampler": False,  # PromptDataModule shards items itself: no padding, no repeats
    "num_sanity_val_steps": 0,
    "default_root_dir": "outputs",
    "log_every_n_steps": 1,
    "enable_model_summary": False,  # "Trainable params: 0": the latents are trained, not the frozen networks
    # save_dir None: the run's trainer.default_root_dir (DOODLCLI.before_instantiate_classes)
    "logger": {"class_path": "doodl.app.loggers.WandbLogger", "init_args": {"project": "doodl", "save_dir": None}},
}


class RunConfig(SaveConfigCallback):
    """Saves the resolved config as ``config.yaml`` in the run's own folder (never overwriting)
    and prints that folder (rank 0)."""

    def __init__(self, parser: LightningArgumentParser, config: Any, **kwargs: Any) -> None:
        super().__init__(parser, config, save_to_log_dir=False, **kwargs)

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        folder = run_dir(trainer)  # its first call broadcasts: every rank makes it (save_config runs on rank 0 only)
        if trainer.is_global_zero:
            print(f"doodl: run folder: {folder}", flush=True)
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: Any, pl_module: Any, stage: str) -> None:
        path = run_dir(trainer) / self.config_filename
        self.parser.save(self.config, str(path), skip_unset=False, overwrite=False, multifile=False)


def set_threads(threads: int | None) -> None:
    """``--threads N``: torch's CPU threads in this process, and in the processes it launches
    (Lightning gives each DDP rank its own count only while OMP_NUM_THREADS is unset)."""
    if threads is None:
        return
    import torch

    torch.set_num_threads(int(threads))
    os.environ["OMP_NUM_THREADS"] = str(int(threads))


class DOODLArgumentParser(LightningArgumentParser):
    """Lightning's parser, with the new form of an option an old config still writes the old way
    (``cutouts: 16`` -> a ``Cutouts`` object) added to its error."""

    def error(self, message: str, ex: Exception | None = None) -> Any:
        from doodl.guidance.cutouts import parser_error_hint

        hint = parser_error_hint(str(message))
        if hint and hint in str(message):  # a subcommand's parser added it already
            hint = None
        return super().error(f"{message}\n{hint}" if hint else message, ex)


class DOODLCLI(LightningCLI):
    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """fit, predict and test (Lightning's ``validate`` has nothing to run: DOODL has no validation step)."""
        subs = LightningCLI.subcommands()
        return {k: subs[k] for k in ("fit", "predict", "test")}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(LatentCheckpoint, "checkpoint")
        parser.add_lightning_class_args(ImageWriter, "image_writer")
        parser.add_lightning_class_args(ResultsTable, "results_table")
        parser.add_lightning_class_args(PredictionWriter, "prediction_writer")
        parser.add_lightning_class_args(TestTable, "test_table")
        parser.add_argument(
            "--threads", type=Optional[PositiveInt], default=None,
            help="torch CPU threads of each process (null: torch's default). Tiny models (the digits world) run "
                 "fastest on 1: two threads on a 2-core machine that runs anything else were 3.6x slower")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        self._argv = [str(a) for a in (sys.argv[1:] if args is None else args)] if not hasattr(args, "items") else []
        super().parse_arguments(parser, args)

    def _parse_ckpt_path(self) -> None:
        """Keep this run's model settings (Lightning's CLI would replace them by the checkpoint's)
        and refuse those that differ from the checkpoint's (``doodl.app.resume``)."""
        sub = self.config.get("subcommand")
        if not sub:
            return
        ckpt_path = self.config[sub].get("ckpt_path")
        if not ckpt_path or str(ckpt_path) in CKPT_KEYWORDS:
            return
        dump = yaml.safe_load(self.parser.dump(self.config, skip_link_targets=False, skip_none=False, format="yaml"))
        check_resume(ckpt_path, dump[sub].get("model") or {}, sub)

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        set_threads(cfg.get("threads"))
        resolve_config_paths(cfg, getattr(self, "_argv", []))  # a config's relative paths: from its folder
        # the prompt file first: every bad row is listed before any model loads
        data = cfg.get("data")
        if data is not None and data.get("path") is not None:
            prompts.read_items(data.path, data.get("seeds") or [0])
        # a W&B logger without save_dir writes under the run's root, not ./outputs
        trainer = cfg.get("trainer")
        loggers = trainer.get("logger") if trainer is not None else None
        for logger in loggers if isinstance(loggers, list) else [loggers]:
            init = getattr(logger, "init_args", None) if hasattr(logger, "get") else None
            if init is not None and str(logger.get("class_path", "")).endswith("WandbLogger") and init.get("save_dir") is None:
                init.save_dir = trainer.get("default_root_dir") or "outputs"

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        """The checks that need the built model and items, before the trainer, run folder or W&B run exist."""
        self.check_items()
        self.check_image_size()
        check_epochs = getattr(self.model, "check_max_epochs", None)  # DOODL: one epoch is one iteration
        if self.subcommand == "fit" and callable(check_epochs):
            check_epochs(self._get(self.config_init, "trainer", default={}).get("max_epochs"))
        if os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0":
            loggers = self._get(self.config_init, "trainer", default={}).get("logger")
            for logger in loggers if isinstance(loggers, list) else [loggers]:
                check_log_dir_free(logger)
        return super().instantiate_trainer(**kwargs)

    def check_items(self) -> None:
        """The items against what the loss needs (class range, required fields, images, references)."""
        dm, guidance = self.datamodule, getattr(self.model, "guidance", None)
        if dm is None or guidance is None:
            return
        if callable(getattr(dm, "check_against", None)):  # PromptDataModule (doodl.app.item_checks)
            dm.check_against(guidance)

    def check_image_size(self) -> None:
        """model.height / model.width against the backend (a size its VAE cannot decode), before any step."""
        backend, h = getattr(self.model, "model", None), getattr(self.model, "hparams", {})
        if callable(getattr(backend, "latent_shape", None)) and "height" in h and "width" in h:
            try:
                backend.latent_shape(h["height"], h["width"])
            except ValueError as err:
                raise ValueError(f"model.height={h['height']}, model.width={h['width']}: {err}") from err

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> Any:
        several = str(config.get("devices", 1)) not in ("1", "[0]") or int(config.get("num_nodes") or 1) > 1
        if config.get("strategy", "auto") == "auto" and several:
            config["strategy"] = ItemParallelStrategy()  # never DDP's gradient averaging across items
        given = [*(config.get("callbacks") or []), *callbacks]
        if config.get("enable_progress_bar", True) is not False and not any(isinstance(c, ProgressBar) for c in given):
            callbacks = [*callbacks, IterationBar()]
        return super()._instantiate_trainer(config, callbacks)

    def _print_run_folder(self) -> None:
        if self.trainer.is_global_zero:
            print(f"doodl: run folder: {run_dir(self.trainer)}", flush=True)

    def after_fit(self) -> None:
        self._print_run_folder()

    def after_predict(self) -> None:
        self._print_run_folder()

    def after_test(self) -> None:
        self._print_run_folder()
