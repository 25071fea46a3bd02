"""The equal-budget study of issue 13 as a plot and a table, from a finished ``doodl compare`` of
``configs/digits_study.yaml``: per group, judge accuracy (95% Wilson interval) against the mean
noise-model evaluations each method spent per item (a Pareto view of the methods).

    doodl compare -c configs/digits_compare.yaml --output outputs/bench-digits   # (make bench-digits)
    doodl compare -c configs/digits_study_tuned.yaml   # seed search and DOODL at budgets 8, 32 (RANK / WORLD_SIZE)
    doodl compare -c configs/digits_study_b128.yaml    # the same at budgets 2, 128 (unseen items only)
    python benchmarks/digits_study.py outputs/bench-digits outputs/digits-study-tuned outputs/digits-study-b128
                                                       # -> benchmarks/results/digits_study.{json,md,png}
    (configs/digits_study.yaml, the first study at the earlier settings, is read alone the same way)

Several folders are read as one study (same items and seeds; a method name in two folders is refused).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "results"
FAMILY = re.compile(r"^(.*?)(?:_b(\d+))?$")  # "doodl_b8" -> ("doodl", 8); "onestep" -> ("onestep", None)
COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75), (127, 127, 127)]


def points(summary: dict[str, Any], judge: str = "judge") -> list[dict[str, Any]]:
    """One point per (method, group): family, budget, evaluations per item, the judge's accuracy and interval, gap."""
    out = []
    for r in summary["rows"]:
        family, budget = FAMILY.match(r["method"]).groups()
        j, gap = r["judges"][judge], r["gaps"].get(judge, {})
        out.append({"method": r["method"], "family": family, "budget": None if budget is None else int(budget),
                    "group": r["group"], "n": r["n"], "evals": r["cost"]["evals_graph"] + r["cost"]["evals_plain"],
                    "wall_s": r["cost"].get("wall_s"), "acc": j["value"], "ci95": j["ci95"],
                    "gap": gap.get("value"), "gap_ci95": gap.get("ci95"),
                    "kid": (r["judges"].get("kid") or {}).get("value")})
    return out


def markdown(pts: list[dict[str, Any]], command: str) -> str:
    lines = ["# Digits: methods at equal budgets", "", f"From `{command}`.", "",
             "Each folder is a `doodl compare` of `configs/digits_compare.yaml`, `digits_study.yaml`, `digits_study_tuned.yaml` or `digits_study_b128.yaml`.", "",
             "| group | method | budget (samples) | evals / item | wall s / item | judge acc % | gap guide−judge pts | KID |",
             "|---|---|---|---|---|---|---|---|"]
    for p in sorted(pts, key=lambda p: (p["group"] or "", p["family"], p["budget"] or 0)):
        ci = p["ci95"]
        gap = "" if p["gap"] is None else f"{100 * p['gap']:.1f}"
        kid = "" if p["kid"] is None else f"{p['kid']:.1f}"
        lines.append(f"| {p['group']} | {p['method']} | {p['budget'] or '-'} | {p['evals']:.0f} | {p['wall_s']:.2f} | "
                     f"{100 * p['acc']:.1f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}] | {gap} | {kid} |")
    return "\n".join(lines) + "\n"


def plot(pts: list[dict[str, Any]], path: Path) -> None:
    """Per group a panel: x = log2 evaluations per item, y = judge accuracy with its interval, lines join a family."""
    import math

    from PIL import Image, ImageDraw

    from doodl.eval.plot import draw_legend

    groups = sorted({p["group"] for p in pts}, key=str)
    families = sorted({p["family"] for p in pts})
    colour = {f: COLOURS[i % len(COLOURS)] for i, f in enumerate(families)}
    W, H, L, B = 460, 340, 50, 40
    img = Image.new("RGB", (W * len(groups), H + 30), "white")
    pen = ImageDraw.Draw(img)
    draw_legend(pen, families, colour, spacing=30)
    lx = [math.log2(max(1.0, p["evals"])) for p in pts]
    x0, x1 = min(lx) - 0.5, max(lx) + 0.5
    for gi, g in enumerate(groups):
        ox, oy = gi * W, 30

        def at(ev: float, acc: float) -> tuple[float, float]:
            return (ox + L + (math.log2(max(1.0, ev)) - x0) / (x1 - x0) * (W - L - 20),
                    oy + H - B - acc * (H - B - 20))

        pen.text((ox + L, oy + 2), f"{g}: judge accuracy vs evaluations per item (log2)", fill="black")
        pen.line([ox + L, oy + H - B, ox + W - 20, oy + H - B], fill="black")
        pen.line([ox + L, oy + 20, ox + L, oy + H - B], fill="black")
        for v in (0.0, 0.5, 1.0):
            y = at(1, v)[1]
            pen.text((ox + 10, y - 6), f"{100 * v:.0f}%", fill="black")
        for f in families:
            mine = sorted((p for p in pts if p["group"] == g and p["family"] == f), key=lambda p: p["evals"])
            xy = [at(p["evals"], p["acc"]) for p in mine]
            if len(xy) > 1:
                pen.line(xy, fill=colour[f], width=2)
            for p, (px, py) in zip(mine, xy):
                lo, hi = at(p["evals"], p["ci95"][0])[1], at(p["evals"], p["ci95"][1])[1]
                pen.line([px, lo, px, hi], fill=colour[f])
                pen.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour[f])
        for ev in sorted({p["evals"] for p in pts if p["group"] == g}):
            px = at(ev, 0)[0]
            pen.line([px, oy + H - B, px, oy + H - B + 4], fill="black")
        k = 1  # powers of two of evaluations, labelled under the axis
        while k <= 2 ** x1:
            if k >= 2 ** x0:
                px = at(k, 0)[0]
                pen.text((px - 3 * len(str(k)), oy + H - B + 8), str(k), fill="black")
            k *= 4
        pen.text((ox + W // 2 - 60, oy + H - B + 22), "noise-model evaluations per item", fill="black")
    img.save(path)


def main(args: list[str] | None = None) -> dict[str, Any]:
    a = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    a.add_argument("folders", type=Path, nargs="+",
                   help="output folders of doodl compare -c configs/digits_study.yaml (and digits_study_tuned.yaml)")
    a.add_argument("--out", type=Path, default=OUT, help="folder of digits_study.{json,md,png}")
    a.add_argument("--judge", default="judge", help="the held-out judge to plot")
    ns = a.parse_args(args)
    pts: list[dict[str, Any]] = []
    for folder in ns.folders:
        if not (folder / "summary.json").is_file():
            raise SystemExit(f"{folder}/summary.json not found: run the doodl compare that writes {folder} first "
                             "(make bench-digits, then make bench-study)")
        mine = points(json.loads((folder / "summary.json").read_text()), ns.judge)
        twice = sorted({p["method"] for p in mine} & {p["method"] for p in pts})
        if twice:
            raise SystemExit(f"{folder}: method(s) {', '.join(twice)} already read from an earlier folder: "
                             "give each study run its own method names")
        pts += mine
    command = "python benchmarks/digits_study.py " + " ".join(map(str, ns.folders))
    ns.out.mkdir(parents=True, exist_ok=True)
    (ns.out / "digits_study.json").write_text(json.dumps({"command": command, "points": pts}, indent=1) + "\n")
    (ns.out / "digits_study.md").write_text(markdown(pts, command))
    plot(pts, ns.out / "digits_study.png")
    return {"points": pts}


if __name__ == "__main__":
    main()
