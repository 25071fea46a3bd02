"""What the callbacks share: gathering across ranks, loggers; the atomic file writes (``doodl.run.files``)
and JSON-safe values (``doodl.run.result.jsonable``) re-exported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from doodl.run.files import read_png, write_image, write_json, write_png, write_text  # noqa: F401 (re-exported)
from doodl.run.result import ItemResult, jsonable  # noqa: F401 (jsonable re-exported for the callbacks)


def gather_to_rank0(trainer, local: list[Any], barrier: str | None = None) -> list[Any] | None:
    """Every rank's ``local`` records, concatenated in rank order, on rank 0 (None on the others),
    after an optional barrier (files written by every rank are visible). Call it on every rank."""
    if barrier is not None:
        trainer.strategy.barrier(barrier)
    every = [r for part in gather(trainer, local) for r in part]
    return every if trainer.is_global_zero else None


def gather(trainer, obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (``[obj]`` on one process). Call it on every rank."""
    if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        out: list[Any] = [None] * trainer.world_size
        torch.distributed.all_gather_object(out, obj)
        return out
    return [obj]


def wandb_loggers(trainer) -> list[WandbLogger]:
    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]


def tensorboard_loggers(trainer) -> list[TensorBoardLogger]:
    return [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]


def dataset_items(trainer) -> list[dict] | None:
    """The datamodule's item list, when the run has one."""
    dm = getattr(trainer, "datamodule", None)
    items = getattr(dm, "items", None)
    return list(items) if items is not None else None


def final_outputs(pl_module) -> list[ItemResult]:
    """The module's per-item results of this rank (``doodl.run.result.ItemResult``; see
    ``doodl.app.module.DOODL.final_outputs``)."""
    outs = getattr(pl_module, "final_outputs", None)
    if outs is None:
        raise AttributeError(
            f"{type(pl_module).__name__} has no 'final_outputs': the doodl callbacks need a module that "
            "lists its per-item results there (doodl.app.module.DOODL does)")
    return list(outs)
