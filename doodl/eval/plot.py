"""The summary's chart (PIL; matplotlib is not a dependency): one panel per judge and per gap, a bar
per method within each group, its 95% interval (KID: ± std) as a whisker; n/a values draw no bar."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from .judges import Judge

PALETTE = ((150, 150, 150), (66, 133, 244), (219, 68, 55), (60, 170, 90), (244, 180, 0), (140, 80, 200),
           (0, 170, 190), (230, 120, 30))
PANEL_W, PANEL_H, PAD, BAR, GAP = 340, 240, 40, 14, 4


def _panels(rows: Sequence[Mapping[str, Any]], judges: Sequence[Judge], guide: str | None) -> list[tuple[str, str, bool]]:
    out = [(j.name, f"{j.name} ({'higher' if j.direction == 'max' else 'lower'} is better)", False) for j in judges]
    gaps = list(rows[0]["gaps"]) if rows else []
    return out + [(name, f"gap {guide} - {name}", True) for name in gaps]


def _range(values: list[tuple[float, list[float] | None]]) -> tuple[float, float]:
    nums = [0.0]
    for v, ci in values:
        nums += [x for x in ([v] + list(ci or [])) if x is not None and math.isfinite(x)]
    lo, hi = min(nums), max(nums)
    if hi - lo < 1e-12:
        hi = lo + 1.0
    span = hi - lo
    return lo - 0.05 * span * (lo < 0), hi + 0.1 * span


def draw_legend(pen: Any, names: Sequence[str], colour: Mapping[str, Any], spacing: int = 24) -> None:
    """A row of colour swatches and names along the top of a ``PIL.ImageDraw`` canvas (from x = 10, y = 8);
    each name advances ``spacing`` plus ~7 px per character."""
    x = 10
    for name in names:
        pen.rectangle([x, 8, x + 12, 20], fill=colour[name])
        pen.text((x + 16, 8), name, fill="black")
        x += spacing + 7 * len(name)


def draw_summary(rows: Sequence[Mapping[str, Any]], judges: Sequence[Judge], guide: str | None, path: str | Path,
                 methods: Sequence[str]) -> None:
    """Write the chart of ``rows`` (``summarize``) to ``path`` (PNG)."""
    from PIL import Image, ImageDraw

    panels = _panels(rows, judges, guide)
    groups = list(dict.fromkeys(r["group"] for r in rows))
    colour = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(methods)}
    group_w = len(methods) * (BAR + GAP) + 16
    pw = max(PANEL_W, 50 + len(groups) * group_w)
    cols = min(3, max(1, len(panels)))
    n_rows = max(1, math.ceil(len(panels) / cols))
    img = Image.new("RGB", (cols * pw, n_rows * PANEL_H + 30), "white")
    pen = ImageDraw.Draw(img)
    draw_legend(pen, methods, colour)
    at = {(r["method"], r["group"]): r for r in rows}
    for p, (name, title, is_gap) in enumerate(panels):
        ox, oy = (p % cols) * pw, 30 + (p // cols) * PANEL_H
        vals = []
        for g in groups:
            for m in methods:
                r = at.get((m, g))
                e = None if r is None else (r["gaps"] if is_gap else r["judges"])[name]
                vals.append((g, m, e))
        lo, hi = _range([(e["value"], e.get("ci95")) for _, _, e in vals if e is not None])
        y_of = lambda v: oy + PANEL_H - PAD - (v - lo) / (hi - lo) * (PANEL_H - 2 * PAD)  # noqa: E731
        pen.text((ox + 10, oy + 4), title, fill="black")
        pen.line([ox + 40, y_of(0.0), ox + pw - 10, y_of(0.0)], fill="black")
        pen.text((ox + 2, y_of(hi) - 5), f"{hi:.3g}", fill="gray")
        pen.text((ox + 2, y_of(lo) - 5), f"{lo:.3g}", fill="gray")
        for k, (g, m, e) in enumerate(vals):
            g_idx, m_idx = divmod(k, len(methods))
            bx = ox + 50 + g_idx * group_w + m_idx * (BAR + GAP)
            if m_idx == 0:
                pen.text((bx, oy + PANEL_H - PAD + 6), "(none)" if g is None else str(g), fill="black")
            if e is None or not math.isfinite(e["value"]):
                continue
            top, bottom = sorted((y_of(e["value"]), y_of(0.0)))
            pen.rectangle([bx, top, bx + BAR, bottom], fill=colour[m])
            ci = e.get("ci95")
            if ci is not None and all(c is not None and math.isfinite(c) for c in ci):
                cx = bx + BAR // 2
                pen.line([cx, y_of(ci[0]), cx, y_of(ci[1])], fill="black")
                for c in ci:
                    pen.line([cx - 4, y_of(c), cx + 4, y_of(c)], fill="black")
    img.save(path)
