"""Budgets: what a method may spend per item, in plain samples (one unguided EDICT chain).

One plain sample costs 2 (T - s) noise-model evaluations (T steps, start step s; SPEC.md section
3). A DOODL iteration costs 4 (T - s) in "invert" / "checkpoint" mode (the chain without a graph,
then rebuilt with one) and 2 (T - s) in "naive" (with a graph only), so 2 or 1 samples; a seed of
a seed search costs 1. Evaluations with a graph cost more wall time than plain ones: methods
report both kinds and their seconds (``doodl.run.cost.Cost``), budgets count evaluations.
"""

from __future__ import annotations

import math

from .context import RunContext


def evals_per_sample(ctx: RunContext) -> int:
    """Noise-model evaluations of one plain EDICT sample: 2 (T - s)."""
    return 2 * ctx.steps_run


def samples_per_iteration(grad_mode: str) -> int:
    """Plain samples one DOODL iteration costs in ``grad_mode``."""
    return 1 if grad_mode == "naive" else 2


def check_budget(budget: float | None, what: str) -> None:
    if budget is not None and not (isinstance(budget, (int, float)) and math.isfinite(budget) and budget > 0):
        raise ValueError(f"{what}: budget must be a number of plain samples > 0 (or null: no budget), got {budget!r}")


def iterations_within(budget: float | None, grad_mode: str, iterations: int, spent: float = 0.0,
                      what: str = "DOODL") -> int:
    """DOODL iterations that fit ``budget`` plain samples after ``spent`` (at most ``iterations``);
    a budget too small for one iteration is an error naming the smallest that is not."""
    if budget is None:
        return iterations
    per = samples_per_iteration(grad_mode)
    k = int((budget - spent) // per)
    if k < 1:
        raise ValueError(f"{what}: a budget of {budget:g} plain samples per item leaves no room for one DOODL "
                         f"iteration ({per} samples in grad_mode {grad_mode!r}"
                         + (f", after {spent:g} spent on the seed search" if spent else "")
                         + f"): give budget >= {spent + per:g}")
    return min(iterations, k)


def seeds_within(budget: float | None, n: int, what: str = "SeedSearch") -> int:
    """Seeds of a seed search that fit ``budget`` plain samples (at most ``n``; at least one)."""
    if budget is None:
        return n
    if budget < 1:
        raise ValueError(f"{what}: a budget of {budget:g} plain samples cannot pay for one seed: give budget >= 1")
    return min(n, int(budget))
