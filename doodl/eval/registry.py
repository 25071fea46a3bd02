"""Judges by name: the registry of judge kinds, look-up of a judge in a list, and the checks of a
list of judges (known kinds, unique names that are not already table columns)."""

from __future__ import annotations

import difflib
import importlib
from typing import Sequence

from .judges import Judge

KINDS = ("accuracy", "mean", "set")
RESERVED = ("id", "method", "group", "status", "n", "failed", "prompt", "evals_graph", "evals_plain", "wall_s")

JUDGES: dict[str, str] = {
    "loss": "doodl.eval.judges.LossJudge",
    "classifier": "doodl.eval.judges.ClassifierJudge",
    "ink_mass": "doodl.eval.judges.InkMass",
    "kid": "doodl.eval.distances.KID",
    "fid": "doodl.eval.distances.FID",
}


def _unknown(what: str, name: str, known: Sequence[str]) -> ValueError:
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
    return ValueError(f"unknown {what} {name!r}{hint}; known: {', '.join(known) or 'none'}")


def judge_class(kind: str) -> type[Judge]:
    """The judge class registered under ``kind`` (``JUDGES``); an unknown kind lists the known ones."""
    if kind not in JUDGES:
        raise _unknown("judge kind", kind, sorted(JUDGES))
    module, _, cls = JUDGES[kind].rpartition(".")
    return getattr(importlib.import_module(module), cls)


def find_judge(judges: Sequence[Judge], name: str) -> Judge:
    """The judge called ``name``; an unknown name lists the judges there are."""
    for judge in judges:
        if judge.name == name:
            return judge
    raise _unknown("judge", name, [j.name for j in judges])


def check_judges(judges: Sequence[Judge]) -> None:
    """Every entry a ``Judge`` with a known kind, names unique."""
    seen: set[str] = set()
    for judge in judges:
        if not isinstance(judge, Judge):
            raise TypeError(f"judges must be doodl.eval.judges.Judge objects, got {type(judge).__name__}")
        if judge.kind not in KINDS:
            raise ValueError(f"judge {judge.name!r} has kind {judge.kind!r}; kinds are {', '.join(KINDS)}")
        if judge.name in RESERVED:
            raise ValueError(f"judge name {judge.name!r} is a column of the tables already; reserved: {', '.join(RESERVED)}")
        if judge.name in seen:
            raise ValueError(f"two judges are named {judge.name!r}: give each judge its own name")
        seen.add(judge.name)
