"""Items checked against the run before it starts: repeated rows, columns nothing reads, and what
the guidance loss needs of each item (``GuidanceLoss.check_item``).

    duplicate_rows(items, source)                 rows that would run the very same item twice
    unknown_columns(items, source, guidance)      one message per column neither doodl nor the loss reads
    check_items(items, guidance, source, strict)  the loss's problems with every item, in one ValueError

A row is named ``file:line`` (``prompts[k]`` for a list of prompts). Repeated rows and unknown
columns are warnings (``ItemWarning``); with ``strict`` they are errors, listed with the rest.
"""

from __future__ import annotations

import difflib
import json
import warnings
from typing import Any, Iterable, Mapping, Sequence

CORE_KEYS = ("prompt", "seed", "seeds", "id", "image", "weight")  # the columns doodl itself reads
SET_BY_DOODL = ("id", "row")  # on every item, never from a column ("id" replaces the row's own)
LOSS_KEYS = ("target_class", "reference_images", "target_score")  # read by doodl's losses, when not fixed
Items = Sequence[Mapping[str, Any]]


class ItemWarning(UserWarning):
    """A prompt file row that runs, but maybe not as meant (``--data.strict true`` makes it an error)."""


def where(source: str | None, row: int) -> str:
    """``file:line`` of a row (``prompts[k]`` for the k-th of a list of prompts: ``source`` None)."""
    return f"prompts[{row - 1}]" if source is None else f"{source}:{row}"


def _lines(source: str | None, rows: Iterable[int]) -> str:
    """``file:2, 5, 9`` (ten lines at most, then how many more)."""
    rows = sorted(set(rows))
    more = f" and {len(rows) - 10} more" if len(rows) > 10 else ""
    if source is None:
        return ", ".join(where(None, r) for r in rows[:10]) + more
    return f"{source}:" + ", ".join(str(r) for r in rows[:10]) + more


def duplicate_rows(items: Items, source: str | None) -> list[str]:
    """``file:line: ...`` for each row whose items are those of an earlier line: the same prompt,
    seed and every other field (only the id differs), so the same optimization would run twice."""
    first: dict[str, int] = {}
    problems: dict[int, str] = {}
    for item in items:
        key = json.dumps({k: v for k, v in item.items() if k not in SET_BY_DOODL}, sort_keys=True, default=str)
        row = first.setdefault(key, item["row"])
        if row != item["row"] and item["row"] not in problems:
            problems[item["row"]] = (f"{where(source, item['row'])}: the same prompt, seed {item['seed']} and fields "
                                     f"as {where(source, row)}: it would run twice; remove one of the rows")
    return list(problems.values())


def known_keys(guidance: Any) -> tuple[str, ...]:
    """The item keys this run reads: doodl's own and the guidance loss's ``item_keys``."""
    return tuple(dict.fromkeys((*CORE_KEYS, *getattr(guidance, "item_keys", ()))))


def _column_problem(column: str, guidance: Any) -> str:
    name, loss_keys = type(guidance).__name__, tuple(getattr(guidance, "item_keys", ()))
    reads = f"{name} reads {', '.join(repr(k) for k in loss_keys)}" if loss_keys else f"{name} reads no column"
    if column in LOSS_KEYS:
        fix = f"this run's guidance loss does not read it ({reads}; a value fixed on the loss replaces the column)"
    else:
        close = difflib.get_close_matches(column, known_keys(guidance) + LOSS_KEYS, n=1, cutoff=0.6)
        fix = f"did you mean {close[0]!r}?" if close else f"doodl reads {', '.join(CORE_KEYS)}; {reads}"
    return f"column {column!r} is read by neither doodl nor the guidance loss, so it has no effect: {fix}"


def unknown_columns(items: Items, source: str | None, guidance: Any) -> dict[str, list[int]]:
    """Each column that neither doodl nor ``guidance`` reads -> the rows that give it."""
    known = set(known_keys(guidance)) | set(SET_BY_DOODL)
    rows: dict[str, list[int]] = {}
    for item in items:
        for key in item:
            if key not in known and item["row"] not in rows.setdefault(key, []):
                rows[key].append(item["row"])
    return rows


def report(problems: list[str], strict: bool, what: str) -> None:
    """Warn each problem (``ItemWarning``), or with ``strict`` raise them all in one ValueError."""
    if problems and strict:
        raise ValueError(f"{len(problems)} {what} (--data.strict is on), fix them and run again:\n" + "\n".join(problems))
    for p in problems:
        warnings.warn(f"{p} (--data.strict true makes this an error)", ItemWarning, stacklevel=3)


def check_items(items: Items, guidance: Any, source: str | None = None, strict: bool = False) -> None:
    """Check every item against the guidance loss before the run starts.

    Raises one ValueError listing every item the loss cannot run (``file:line: problem``; for a
    .txt file, whose rows give only prompts, one message with the fix), plus with ``strict`` every
    row with a column nothing reads; without ``strict`` those columns are warned, one per column.
    """
    check = getattr(guidance, "check_item", None)
    problems: dict[int, list[str]] = {}
    for item in items:
        for p in (check(item) if check is not None else []):
            if p not in problems.setdefault(item["row"], []):
                problems[item["row"]].append(p)
    lines = [f"{where(source, row)}: {p}" for row, ps in problems.items() for p in ps]
    if lines and source is not None and source.lower().endswith(".txt"):
        keys = [k for k in getattr(guidance, "item_keys", ()) if k not in CORE_KEYS]
        needed = ", ".join(repr(k) for k in keys) or "more than a prompt"
        fix = (f"use a .jsonl or .csv prompt file with a {keys[0]!r} column, or set a fixed one on the loss "
               f"(model.guidance.init_args.{keys[0]})") if keys else "use a .jsonl or .csv prompt file"
        first = next(p for ps in problems.values() for p in ps)
        raise ValueError(f"{source}: a .txt prompt file gives each item only a prompt, but the guidance loss "
                         f"{type(guidance).__name__} needs {needed} ({first}): {fix}")
    columns = unknown_columns(items, source, guidance)
    if strict:
        lines += [f"{where(source, row)}: {_column_problem(col, guidance)}" for col, rows in columns.items() for row in rows]
    if lines:
        raise ValueError(f"{len(lines)} problem(s) with the items for the guidance loss {type(guidance).__name__}, "
                         "fix them and run again:\n" + "\n".join(lines))
    report([f"{_lines(source, rows)}: {_column_problem(col, guidance)}" for col, rows in columns.items()], False, "")
