"""``sheet.png`` of a comparison: a row per item (up to ``max_rows``), a column per method, each cell
captioned with the judges' values; failed pairs are grey cells marked "failed"."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from PIL import Image

from doodl.run.images import to_uint8

from .callbacks.common import write_image
from .callbacks.sheet import Cell, draw_sheet, enlargement


def _caption(scores: Mapping[str, Any]) -> str:
    parts = [f"{k} {v:.2f}" for k, v in scores.items() if isinstance(v, (int, float))]
    return " ".join(parts[:3])


def write_sheet(path: Path, records: Sequence[Mapping[str, Any]], methods: Sequence[str], max_rows: int = 24,
                cell: int = 96) -> Path:
    by_key = {(r["id"], r["method"]): r for r in records}
    ids = list(dict.fromkeys(r["id"] for r in records))[:max_rows]
    cells = []
    size = None
    for item_id in ids:
        for m in methods:
            r = by_key.get((item_id, m))
            image = None
            if r is not None and r.get("image") is not None:
                pixels = to_uint8(r["image"]).permute(1, 2, 0).contiguous().numpy()
                image = Image.fromarray(pixels)
                size = size or image.size
            cells.append(Cell(image, [_caption((r or {}).get("scores") or {})]))
    w, h = size or (cell, cell)
    k = enlargement(w, h, cell)
    prompts = {r["id"]: f"{r['id']}: {r['item'].get('prompt', '')}" for r in records}
    write_image(path, draw_sheet(cells, len(methods), (w * k, h * k), row_labels=[prompts[i] for i in ids],
                                 column_labels=list(methods)))
    return path
