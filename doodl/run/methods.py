"""The methods a comparison runs, behind one interface: ``method.run(context, batch) -> [ItemResult]``.

Every method starts each item from the same latents (``RunContext.start``: its seed's noise, or its
image's inversion), runs the same chain and delivers the image its PNG holds, with its cost:

    Unguided    the EDICT sample, no guidance                       2 (T - s) plain evaluations
    OneStep     DDIM with one-step guidance at every step (SPEC 7)  (T - s) with a graph
    DOODL       the paper's method (``doodl.run.runner.DOODLRunner``) per iteration: 2 (T - s)
                plain + 2 (T - s) with a graph ("invert", "checkpoint"), 2 (T - s) with a graph ("naive")
    SeedSearch  best of ``n`` seeds by the guide's score, no gradient   n * 2 (T - s) plain
    SearchThenRefine (``doodl.run.refine``): a seed search, then DOODL from the best seed

``budget`` (plain samples per item, ``doodl.run.budget``) caps DOODL's iterations and sets a seed
search's number of seeds, so that methods can be compared at equal cost.

(T steps, s = the start step of a partial chain; one batched CFG call counts once per item.)
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from doodl.core.onestep import one_step_guided_sample
from doodl.core.updates import UpdateFactory

from .context import RunContext
from .budget import check_budget, iterations_within, seeds_within
from .cost import EvalCounter
from .images import all_finite, delivered
from .result import ItemResult
from .runner import DOODLRunner, resolve_grad_mode
from .selection import SCORE_DIRECTIONS

Item = Mapping[str, Any]


class Method:
    """A way to produce one final image per item. ``name`` labels its results (unique in a comparison)."""

    default_name = "method"

    def __init__(self, name: str | None = None):
        name = self.default_name if name is None else name
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            raise ValueError(f"a method's name must be a plain folder name, got {name!r}")
        self.name = name

    def run(self, ctx: RunContext, batch: Sequence[Item]) -> list[ItemResult]:  # pragma: no cover - abstract
        raise NotImplementedError

    def check(self, ctx: RunContext) -> list[str]:
        """What stops this method running on ``ctx`` (e.g. a budget too small), asked before any pair runs."""
        return []

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    def _results(self, ctx: RunContext, batch: Sequence[Item], decoded: Tensor, counter: EvalCounter) -> list[ItemResult]:
        """Results of a one-pass method from its decoded batch: delivered images, the guide's score
        (status "failed" for a non-finite image or score), the batch's cost shared per item."""
        images, finite = delivered(decoded.detach()).float().cpu(), all_finite(decoded).cpu()
        scores = ctx.score(images.to(ctx.device), ctx.crop_items(batch)).cpu()
        share = counter.share(len(batch))
        out = []
        for k, it in enumerate(batch):
            ok = bool(finite[k]) and math.isfinite(float(scores[k]))
            out.append(ItemResult(
                id=it["id"], item=it, method=self.name, status="done" if ok else "failed",
                image=images[k] if ok else None, scores={"score": float(scores[k])} if ok else {},
                iterations=1, best_iteration=0,
                failure=None if ok else ("non-finite image" if not bool(finite[k]) else "non-finite score"),
                cost=replace(share)))
        return out


def _starts(ctx: RunContext, batch: Sequence[Item], seeds: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
    pairs = [ctx.start(it, None if seeds is None else seeds[k]) for k, it in enumerate(batch)]
    return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])


class Unguided(Method):
    """The plain EDICT sample from the item's start latents: what the model makes without guidance."""

    default_name = "unguided"

    @torch.no_grad()
    def run(self, ctx: RunContext, batch: Sequence[Item]) -> list[ItemResult]:
        counter = EvalCounter()
        x, y = _starts(ctx, batch)
        x0, _ = ctx.sampler.sample(ctx.eps_fn(batch, counter), x, y, start=ctx.start_step)
        return self._results(ctx, batch, ctx.decode(x0), counter)


class OneStep(Method):
    """One-step guidance (SPEC.md section 7) with the guide's loss times ``scale`` (and each item's
    "weight") at every DDIM step; the crops come from each item's own stream, as DOODL's do."""

    default_name = "onestep"

    def __init__(self, scale: float = 1.0, name: str | None = None):
        super().__init__(name)
        if not scale >= 0:
            raise ValueError(f"the one-step guidance scale must be >= 0, got {scale}")
        self.scale = float(scale)

    def run(self, ctx: RunContext, batch: Sequence[Item]) -> list[ItemResult]:
        counter = EvalCounter()
        items = ctx.crop_items(batch)
        with torch.inference_mode(False):  # Lightning predicts in inference mode; one-step differentiates
            x, _ = _starts(ctx, batch)
            x0 = one_step_guided_sample(ctx.sampler, ctx.eps_fn(batch, counter),
                                        lambda s: ctx.loss(ctx.decode(s), items, self.scale, x), x, start=ctx.start_step)
            with torch.no_grad():
                decoded = ctx.decode(x0)
        return self._results(ctx, batch, decoded, counter)


class DOODL(Method):
    """DOODL (SPEC.md section 4): ``iterations`` of the exact gradient through the chain per item,
    with ``update`` (default: the paper's). Settings as ``doodl.run.runner.DOODLRunner``."""

    default_name = "doodl"

    def __init__(self, iterations: int = 50, grad_mode: str | None = None, guidance_scale: float = 1.0,
                 loss_on: str = "both", update: UpdateFactory | None = None, target_score: float | None = None,
                 score_direction: str | None = None, best_by: str = "loss", budget: float | None = None,
                 memory_budget: int | None = None, name: str | None = None, accept_score: float | None = None):
        super().__init__(name)
        check_budget(budget, f"method {self.name!r}")
        self.budget = budget
        self.settings = dict(iterations=iterations, grad_mode=grad_mode, guidance_scale=guidance_scale,
                             loss_on=loss_on, update=update, target_score=target_score,
                             score_direction=score_direction, best_by=best_by, memory_budget=memory_budget,
                             accept_score=accept_score)

    def runner(self, ctx: RunContext, spent: float = 0.0) -> DOODLRunner:
        """The runner, with as many iterations as ``budget`` (plain samples) allows after ``spent``."""
        s = self.settings
        mode = resolve_grad_mode(ctx, s["grad_mode"])
        k = iterations_within(self.budget, mode, s["iterations"], spent, f"method {self.name!r}")
        return DOODLRunner(ctx, **{**s, "grad_mode": mode, "iterations": k})

    def check(self, ctx: RunContext) -> list[str]:
        try:
            self.runner(ctx)
        except ValueError as e:
            return [str(e)]
        return []

    def run(self, ctx: RunContext, batch: Sequence[Item]) -> list[ItemResult]:
        runner = self.runner(ctx)
        with torch.inference_mode(False):
            results = runner.run(batch)
        for r in results:
            r.method = self.name
        return results


class SeedSearch(Method):
    """Best of ``n`` seeds by the guide's score, no gradient: the item's own seed and ``n - 1`` more
    (``seed + k * stride``), each an unguided EDICT sample; the result is the one the guide scores best
    (``direction``: default the guide's own). An item that starts from an image has one start: refused."""

    default_name = "seed_search"

    def __init__(self, n: int = 8, stride: int = 1_000_003, direction: str | None = None, budget: float | None = None,
                 name: str | None = None):
        super().__init__(name)
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"SeedSearch needs n >= 1 seeds, got {n!r}")
        check_budget(budget, f"method {self.name!r}")
        if budget is not None:  # the budget decides the number of seeds
            n = seeds_within(budget, int(budget), f"method {self.name!r}")
        if direction is not None and direction not in SCORE_DIRECTIONS:
            raise ValueError(f"direction must be one of {SCORE_DIRECTIONS} or None (the guide's), got {direction!r}")
        self.n, self.stride, self.direction = n, int(stride), direction

    @torch.no_grad()
    def run(self, ctx: RunContext, batch: Sequence[Item]) -> list[ItemResult]:
        if any(it.get("image") is not None for it in batch):
            raise ValueError("SeedSearch draws new noise, but an edit item starts from its image's inversion: "
                             "leave seed search out of comparisons of edits")
        direction = self.direction or getattr(ctx.guidance, "score_direction", None)
        if direction not in SCORE_DIRECTIONS:
            raise ValueError(f"{type(ctx.guidance).__name__}'s score has no better direction: give SeedSearch(direction=...)")
        counter = EvalCounter()
        best: list[ItemResult | None] = [None] * len(batch)
        sign = 1.0 if direction == "max" else -1.0
        for k in range(self.n):
            seeds = [int(it.get("seed", 0)) + k * self.stride for it in batch]
            x, y = _starts(ctx, batch, seeds)
            x0, _ = ctx.sampler.sample(ctx.eps_fn(batch, counter), x, y, start=ctx.start_step)
            for j, r in enumerate(self._results(ctx, batch, ctx.decode(x0), EvalCounter())):
                r.scores["seed"], r.best_iteration = float(seeds[j]), k
                old = best[j]
                if old is None or (r.image is not None and (old.image is None
                                                            or sign * r.scores["score"] > sign * old.scores["score"])):
                    best[j] = r
        share = counter.share(len(batch))
        for r in best:
            r.iterations, r.cost = self.n, replace(share)
        return best  # type: ignore[return-value]


def __getattr__(name: str):
    if name == "SearchThenRefine":  # doodl.run.methods.SearchThenRefine, as the other methods
        from .refine import SearchThenRefine

        return SearchThenRefine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
