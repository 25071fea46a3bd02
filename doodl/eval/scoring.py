"""Scoring finished (item, method) records with judges (issue 10).

A record (one per item and method, the runner's contract):
    {"id", "method", "group" (None or a name), "status" ("done" | "stopped_early" | "unfinished" |
     "failed"), "item" (the prompt-set item), "image" ((3, H, W) in [0, 1], None when failed),
     "cost" {"evals_graph", "evals_plain", "wall_s"}}
``score_records`` returns copies with "scores" {judge name: float, None when failed} for the
per-item judges, and one entry per (method, group, set-level judge). Records are put in one
canonical order first (method, group, id) so that batches, and so every value, do not depend on
the order the records arrive in (2 processes give the values of 1).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from .judges import Judge
from .registry import check_judges

STATUSES = ("done", "stopped_early", "unfinished", "failed")
COST_KEYS = ("evals_graph", "evals_plain", "wall_s")


def group_key(group: str | None) -> tuple[bool, str]:
    """Sort key of a group: named groups by name, None last."""
    return (group is None, group or "")


def check_records(records: Sequence[Mapping[str, Any]]) -> None:
    """Each record has the contract's fields, one per (id, method); images (3, H, W) floats in [0, 1]."""
    seen: set[tuple[str, str]] = set()
    for i, r in enumerate(records):
        missing = [k for k in ("id", "method", "group", "status", "item", "image", "cost") if k not in r]
        where = f"record {i} ({r.get('id')!r}, {r.get('method')!r})"
        if missing:
            raise ValueError(f"{where} has no {', '.join(map(repr, missing))}: records come from the runner's to_record()")
        if r["status"] not in STATUSES:
            raise ValueError(f"{where}: status {r['status']!r} is not one of {', '.join(STATUSES)}")
        if (r["id"], r["method"]) in seen:
            raise ValueError(f"{where} appears twice: one record per (item, method)")
        seen.add((r["id"], r["method"]))
        image = r["image"]
        if (image is None) != (r["status"] == "failed"):
            raise ValueError(f"{where}: a failed record has image None and every other record an image "
                             f"(status {r['status']!r}, image {'None' if image is None else 'given'})")
        if image is not None and (not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3
                                  or not image.is_floating_point()):
            raise ValueError(f"{where}: image must be a float (3, H, W) tensor in [0, 1], got "
                             f"{getattr(image, 'shape', type(image).__name__)}")
        if image is not None and not (torch.isfinite(image).all() and image.min() >= 0 and image.max() <= 1):
            raise ValueError(f"{where}: image values must be finite and in [0, 1]")
        bad = [k for k in COST_KEYS if not isinstance(r["cost"].get(k), (int, float))]
        if bad:
            raise ValueError(f"{where}: cost needs numbers {', '.join(bad)}")


def canonical(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Records sorted by (method, group, id): the one order scores are computed in."""
    return sorted(records, key=lambda r: (r["method"], group_key(r["group"]), r["id"]))


def _batches(records: list[Mapping[str, Any]], batch_size: int):
    """Runs of at most ``batch_size`` scored records that share an image size, in order."""
    run: list[Mapping[str, Any]] = []
    for r in records:
        if run and (len(run) == batch_size or run[-1]["image"].shape != r["image"].shape):
            yield run
            run = []
        run.append(r)
    if run:
        yield run


@torch.no_grad()
def score_records(records: Sequence[Mapping[str, Any]], judges: Sequence[Judge],
                  batch_size: int = 64) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every judge over every record's image, in batches of ``batch_size`` (no grad).

    Returns (scored records in canonical order, each a copy with "scores"; set-level results
    [{"method", "group", "judge", "value", ...}] in (method, group, judge) order). A failed record
    (no image) gets None from every judge and is left out of the set-level ones."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    check_judges(judges)
    check_records(records)
    ordered = [dict(r, scores={}) for r in canonical(records)]
    with_image = [r for r in ordered if r["image"] is not None]
    for r in ordered:
        if r["image"] is None:
            r["scores"] = {j.name: None for j in judges if not j.set_level}
    for judge in (j for j in judges if not j.set_level):
        for run in _batches(with_image, batch_size):
            images = torch.stack([r["image"] for r in run]).to(judge.device)
            values = judge.score(images, [r["item"] for r in run])
            if not isinstance(values, Tensor) or values.shape != (len(run),):
                raise ValueError(f"judge {judge.name!r} returned {getattr(values, 'shape', type(values))} for "
                                 f"{len(run)} images: score must give a (B,) tensor")
            for r, v in zip(run, values.tolist()):
                r["scores"][judge.name] = float(v)
    sets: list[dict[str, Any]] = []
    by_set: dict[tuple[str, str | None], list[Tensor]] = defaultdict(list)
    for r in with_image:
        by_set[(r["method"], r["group"])].append(r["image"])
    keys = sorted({(r["method"], r["group"]) for r in ordered}, key=lambda k: (k[0], group_key(k[1])))
    for judge in (j for j in judges if j.set_level):
        for method, group in keys:
            images = by_set.get((method, group))
            if images:
                result = judge.compute(torch.stack(images), group)
            else:
                result = {"value": math.nan, "n_fake": 0, "note": "no images: every item failed"}
            sets.append({"method": method, "group": group, "judge": judge.name, **result})
    return ordered, sets
