"""The PromptDataModule: items of a prompt file (``doodl.app.prompts``) as Lightning data.

Every rank gets its own items (``shard``: each item on exactly one rank, no padding, no
repeats); ``ItemSampler`` keeps the number of batches equal across ranks with fillers that
``collate_items`` drops, so Lightning's per-step collectives never wait.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

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


class ItemSampler(DistributedSampler):
    """One rank's shard of indices in order, then ``None`` fillers up to ``ceil(n / num_replicas)``.

    Every item is on exactly one rank, never repeated (Lightning's own ``DistributedSampler`` would
    repeat items to even out the ranks). The fillers give every rank the same number of batches,
    as Lightning's per-step collectives need; ``collate_items`` drops them, so a rank with fewer
    items gets shorter (possibly empty) batches at the end. A ``DistributedSampler`` subclass, so
    Lightning keeps it as it is even with ``use_distributed_sampler=True``.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        n = len(dataset)
        self.indices: list[int | None] = shard(range(n), rank, num_replicas)
        self.indices += [None] * (math.ceil(n / num_replicas) - len(self.indices))

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
    """

    def __init__(
        self,
        path: str | None = None,
        prompts: list[str] | None = None,
        seeds: list[int] = [0],  # noqa: B006 (LightningCLI shows the default; never mutated)
        batch_size: int = 1,
        num_workers: int = 0,
        limit: int | None = None,
    ):
        super().__init__()
        if (path is None) == (prompts is None):
            raise ValueError("give exactly one of path (a prompt file) or prompts (a list of strings)")
        for name, v, low in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0)):
            if not _is_int(v) or v < low:
                raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
        if limit is not None and (not _is_int(limit) or limit < 1):
            raise ValueError(f"limit must be an int >= 1 or None, got {limit!r}")
        self.save_hyperparameters()
        items = read_items(path, seeds) if path is not None else items_from_prompts(prompts, seeds)
        self.items: list[dict] = items[:limit] if limit is not None else items

    def setup(self, stage: str) -> None:
        """Nothing to do: the items were read and validated in ``__init__``, before any model work."""

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
        """The items rank ``rank`` of ``world_size`` optimizes (the dataloaders' shard)."""
        return shard(self.items, rank, world_size)

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
            dataset, batch_size=self.hparams.batch_size, sampler=ItemSampler(dataset, world_size, rank),
            num_workers=self.hparams.num_workers, collate_fn=collate_items,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader()

    def predict_dataloader(self) -> DataLoader:
        return self._loader()

    def test_dataloader(self) -> DataLoader:
        return self._loader()
