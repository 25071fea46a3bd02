"""Which iterate is an item's result, when an item stops (by loss, or by the guidance loss's score
in its direction, "max" or "min"), and what its outcome is."""

from __future__ import annotations

import math

from typing import Sequence

from torch import nn

SCORE_DIRECTIONS = ("max", "min")
BEST_BY = ("loss", "score")
STATUSES = ("done", "stopped_early", "unfinished", "failed")


def resolve_direction(guidance: nn.Module, given: str | None, needed: bool) -> str | None:
    """The score direction: the one given, else the loss's own; a clash, or none where early
    stopping or ``best_by: score`` needs one, is an error."""
    own = getattr(guidance, "score_direction", None)
    if given is not None and given not in SCORE_DIRECTIONS:
        raise ValueError(f"score_direction must be 'max', 'min' or None (the loss's own), got {given!r}")
    if given is not None and own is not None and given != own:
        raise ValueError(f"score_direction={given!r} but {type(guidance).__name__}'s score improves toward {own!r}: "
                         "drop model.score_direction (the loss knows its own)")
    direction = given or own
    if direction is None and needed:
        raise ValueError(f"{type(guidance).__name__}'s score has no better direction (e.g. an aesthetic target), so "
                         "target_score and best_by='score' cannot use it: set model.score_direction or drop them")
    return direction


def rank(loss: float, score: float, best_by: str, direction: str | None) -> float:
    """What the best iterate minimizes: the loss, or the score signed by its direction."""
    if best_by == "loss":
        return float(loss)
    return -float(score) if direction == "max" else float(score)


def reached(score: float, target: float | None, direction: str | None) -> bool:
    """True once a finite ``score`` reaches ``target`` from its better side (never without a target)."""
    if target is None or not math.isfinite(score):
        return False
    return score >= target if direction == "max" else score <= target


def outcome(has_result: bool, stopped_early: bool, iterations: int, planned: int) -> str:
    """An item's status: "failed" (no finite iterate: no result, no image), "stopped_early" (its
    score reached target_score), "done" (all ``planned`` iterations ran) or "unfinished" (the run
    ended before, e.g. at trainer.max_time; its best iterate so far is its result)."""
    if not has_result:
        return "failed"
    if stopped_early:
        return "stopped_early"
    return "done" if iterations >= planned else "unfinished"


def summary(outcomes: Sequence[tuple[str, str | None]]) -> str:
    """``doodl: 7 items: 6 done, 1 failed (non-finite loss at every iteration)`` from (status, failure) pairs."""
    counts = {s: sum(x == s for x, _ in outcomes) for s in STATUSES}
    parts = [f"{n} {s.replace('_', ' ')}" for s, n in counts.items() if n]
    reasons = sorted({f for s, f in outcomes if s == "failed" and f})
    if counts["failed"] and reasons:
        parts[-1] += f" ({'; '.join(reasons)})"
    return f"doodl: {len(outcomes)} items: {', '.join(parts) or 'none ran'}"
