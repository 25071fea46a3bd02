"""The PromptDataModule: items of a prompt file (``doodl.app.prompts``) as Lightning data.

Batches are composed the same way on every number of ranks: the item list is cut into global
batches of ``batch_size`` first, then whole batches are dealt to ranks (batch k to rank k % W,
``batches_for_rank``), so an item is batched with the same items, and gives bitwise the same
result, on one process or many. Each item is on exactly one rank, no padding, no repeats;
``ItemSampler`` keeps the number of batches equal across ranks with fillers that
``collate_items`` drops, so Lightning's per-step collectives never wait.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .item_checks import check_items, duplicate_rows, report
from .prompts import _is_int, items_from_prompts, read_items, shard, slug  # noqa: F401 (re-exported)


# ---- torch data --------------------------------------------------------------------------------
class ItemDataset(Dataset):
    """The items as a map-style dataset; each read returns a fresh shallow copy of the item dict.
    Index ``None`` (``ItemSampler``'s filler) reads as ``None``, which ``collate_items`` drops."""

    def __init__(self, items: Sequence[dict]):
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int | None) -> dict | None:
        return None if index is None else dict(self.items[index])


def batches_for_rank(n: int, batch_size: int, rank: int, world_size: int) -> list[list[int]]:
    """The batches (lists of item indices) rank ``rank`` of ``world_size`` runs: the global batches
    ``[0, b), [b, 2b), ...`` of ``n`` items (b = ``batch_size``), batch k on rank k % world_size."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    starts = range(rank * batch_size, n, world_size * batch_size)
    return [list(range(s, min(s + batch_size, n))) for s in starts]


class ItemSampler(DistributedSampler):
    """One rank's batches of indices (``batches_for_rank``) in order, each filled up to
    ``batch_size`` with ``None``, then whole ``None`` batches up to ``ceil(n / batch_size / num_replicas)``.

    Every item is on exactly one rank, never repeated (Lightning's own ``DistributedSampler`` would
    repeat items to even out the ranks). The fillers give every rank the same number of batches,
    as Lightning's per-step collectives need, and keep a DataLoader of the same ``batch_size``
    cutting exactly these batches; ``collate_items`` drops them, so a rank with fewer items gets
    shorter (possibly empty) batches. A ``DistributedSampler`` subclass, so Lightning keeps it as
    it is even with ``use_distributed_sampler=True``.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, batch_size: int = 1):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        n = len(dataset)
        self.batch_size = batch_size
        batches = batches_for_rank(n, batch_size, rank, num_replicas)
        per_rank = -(-(-(-n // batch_size)) // num_replicas)  # ceil(ceil(n / batch_size) / num_replicas)
        batches += [[]] * (per_rank - len(batches))
        self.indices: list[int | None] = [i for b in batches for i in b + [None] * (batch_size - len(b))]

    def __iter__(self) -> Iterator[int | None]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def collate_items(batch: list[dict | None]) -> list[dict]:
    """A batch is the list of item dicts, unchanged (``ItemSampler``'s fillers dropped: it may be empty)."""
    return [it for it in batch if it is not None]


class PromptDataModule(L.LightningDataModule):
    """Items from a prompt file (``path``) or a list of ``prompts``, times ``seeds``; read and validated at once.

    Args:
        path: a .txt, .jsonl or .csv prompt file (see the module docstring).
        prompts: prompts given directly instead of a file.
        seeds: seeds of rows that give none (default [0]).
        batch_size: items per training step.
        num_workers: DataLoader workers.
        limit: keep only the first ``limit`` items (after the prompts x seeds expansion).
        strict: make repeated rows and columns that nothing reads errors (by default, warnings).

    Repeated rows are found here; what the guidance loss needs of each item, and which columns
    nothing reads, only once the loss exists: ``check_against(guidance)``, which the CLI calls
    before the run starts (``setup`` calls it if nobody did).
    """

    def __init__(
        self,
        path: str | None = None,
        prompts: list[str] | None = None,
        seeds: list[int] = [0],  # noqa: B006 (LightningCLI shows the default; never mutated)
        batch_size: int = 1,
        num_workers: int = 0,
        limit: int | None = None,
        strict: bool = False,
    ):
        super().__init__()
        if (path is None) == (prompts is None):
            raise ValueError("give exactly one of path (a prompt file) or prompts (a list of strings)")
        for name, v, low in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0)):
            if not _is_int(v) or v < low:
                raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
        if limit is not None and (not _is_int(limit) or limit < 1):
            raise ValueError(f"limit must be an int >= 1 or None, got {limit!r}")
        if not isinstance(strict, bool):
            raise ValueError(f"strict must be true or false, got {strict!r}")
        self.save_hyperparameters()
        items = read_items(path, seeds) if path is not None else items_from_prompts(prompts, seeds)
        self.items: list[dict] = items[:limit] if limit is not None else items
        self.source: str | None = None if path is None else str(path)  # rows are named source:line
        report(duplicate_rows(self.items, self.source), strict, "repeated row(s)")
        self.checked_against: Any = None  # the guidance loss the items were checked against

    def check_against(self, guidance: Any) -> None:
        """Check every item against the guidance loss (``doodl.app.item_checks.check_items``): one
        ValueError listing each row the loss cannot run, warnings (errors when ``strict``) for
        columns that neither doodl nor the loss reads. Call it before any run folder or logger exists."""
        check_items(self.items, guidance, self.source, self.hparams.strict)
        self.checked_against = guidance

    def setup(self, stage: str) -> None:
        """The items were read and validated in ``__init__``; if nobody checked them against the
        guidance loss yet (the CLI does, earlier), it is done here, before the first step."""
        guidance = getattr(getattr(self.trainer, "lightning_module", None), "guidance", None)
        if guidance is not None and self.checked_against is not guidance:
            self.check_against(guidance)

    def state_dict(self) -> dict[str, Any]:
        """The item ids, saved in every checkpoint so a resumed run is known to run the same items."""
        return {"ids": [it["id"] for it in self.items]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Refuse to resume a checkpoint written for other items (an edited prompt file, other seeds or limit)."""
        saved = state_dict.get("ids")
        ids = [it["id"] for it in self.items]
        if saved is not None and set(saved) != set(ids):  # the order only decides which rank runs an item
            gone = [i for i in saved if i not in set(ids)]
            new = [i for i in ids if i not in set(saved)]
            raise ValueError(
                f"the checkpoint was written for other items: {len(gone)} of its {len(saved)} ids are not in this "
                f"dataset (e.g. {gone[:3]}), {len(new)} of this dataset's {len(ids)} are new (e.g. {new[:3]}): "
                "resume with the same prompt file, seeds and limit, or start a new run without --ckpt_path")

    def items_for_rank(self, rank: int, world_size: int) -> list[dict]:
        """The items rank ``rank`` of ``world_size`` optimizes, in order (its dataloaders' batches)."""
        batches = batches_for_rank(len(self.items), self.hparams.batch_size, rank, world_size)
        return [self.items[i] for b in batches for i in b]

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is not None:
            return trainer.global_rank, trainer.world_size
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _loader(self) -> DataLoader:
        dataset = ItemDataset(self.items)
        rank, world_size = self._rank()
        return DataLoader(
            dataset, batch_size=self.hparams.batch_size,
            sampler=ItemSampler(dataset, world_size, rank, self.hparams.batch_size),
            num_workers=self.hparams.num_workers, collate_fn=collate_items,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader()

    def predict_dataloader(self) -> DataLoader:
        return self._loader()

    def test_dataloader(self) -> DataLoader:
        return self._loader()
