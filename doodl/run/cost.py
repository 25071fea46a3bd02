"""What a method spends per item: noise-model evaluations with and without a graph, and wall time.

An EDICT step evaluates the noise model twice (once per half-step, SPEC.md section 3), with CFG
in one batched call; a DOODL iteration in "invert" or "checkpoint" mode runs the chain once without
a graph (2 per step) and rebuilds it with one (2 per step), "naive" only with one (SPEC.md
sections 5 and 10). One call on a batch is one evaluation for each item in it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
from torch import Tensor


@dataclass
class Cost:
    """An item's spend: ``evals_graph`` noise-model calls that kept a graph, ``evals_plain`` that did
    not, ``wall_s`` seconds (its share of its batches' wall time)."""

    evals_graph: int = 0
    evals_plain: int = 0
    wall_s: float = 0.0

    @property
    def evals(self) -> int:
        return self.evals_graph + self.evals_plain

    def add(self, other: "Cost") -> "Cost":
        self.evals_graph += other.evals_graph
        self.evals_plain += other.evals_plain
        self.wall_s += other.wall_s
        return self

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "Cost":
        d = d or {}
        return cls(int(d.get("evals_graph", 0)), int(d.get("evals_plain", 0)), float(d.get("wall_s", 0.0)))


class EvalCounter:
    """Counts the calls of noise models it wraps: with a graph (grad enabled and the input needs a
    gradient) or without; ``share(n)`` is one item's cost of the batch of ``n`` since the last reset."""

    def __init__(self) -> None:
        self.graph = self.plain = 0
        self._t0 = time.perf_counter()

    def wrap(self, fn: Callable[[Tensor, Any], Tensor]) -> Callable[[Tensor, Any], Tensor]:
        def counted(latents: Tensor, t: Any) -> Tensor:
            if torch.is_grad_enabled() and latents.requires_grad:
                self.graph += 1
            else:
                self.plain += 1
            return fn(latents, t)

        return counted

    def reset(self) -> None:
        self.graph = self.plain = 0
        self._t0 = time.perf_counter()

    def share(self, n: int) -> Cost:
        """Each of ``n`` items' cost since the last reset: every call, and 1/n of the wall time."""
        return Cost(self.graph, self.plain, (time.perf_counter() - self._t0) / max(1, n))
