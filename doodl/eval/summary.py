"""The summary of a comparison: one row per (method, group) with every judge's value and 95%
interval, the adversarial gaps, failures and cost (issue 10); writers for it in ``doodl.eval.writers``.

Intervals: Wilson for accuracy judges (per-item values 0/1), percentile bootstrap of the mean for
mean judges, paired percentile bootstrap for the gaps, KID's std over its subsets; FID has none.
Failed items (no image) count as wrong for accuracy judges, and are left out (and counted) for
mean judges; the gap

    gap_j = mean over items of (guide_i - judge_j,i)          (SPEC: the adversarial gap)

is taken for every other per-item judge of the guide's kind and direction, item by item over the
items both scored (for accuracies: all items, failed ones 0 for both). A judge that computes what
the guide computes gives a gap of exactly 0 and the interval [0, 0].
Rows come out in (given method order, group, id) order whatever order the records arrive in.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Mapping, Sequence

import torch

from .judges import Judge
from .registry import check_judges, find_judge
from .scoring import COST_KEYS, STATUSES, group_key
from .stats import bootstrap, paired_bootstrap, wilson


def method_order(records: Sequence[Mapping[str, Any]], methods: Sequence[str] | None) -> list[str]:
    """The given method order (every record's method must be in it); None: the methods sorted by name."""
    present = sorted({r["method"] for r in records})
    if methods is None:
        return present
    methods = list(methods)
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods {methods} name a method twice")
    unknown = [m for m in present if m not in methods]
    if unknown:
        raise ValueError(f"records of method(s) {', '.join(map(repr, unknown))} not in methods {methods}: "
                         "list every method of the records")
    return methods


def ordered(records: Sequence[Mapping[str, Any]], methods: Sequence[str]) -> list[Mapping[str, Any]]:
    """Records sorted by (given method order, group (None last), id)."""
    index = {m: i for i, m in enumerate(methods)}
    return sorted(records, key=lambda r: (index[r["method"]], group_key(r["group"]), r["id"]))


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def per_item_values(records: Sequence[Mapping[str, Any]], judge: Judge) -> list[float | None]:
    """A judge's value of each record: failed records 0 for accuracy judges, None for mean judges."""
    out = []
    for r in records:
        if judge.name not in r.get("scores", {}):
            raise ValueError(f"record ({r['id']!r}, {r['method']!r}) has no score of judge {judge.name!r}: "
                             "score the records with score_records(records, judges) first")
        v = r["scores"][judge.name]
        out.append((0.0 if v is None else v) if judge.kind == "accuracy" else v)
    return out


def judge_entry(values: list[float | None], judge: Judge, n_boot: int, seed: int) -> dict[str, Any]:
    if judge.kind == "accuracy":
        k, n = sum(values), len(values)
        return {"value": k / n if n else math.nan, "ci95": wilson(k, n), "ci": "wilson", "n": n}
    kept = torch.tensor([v for v in values if _finite(v)], dtype=torch.float64)
    value = float(kept.mean()) if len(kept) else math.nan
    return {"value": value, "ci95": bootstrap(kept, n_boot, seed), "ci": "bootstrap", "n": len(kept),
            "excluded": len(values) - len(kept)}


def gap_entry(guide: list[float | None], other: list[float | None], n_boot: int, seed: int) -> dict[str, Any]:
    pairs = [(a, b) for a, b in zip(guide, other) if _finite(a) and _finite(b)]
    a = torch.tensor([p[0] for p in pairs], dtype=torch.float64)
    b = torch.tensor([p[1] for p in pairs], dtype=torch.float64)
    value = float((a - b).mean()) if pairs else math.nan
    return {"value": value, "ci95": paired_bootstrap(a, b, n_boot, seed), "ci": "paired bootstrap", "n": len(pairs)}


def gap_judges(judges: Sequence[Judge], guide: str | None) -> list[Judge]:
    """The judges the guide is compared with: every other per-item judge of its kind and direction
    that reports a gap (``Judge.gap``)."""
    if guide is None:
        return []
    g = find_judge(judges, guide)
    if g.set_level:
        raise ValueError(f"the guide judge {guide!r} is set-level: name a per-item judge as the guide")
    return [j for j in judges if j is not g and not j.set_level and j.kind == g.kind and j.direction == g.direction
            and getattr(j, "gap", True)]


def summarize(records: Sequence[Mapping[str, Any]], judges: Sequence[Judge], guide: str | None = None,
              sets: Sequence[Mapping[str, Any]] = (), methods: Sequence[str] | None = None,
              n_boot: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """Rows per (method, group) of scored records (``score_records``) and its set-level results.

    Each row: {"method", "group", "n", "failed", "statuses" {status: count}, "judges" {name: {"value",
    "ci95", "ci", "n", ...}}, "gaps" {name: {...}} (guide minus that judge), "cost" {key: mean per
    item, failed items included: their cost was spent}}. Bootstraps use ``seed``."""
    check_judges(judges)
    order = method_order(records, methods)
    compared = gap_judges(judges, guide)
    set_of = {(s["method"], s["group"], s["judge"]): s for s in sets}
    cells: dict[tuple[str, str | None], list[Mapping[str, Any]]] = defaultdict(list)
    for r in ordered(records, order):
        cells[(r["method"], r["group"])].append(r)
    rows = []
    for (method, group), rs in cells.items():  # insertion order is the sorted order
        row: dict[str, Any] = {"method": method, "group": group, "n": len(rs),
                               "failed": sum(r["status"] == "failed" for r in rs),
                               "statuses": {s: sum(r["status"] == s for r in rs) for s in STATUSES},
                               "judges": {}, "gaps": {}}
        values = {}
        for judge in judges:
            if judge.set_level:
                found = set_of.get((method, group, judge.name))
                if found is None:
                    raise ValueError(f"no {judge.name!r} result for method {method!r}, group {group!r}: pass the "
                                     "set-level results score_records returned as sets=")
                entry = {k: v for k, v in found.items() if k not in ("method", "group", "judge")}
                std = entry.get("std")
                if std is not None and math.isfinite(entry["value"]):
                    entry.update(ci95=[entry["value"] - std, entry["value"] + std], ci="± std over subsets")
                entry.setdefault("ci95", None)
                entry.setdefault("ci", None)
                row["judges"][judge.name] = entry
                continue
            values[judge.name] = per_item_values(rs, judge)
            row["judges"][judge.name] = judge_entry(values[judge.name], judge, n_boot, seed)
        for judge in compared:
            row["gaps"][judge.name] = gap_entry(values[guide], values[judge.name], n_boot, seed)
        row["cost"] = {k: sum(float(r["cost"][k]) for r in rs) / len(rs) for k in COST_KEYS}
        rows.append(row)
    return rows
