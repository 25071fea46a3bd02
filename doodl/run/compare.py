"""``Comparison``: methods x items on the same seeds, judged by held-out judges (``doodl compare``).

Lightning-free. Every rank runs its share of the items: the item list is cut into global batches
of ``batch_size`` and batch k runs on rank k % W (``doodl.app.data.batches_for_rank``: an item
is batched with the same items on any number of ranks, so its result does not depend on W). Each
(item, method) result is written as soon as it exists, atomically:

    OUT/methods/<method>/<id>.png     the image as delivered (no PNG for a failed item)
    OUT/methods/<method>/<id>.json    its record (``ItemResult.to_record``) and item

so a killed comparison resumes without recomputing a finished pair. When every pair is on disk,
rank 0 reads every pair back, scores it with every judge
(``doodl.eval.scoring``), and writes the report (``doodl.eval.writers``: summary.md/.csv,
scores.csv/.jsonl, summary.png) and a side-by-side sheet of the methods' images.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .context import RunContext
from .files import read_png, write_json, write_png
from .methods import Method
from .result import ItemResult

Item = Mapping[str, Any]


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of ranks, from torchrun's or SLURM's environment (0, 1 alone)."""
    for rank_key, world_key in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        if world_key in os.environ:
            world, rank = int(os.environ[world_key]), int(os.environ.get(rank_key, 0))
            if not 0 <= rank < world:
                raise ValueError(f"{rank_key}={rank} is outside [0, {world_key}={world})")
            return rank, world
    return 0, 1


class Comparison:
    """Run ``methods`` on ``items`` with one ``RunContext`` and write every pair under ``output``.

    Args:
        context: backend, guide and chain shared by every method.
        methods: the methods (unique names).
        items: the prompt set's items (unique ids; each has a prompt and a seed).
        output: the comparison's folder.
        batch_size: items per batch (each method runs the same batches).
        progress: a function of one line of text (default: print).
    """

    def __init__(self, context: RunContext, methods: Sequence[Method], items: Sequence[Item], output: str | Path,
                 batch_size: int = 8, progress: Callable[[str], None] | None = None):
        names = [m.name for m in methods]
        if not methods:
            raise ValueError("a comparison needs at least one method")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"method names must be unique, got {repeated} more than once: give each a name")
        ids = [it["id"] for it in items]
        if len(set(ids)) != len(ids):
            raise ValueError("item ids must be unique")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.ctx, self.methods, self.items = context, list(methods), [dict(it) for it in items]
        self.output, self.batch_size = Path(output), batch_size
        self.progress = progress or (lambda line: print(line, flush=True))

    # ---- files -------------------------------------------------------------------------------
    def pair_path(self, method: str, item_id: str) -> Path:
        return self.output / "methods" / method / f"{item_id}.json"

    def done(self, method: str, item_id: str) -> bool:
        """Whether the pair's record (and its PNG, unless it failed) is on disk."""
        meta = self.pair_path(method, item_id)
        if not meta.is_file():
            return False
        try:
            record = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False  # half-written by another tool: recompute
        return record.get("status") == "failed" or meta.with_suffix(".png").is_file()

    def save(self, result: ItemResult) -> None:
        meta = self.pair_path(result.method, result.id)
        if not result.failed:
            write_png(meta.with_suffix(".png"), result.image)
        write_json(meta, {**result.to_record(), "item": dict(result.item)})

    def load(self, method: str, item: Item) -> dict[str, Any]:
        """The pair as a judging record: id, method, group, status, item, image (or None), cost."""
        meta = self.pair_path(method, item["id"])
        record = json.loads(meta.read_text(encoding="utf-8"))
        # the delivered image back as floats k / 255
        image = None if record["status"] == "failed" else read_png(meta.with_suffix(".png")).float() / 255.0
        return {"id": item["id"], "method": method, "group": item.get("group"), "status": record["status"],
                "item": dict(item), "image": image, "cost": record.get("cost") or {},
                "guide_score": (record.get("scores") or {}).get("score"), "iterations": record.get("iterations")}

    # ---- running -------------------------------------------------------------------------------
    def my_batches(self, rank: int, world: int) -> list[list[Item]]:
        from doodl.app.data import batches_for_rank  # pure function: no Lightning needed to call it

        return [[self.items[i] for i in b] for b in batches_for_rank(len(self.items), self.batch_size, rank, world)]

    def run(self, rank: int = 0, world: int = 1) -> dict[str, int]:
        """Every pair of this rank's batches that is not on disk yet; returns counts of run and kept pairs."""
        batches = self.my_batches(rank, world)
        total = sum(len(b) for b in batches) * len(self.methods)
        ran = kept = 0
        t0 = time.perf_counter()
        for b, batch in enumerate(batches):
            for method in self.methods:
                todo = [it for it in batch if not self.done(method.name, it["id"])]
                kept += len(batch) - len(todo)
                if not todo:
                    continue
                for result in method.run(self.ctx, todo):
                    self.save(result)
                ran += len(todo)
                self.progress(f"doodl compare: rank {rank}/{world}: {ran + kept}/{total} pairs "
                              f"({method.name}, batch {b + 1}/{len(batches)}, {time.perf_counter() - t0:.0f} s)")
            for it in batch:
                self.ctx.forget(it["id"])
        return {"ran": ran, "kept": kept}

    def missing(self) -> list[tuple[str, str]]:
        """The (method, item id) pairs with no result on disk yet."""
        return [(m.name, it["id"]) for m in self.methods for it in self.items if not self.done(m.name, it["id"])]

    def wait_for_ranks(self, stall_s: float = 1800.0, poll_s: float = 2.0) -> None:
        """Rank 0: wait until every pair of every rank is on disk (a filesystem shared by the ranks);
        an error once no new pair has appeared for ``stall_s`` seconds (a rank that died)."""
        last, since = None, time.monotonic()
        while True:
            missing = self.missing()
            if not missing:
                return
            if last is None or len(missing) < last:
                last, since = len(missing), time.monotonic()
            elif time.monotonic() - since > stall_s:
                raise TimeoutError(f"{len(missing)} (method, item) pairs, e.g. {missing[:3]}, have no result in "
                                   f"{self.output}/methods and none came for {stall_s:.0f} s: did a rank fail? Is "
                                   f"{self.output} on a filesystem every rank shares? (rerun: finished pairs are kept)")
            time.sleep(poll_s)

    def records(self) -> list[dict[str, Any]]:
        """Every (item, method) pair read back from disk; a missing one is an error naming it."""
        missing = self.missing()
        if missing:
            raise FileNotFoundError(f"{len(missing)} (method, item) pairs have no result in {self.output}/methods, "
                                    f"e.g. {missing[:3]}: run every rank to the end (or rerun: finished pairs are kept)")
        return [self.load(m.name, it) for m in self.methods for it in self.items]
