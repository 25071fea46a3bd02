"""Which iterate is an item's result, and when an item stops: by loss, or by the guidance
loss's score in its direction ("max" or "min")."""

from __future__ import annotations

import math

from torch import nn

SCORE_DIRECTIONS = ("max", "min")
BEST_BY = ("loss", "score")


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
