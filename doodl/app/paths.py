"""Where a run writes its outputs: one folder per run, the same on every rank, never reused."""

from __future__ import annotations

import os
import time
import weakref
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

# One folder per trainer: every callback of a run, on every call, gets the same one.
_RUN_DIRS: "weakref.WeakKeyDictionary[object, Path]" = weakref.WeakKeyDictionary()


def run_dir(trainer) -> Path:
    """The run's output folder, created; call it on every rank (it broadcasts from rank 0).

    - first logger a ``TensorBoardLogger`` or ``CSVLogger``: ``trainer.log_dir``, which the logger
      versions (``version_0``, ``version_1``, ...);
    - any other first logger (``WandbLogger``, whose ``save_dir`` is shared by all runs) or no
      logger: ``default_root_dir/runs/<name>``, where name is the logger's version (the W&B run id)
      or a timestamp and pid, with ``-1``, ``-2``, ... appended if that folder already exists.
    """
    cached = _RUN_DIRS.get(trainer)
    if cached is not None:
        return cached
    loggers = trainer.loggers
    if loggers and isinstance(loggers[0], (TensorBoardLogger, CSVLogger)):
        path = trainer.log_dir  # broadcast by the trainer
        if path is None:  # pragma: no cover - both loggers always have a log_dir
            raise RuntimeError("the trainer's first logger has no log_dir")
        path = Path(path)
    else:
        path = None
        if trainer.is_global_zero:
            path = str(_new_run_dir(Path(trainer.default_root_dir) / "runs", _run_name(loggers)))
        path = Path(trainer.strategy.broadcast(path, src=0))
    path.mkdir(parents=True, exist_ok=True)
    _RUN_DIRS[trainer] = path
    return path


def check_log_dir_free(logger) -> None:
    """Refuse a ``CSVLogger`` or ``TensorBoardLogger`` whose version folder already holds files: it
    would overwrite (CSV: delete) another run's. Call it before the trainer exists."""
    if not isinstance(logger, (TensorBoardLogger, CSVLogger)):
        return
    folder = Path(logger.log_dir)  # with version None: the next free version, which the run will use
    if folder.is_dir() and any(folder.iterdir()):
        raise FileExistsError(
            f"the logger's folder {folder} already holds another run's files: pick another version "
            f"(trainer.logger.init_args.version, or leave it unset for the next free one) or remove {folder}")


def _run_name(loggers) -> str:
    """The first logger's version (a W&B run id) if it has one, else ``YYYYmmdd-HHMMSS-<pid>``."""
    if loggers:
        logger = loggers[0]
        if hasattr(logger, "experiment"):
            logger.experiment  # noqa: B018 - a W&B run gets its id when it starts (on rank 0, where this runs)
        version = logger.version
        if version is not None and str(version).strip():
            return str(version).replace(os.sep, "_")
    return f"{_timestamp()}-{os.getpid()}"


def _timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def _new_run_dir(parent: Path, name: str) -> Path:
    """``parent/name``, or ``parent/name-1``, ``-2``, ... : a folder no earlier run has."""
    parent.mkdir(parents=True, exist_ok=True)
    for k in range(10_000):
        path = parent / (name if k == 0 else f"{name}-{k}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise RuntimeError(f"{parent} already holds 10000 runs named {name}*: clean it up or set trainer.default_root_dir")
