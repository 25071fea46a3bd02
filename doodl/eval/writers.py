"""Files of a comparison: summary.md (markdown table), summary.csv, scores.csv and scores.jsonl (one
row per (item, method): every judge's value and the cost) and summary.png (``doodl.eval.plot``).
Every file lists rows in (given method order, group, id) order, so it does not depend on the order
the records arrived in; floats are written in full (repr) in the CSV and JSONL files."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from .judges import Judge
from .scoring import COST_KEYS, STATUSES
from .summary import gap_judges, method_order, ordered

SCALARS = (str, int, float, bool, type(None))


def _num(v: float | None, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if pct:
        return f"{100 * v:.1f}"
    if v != 0 and abs(v) < 1e-3:
        return f"{v:.3e}"
    return f"{v:.4f}" if abs(v) < 100 else f"{v:.1f}"


def cell(entry: Mapping[str, Any], pct: bool = False) -> str:
    """'value [lo, hi]' (a percentage for accuracies), 'value ± std' for KID, 'value' without an interval."""
    text = _num(entry["value"], pct)
    if entry.get("std") is not None and entry.get("ci") == "± std over subsets":
        return f"{text} ± {_num(entry['std'])}"
    if entry.get("ci95") is not None and text != "n/a":
        lo, hi = entry["ci95"]
        return f"{text} [{_num(lo, pct)}, {_num(hi, pct)}]"
    return text


def _group(group: str | None) -> str:
    return "(none)" if group is None else group


def markdown(rows: Sequence[Mapping[str, Any]], judges: Sequence[Judge], guide: str | None,
             title: str = "doodl compare", note: str | None = None) -> str:
    """The summary table with its title, the judges' descriptions and how to read the intervals."""
    compared = gap_judges(judges, guide)
    arrow = {"max": "higher is better", "min": "lower is better"}
    lines = [f"# {title}", ""]
    if note:
        lines += [note, ""]
    lines.append("Judges:")
    for j in judges:
        role = " (the guide)" if j.name == guide else ""
        unit = ", in %" if j.kind == "accuracy" else ""
        lines.append(f"- `{j.name}`{role}: {j.description} ({j.kind}{unit}, {arrow[j.direction]})")
    lines += ["", "95% intervals: Wilson for accuracies, percentile bootstrap over items for means, paired "
              "bootstrap over items for the gaps; KID is mean ± std over its subsets; FID has no interval. "
              "Failed items (no image) count as wrong for accuracy judges and are left out of mean judges "
              "(the `failed` column counts them; a mean's n is in summary.csv)."]
    if compared:
        lines.append(f"Adversarial gap = `{guide}` minus the judge, item by item (points for accuracies); "
                     f"a large gap means the images fool the guide more than the judge.")
    lines.append("Cost: mean per item (failed items included) of noise-model evaluations with a graph, "
                 "without one, and wall seconds.")
    head = ["method", "group", "n", "failed", "stopped early", "unfinished"]
    head += [f"{j.name}{' %' if j.kind == 'accuracy' else ''}" for j in judges]
    head += [f"gap {guide}−{j.name}{' pts' if j.kind == 'accuracy' else ''}" for j in compared]
    head += ["evals graph", "evals plain", "wall s"]
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = []
    for r in rows:
        vals = [r["method"], _group(r["group"]), str(r["n"]), str(r["failed"]),
                str(r["statuses"]["stopped_early"]), str(r["statuses"]["unfinished"])]
        for j in judges:
            entry = r["judges"][j.name]
            vals.append(cell(entry, j.kind == "accuracy"))
            if entry.get("note"):
                notes.append(f"- {r['method']} / {_group(r['group'])} / `{j.name}`: {entry['note']}")
        vals += [cell(r["gaps"][j.name], j.kind == "accuracy") for j in compared]
        vals += [f"{r['cost']['evals_graph']:.1f}", f"{r['cost']['evals_plain']:.1f}", f"{r['cost']['wall_s']:.3g}"]
        lines.append("| " + " | ".join(vals) + " |")
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines) + "\n"


def summary_table(rows: Sequence[Mapping[str, Any]], judges: Sequence[Judge], guide: str | None) -> list[dict]:
    """The summary as flat rows (the columns of summary.csv)."""
    out = []
    for r in rows:
        flat: dict[str, Any] = {"method": r["method"], "group": r["group"], "n": r["n"], "failed": r["failed"]}
        flat.update({f"n_{s}": r["statuses"][s] for s in STATUSES})
        for j in judges:
            e = r["judges"][j.name]
            lo, hi = e["ci95"] if e.get("ci95") is not None else (None, None)
            flat.update({j.name: e["value"], f"{j.name}_lo": lo, f"{j.name}_hi": hi, f"{j.name}_ci": e.get("ci"),
                         f"{j.name}_n": e.get("n", e.get("n_fake"))})
        for name, e in r["gaps"].items():
            flat.update({f"gap_{name}": e["value"], f"gap_{name}_lo": e["ci95"][0], f"gap_{name}_hi": e["ci95"][1],
                         f"gap_{name}_n": e["n"]})
        flat.update({f"mean_{k}": r["cost"][k] for k in COST_KEYS})
        out.append(flat)
    return out


def json_safe(item: Mapping[str, Any]) -> dict[str, Any]:
    """The item's plain values (str, numbers, bools, None and lists of them); others (a generator,
    tensors) are left out."""
    out = {}
    for k, v in item.items():
        if isinstance(v, SCALARS) or (isinstance(v, (list, tuple)) and all(isinstance(x, SCALARS) for x in v)):
            out[k] = list(v) if isinstance(v, tuple) else v
    return out


def item_rows(records: Sequence[Mapping[str, Any]], judges: Sequence[Judge],
              methods: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per (item, method): id, method, group, status, every per-item judge's value (None
    when failed), the cost, and the item's plain fields."""
    order = method_order(records, methods)
    names = [j.name for j in judges if not j.set_level]
    return [{"id": r["id"], "method": r["method"], "group": r["group"], "status": r["status"],
             "scores": {n: r["scores"][n] for n in names}, "cost": {k: r["cost"][k] for k in COST_KEYS},
             "item": json_safe(r["item"])} for r in ordered(records, order)]


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows([{k: "" if v is None else v for k, v in row.items()} for row in rows])


def write_report(out_dir: str | Path, records: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]],
                 judges: Sequence[Judge], guide: str | None, methods: Sequence[str] | None = None,
                 title: str = "doodl compare", note: str | None = None) -> dict[str, Path]:
    """Write summary.md, summary.csv, scores.csv, scores.jsonl and summary.png under ``out_dir``;
    returns their paths by name."""
    from .plot import draw_summary

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in ("summary.md", "summary.csv", "scores.csv", "scores.jsonl", "summary.png")}
    paths["summary.md"].write_text(markdown(rows, judges, guide, title, note))
    _write_csv(paths["summary.csv"], summary_table(rows, judges, guide))
    items = item_rows(records, judges, methods)
    flat = []
    for row in items:
        extra = {f"item_{k}": v for k, v in row["item"].items() if k not in ("id", "group") and isinstance(v, SCALARS)}
        flat.append({k: row[k] for k in ("id", "method", "group", "status")} | row["scores"] | row["cost"] | extra)
    _write_csv(paths["scores.csv"], flat)
    with open(paths["scores.jsonl"], "w") as f:
        for row in items:
            f.write(json.dumps(row, allow_nan=True) + "\n")
    draw_summary(rows, judges, guide, paths["summary.png"], method_order(records, methods))
    return paths
