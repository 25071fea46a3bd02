"""The end of a comparison (rank 0): every pair judged, the summary written (``doodl.eval``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from doodl.eval.judges import Judge
from doodl.eval.registry import check_judges
from doodl.eval.scoring import score_records
from doodl.eval.summary import summarize
from doodl.eval.writers import write_report

from .compare import Comparison
from .result import jsonable


def check_before_run(comparison: Comparison, judges: Sequence[Judge], guide: str | None) -> None:
    """Every judge against every item at the chain's image size, and the guide's name, before any
    model runs: one error listing every problem."""
    check_judges(judges)
    names = [j.name for j in judges]
    if guide is not None and guide not in names:
        raise ValueError(f"guide={guide!r} is not a judge's name: the judges are {names}; add the guide as a judge "
                         "(e.g. doodl.eval.judges.LossJudge of the guidance loss, name: guide) or set guide: null")
    c = comparison.ctx.chain
    problems = [m for method in comparison.methods for m in method.check(comparison.ctx)]
    problems += [f"item {it['id']}: {m}" for it in comparison.items for j in judges for m in j.check(it, c.height, c.width)]
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise ValueError("the methods cannot run, or the judges cannot score these items:\n  " + "\n  ".join(problems[:10]) + more)


def judge_and_report(comparison: Comparison, judges: Sequence[Judge], guide: str | None, title: str,
                     batch_size: int = 64, note: str | None = None, n_boot: int = 2000) -> dict[str, Any]:
    """Score every pair, summarize per (method, group) with intervals and gaps, write the report
    under the comparison's folder; returns {"rows", "records", "paths"}."""
    methods = [m.name for m in comparison.methods]
    records = comparison.records()
    for r in records:  # the cost of a method is part of its row: evaluations and seconds per item
        r["cost"] = {k: float(v) for k, v in (r.get("cost") or {}).items()}
    scored, sets = score_records(records, judges, batch_size)
    rows = summarize(scored, judges, guide, sets=sets, methods=methods, n_boot=n_boot)
    paths = write_report(comparison.output, scored, rows, judges, guide, methods, title=title, note=note)
    out = Path(comparison.output) / "summary.json"
    out.write_text(json.dumps(jsonable({"title": title, "methods": methods, "guide": guide,
                                        "judges": [j.name for j in judges], "rows": rows}), indent=1) + "\n")
    paths["summary.json"] = out
    return {"rows": rows, "records": scored, "paths": paths}
