"""One drawing helper for the run's labelled image sheets: ``grid.png`` and ``contact_sheet.png``.

Cells are laid out ``columns`` to a row, each image enlarged (nearest neighbour, so every pixel
stays a pixel block) to the cell size and captioned below; rows and columns may carry labels.
A cell without an image (a failed item) is drawn grey and marked "failed".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from PIL import Image, ImageDraw

PAD = 2  # pixels around and between cells
LINE_H = 12  # pixels per caption line (PIL's default font is 10 px high)
HEAD_H = 16  # pixels of the column labels
FAILED_FILL = (160, 160, 160)


@dataclass
class Cell:
    """One image of a sheet (None: no result) and its caption lines."""

    image: Image.Image | None
    caption: list[str] = field(default_factory=list)


def enlargement(width: int, height: int, at_least: int) -> int:
    """The integer factor that brings the shorter side of a (width, height) image to ``at_least`` pixels or more."""
    return max(1, math.ceil(at_least / max(1, min(width, height))))


def fit(pen: ImageDraw.ImageDraw, text: str, width: int, keep_end: bool = False) -> str:
    """``text``, cut with "..." to at most ``width`` pixels in the default font (its start kept, or
    its end with ``keep_end``: an item id's distinct part, the prompt's last words and the seed)."""
    if pen.textlength(text) <= width:
        return text
    if keep_end:
        while text and pen.textlength("..." + text) > width:
            text = text[1:]
        return "..." + text
    while text and pen.textlength(text + "...") > width:
        text = text[:-1]
    return text + "..."


def draw_sheet(cells: Sequence[Cell], columns: int, size: tuple[int, int], caption_lines: int = 1,
               row_labels: Sequence[str] | None = None, column_labels: Sequence[str] | None = None,
               label_width: int = 250, keep_end: Sequence[int] = ()) -> Image.Image:
    """The sheet of ``cells`` (row-major, ``columns`` per row), each image resized to ``size``
    (width, height) and followed by ``caption_lines`` lines of text; ``row_labels`` go in a left
    margin of ``label_width`` pixels, ``column_labels`` above the first row; the caption lines whose
    index is in ``keep_end`` are cut from the left when too long."""
    w, h = size
    rows = math.ceil(len(cells) / columns)
    left = label_width if row_labels is not None else 0
    top = HEAD_H if column_labels is not None else 0
    cell_h = h + caption_lines * LINE_H
    sheet = Image.new("RGB", (left + PAD + columns * (w + PAD), top + PAD + rows * (cell_h + PAD)), "white")
    pen = ImageDraw.Draw(sheet)
    for j, name in enumerate(column_labels or []):
        pen.text((left + PAD + j * (w + PAD) + 2, 2), fit(pen, name, w - 2), fill="black")
    for i, label in enumerate(row_labels or []):
        pen.text((4, top + PAD + i * (cell_h + PAD) + h // 2 - 6), fit(pen, label, label_width - 8), fill="black")
    for k, cell in enumerate(cells):
        r, c = divmod(k, columns)
        x, y = left + PAD + c * (w + PAD), top + PAD + r * (cell_h + PAD)
        if cell.image is None:
            pen.rectangle((x, y, x + w - 1, y + h - 1), fill=FAILED_FILL)
            pen.text((x + 4, y + h // 2 - 6), "failed", fill="black")
        else:
            sheet.paste(cell.image.convert("RGB").resize((w, h), Image.Resampling.NEAREST), (x, y))
        for n, line in enumerate(cell.caption[:caption_lines]):
            pen.text((x + 1, y + h + n * LINE_H), fit(pen, line, w - 2, n in keep_end), fill="black")
    return sheet
