"""Benchmark reports: the markdown table and the bar chart (PIL; matplotlib is not a dependency)."""

from __future__ import annotations

from pathlib import Path

METHODS = ("plain", "onestep", "doodl")


def fmt(entry: dict, pct: bool = False) -> str:
    f = (lambda v: f"{100 * v:.1f}") if pct else (lambda v: f"{v:.3f}")
    return f"{f(entry['value'])} [{f(entry['ci95'][0])}, {f(entry['ci95'][1])}]"


def markdown(results: dict) -> str:
    s = results["settings"]
    lines = [
        "# Digits benchmark: unguided vs one-step guidance vs DOODL",
        "",
        f"`{results['command']}` — {results['timing']['total_s']:.0f} s on {results['machine']['cpus']} CPU threads. "
        f"T={s['num_steps']} EDICT steps, {s['iterations']} DOODL iterations, cfg {s['cfg_scale']}, "
        f"guidance scale {s['guidance_scale']} (one-step {s['onestep_guidance_scale']}), clip_grad_val {s['clip_grad_val']}, "
        f"perturb {s['perturb']}, renormalize {s['renormalize']}, "
        f"crops {s.get('cutouts') or 'none'}" + (f" of {s['min_cut']}-16 px" if s.get("min_cut") else "") + ". 95% CIs: Wilson (accuracies), bootstrap (means, gap). "
        "KID ± std over 100 subsets, on the judge's penultimate features against the real test digits of the group; "
        "the `real` row is real vs real (two halves of the test digits) and the classifiers on real test digits.",
        "",
        "| group | method | n | judge acc % | guide acc % | gap (guide−judge) pts | guide prob | tiny-CLIP | KID | FID |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for group, rows in results["groups"].items():
        for method in (*METHODS, "real"):
            r = rows[method]
            d = r["distance"]
            lines.append(
                f"| {group} | {method} | {r['n']} | {fmt(r['judge_acc'], True)} | {fmt(r['guide_acc'], True)} | "
                f"{fmt(r['gap'], True)} | {fmt(r['guide_prob'])} | {fmt(r['clip'])} | "
                f"{d['kid']:.2f} ± {d['kid_std']:.2f} | {d['fid']:.1f} |")
    return "\n".join(lines) + "\n"


COLOURS = {"plain": (150, 150, 150), "onestep": (66, 133, 244), "doodl": (219, 68, 55), "real": (60, 170, 90)}


def draw_chart(results: dict, path: Path) -> None:
    """Bar chart with PIL (matplotlib is not a dependency): one panel per metric, groups side by side."""
    from PIL import Image, ImageDraw

    panels = [("judge_acc", "judge accuracy", 0.0, 1.0), ("guide_acc", "guide accuracy", 0.0, 1.0),
              ("gap", "adversarial gap (guide - judge)", -0.2, 1.0), ("guide_prob", "guide prob of target", 0.0, 1.0),
              ("clip", "tiny-CLIP score", None, None), ("kid", "KID (judge features), +-std", None, None)]
    methods = (*METHODS, "real")
    pw, ph, pad, bar = 330, 230, 40, 16
    img = Image.new("RGB", (3 * pw, 2 * ph + 30), "white")
    pen = ImageDraw.Draw(img)
    for j, m in enumerate(methods):
        pen.rectangle([10 + 90 * j, 8, 22 + 90 * j, 20], fill=COLOURS[m])
        pen.text((26 + 90 * j, 8), m, fill="black")
    for p, (key, title, lo, hi) in enumerate(panels):
        ox, oy = (p % 3) * pw, 30 + (p // 3) * ph
        vals = []
        for group in results["groups"]:
            for m in methods:
                r = results["groups"][group][m]
                if key == "kid":
                    v, s = r["distance"]["kid"], r["distance"]["kid_std"]
                    vals.append((group, m, v, [v - s, v + s]))
                else:
                    vals.append((group, m, r[key]["value"], r[key]["ci95"]))
        if lo is None:
            lo = min(0.0, min(c[0] for *_, c in vals))
            hi = max(c[1] for *_, c in vals) * 1.1 or 1.0
        y_of = lambda v: oy + ph - pad - (v - lo) / (hi - lo) * (ph - 2 * pad)  # noqa: E731
        pen.text((ox + 10, oy + 4), title, fill="black")
        pen.line([ox + 30, y_of(0.0), ox + pw - 10, y_of(0.0)], fill="black")
        pen.text((ox + 2, y_of(hi) - 5), f"{hi:.2g}", fill="gray")
        pen.text((ox + 2, y_of(lo) - 5), f"{lo:.2g}", fill="gray")
        for k, (group, m, v, ci) in enumerate(vals):
            g_idx, m_idx = divmod(k, len(methods))
            x = ox + 45 + g_idx * 140 + m_idx * (bar + 6)
            pen.rectangle([x, min(y_of(v), y_of(0.0)), x + bar, max(y_of(v), y_of(0.0))], fill=COLOURS[m])
            cx = x + bar // 2
            pen.line([cx, y_of(ci[0]), cx, y_of(ci[1])], fill="black", width=1)
            for c in ci:
                pen.line([cx - 4, y_of(c), cx + 4, y_of(c)], fill="black")
            if m_idx == 0:
                pen.text((x, oy + ph - pad + 6), group, fill="black")
    img.save(path)
