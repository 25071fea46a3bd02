"""Search, then refine: DOODL started from the seed a seed search found best (issue 13)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from doodl.core.updates import UpdateFactory

from .context import RunContext
from .methods import DOODL, Method, SeedSearch
from .result import ItemResult

Item = Mapping[str, Any]


class SearchThenRefine(Method):
    """``n`` seeds by the guide's score (``SeedSearch``), then DOODL from the best one; the cost is
    both's. With ``budget`` (plain samples per item) the search takes ``n`` of it and DOODL the rest.
    DOODL's settings as ``doodl.run.methods.DOODL``; the result is DOODL's (its ``scores["seed"]``:
    the seed it started from)."""

    default_name = "search_refine"

    def __init__(self, n: int = 4, stride: int = 1_000_003, iterations: int = 50, grad_mode: str | None = None,
                 guidance_scale: float = 1.0, loss_on: str = "both", update: UpdateFactory | None = None,
                 target_score: float | None = None, score_direction: str | None = None, best_by: str = "loss",
                 budget: float | None = None, name: str | None = None, accept_score: float | None = None):
        super().__init__(name)
        if budget is not None and budget <= n:
            raise ValueError(f"method {self.name!r}: a budget of {budget:g} plain samples leaves nothing for DOODL "
                             f"after a search of n={n} seeds: give budget > n (DOODL needs 2 per iteration)")
        self.search = SeedSearch(n=n, stride=stride, direction=score_direction, name=self.name)
        self.refine = DOODL(iterations=iterations, grad_mode=grad_mode, guidance_scale=guidance_scale, loss_on=loss_on,
                            update=update, target_score=target_score, score_direction=score_direction,
                            best_by=best_by, budget=budget, name=self.name, accept_score=accept_score)
        self.n = n

    def check(self, ctx: RunContext) -> list[str]:
        try:
            self.refine.runner(ctx, spent=self.n)
        except ValueError as e:
            return [str(e)]
        return []

    def run(self, ctx: RunContext, batch: Sequence[Item]) -> list[ItemResult]:
        found = self.search.run(ctx, batch)
        starts = [{**it, "seed": int(r.scores.get("seed", it.get("seed", 0)))} for it, r in zip(batch, found)]
        runner = self.refine.runner(ctx, spent=self.n)
        with torch.inference_mode(False):
            results = runner.run(starts)
        for r, it, start, f in zip(results, batch, starts, found):
            r.method, r.item = self.name, it
            r.scores["seed"] = float(start["seed"])
            r.cost.add(f.cost)
        return results
