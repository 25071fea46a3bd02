"""Prompt datasets: a prompt file (or a list of prompts) times seeds, as a list of items.

An item is a plain dict ``{"id", "row", "prompt", "seed", ...}``; every other column of the
row (target_class, reference_images, weight, target_score, image, ...) is passed through. The
whole file is validated before anything runs: every bad row is reported as ``file:line: problem``
in one ``ValueError``, and every image a row names must decode. Columns that neither doodl nor
the guidance loss reads, and repeated rows, are found by ``doodl.app.item_checks``.

Formats:
    .txt    one prompt a line; blank lines and lines starting with '#' are skipped.
    .jsonl  one JSON object a line with at least "prompt".
    .csv    a header row with a "prompt" column; "seeds" and "reference_images" are ';'-separated.

    datasets  a Hugging Face dataset: 'hf:owner/name', a dataset folder (save_to_disk, or .parquet /
            .json / .arrow files), a .parquet or .arrow file; column names mapped to doodl's fields
            ('?prompt=Prompt'), split and row limit: ``doodl.app.prompt_datasets``.

Seeds: a row's "seed" (int) or "seeds" (list of ints), else the DataModule's ``seeds``.
Paths ("reference_images", "image") are resolved relative to the prompt file's folder.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from .prompt_datasets import is_dataset_source, read_dataset_rows


SUPPORTED = (".txt", ".jsonl", ".csv")
RESERVED = ("row",)  # set by doodl, never read from the file
MAX_SEED = 2**32  # seeds lie in [0, 2**32), as numpy's; a typo like 1e12 is caught here
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def slug(text: str) -> str:
    """Lowercase ASCII letters and digits joined by '-': a filesystem-safe piece of an id."""
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s or "prompt"


def item_id(row: int, prompt: str, seed: int, base: str | None = None) -> str:
    """``{row:05d}-{slug(prompt)[:40]}-s{seed}``, or ``{base}-s{seed}`` when the row names its own id."""
    if base is not None:
        return f"{base}-s{seed}"
    return f"{row:05d}-{slug(prompt)[:40].strip('-') or 'prompt'}-s{seed}"


# ---- validation of one row's fields ---------------------------------------------------------
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_seed(v: Any, name: str) -> str | None:
    if not _is_int(v):
        return f"{name} must be an int, got {v!r}"
    if not 0 <= v < MAX_SEED:
        return f"{name} must lie in [0, 2**32), got {v}"
    return None


_TYPED = ("seed", "seeds", "target_class", "weight", "target_score", "reference_images", "image", "id")


def _csv_cell(key: str, text: str) -> Any:
    """A CSV cell as the value a JSON row would hold: typed columns parsed (left as text if they do not
    parse, so the check reports them), empty typed cells dropped by the caller, other columns as text."""
    if key not in _TYPED:
        return text
    text = text.strip()
    if key in ("seed", "target_class"):
        try:
            return int(text)
        except ValueError:
            return text
    if key in ("weight", "target_score"):
        try:
            return float(text)
        except ValueError:
            return text
    if key == "seeds":
        parts = [p.strip() for p in text.split(";")]
        return [int(p) if re.fullmatch(r"[+-]?\d+", p) else p for p in parts]
    if key == "reference_images":
        return [p.strip() for p in text.split(";") if p.strip()]
    return text


def image_problem(path: Path, what: str) -> str | None:
    """Why ``path`` is not a usable image (missing, or does not decode), or None: the whole file is
    decoded (PIL ``load``), so a truncated file is caught here and not at its item's first step."""
    from PIL import Image

    if not path.is_file():
        return f"{what} {path} {'is a directory' if path.is_dir() else 'does not exist'}"
    try:
        with Image.open(path) as im:
            im.load()
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, EOFError, ... for broken files
        return f"{what} {path} does not decode ({type(err).__name__}: {err})"
    return None


def _check_row(raw: dict[str, Any], base_dir: Path, default_seeds: Sequence[int]) -> tuple[dict, list[int], list[str]]:
    """Validate one row; return (fields to keep, its seeds, problems)."""
    problems: list[str] = []
    row = dict(raw)
    for key in RESERVED:
        if key in row:
            problems.append(f"column {key!r} is reserved (doodl sets it to the line number): rename it")
    prompt = row.get("prompt")
    if prompt is None:
        problems.append("missing 'prompt'")
    elif not isinstance(prompt, str):
        problems.append(f"'prompt' must be a string, got {type(prompt).__name__}")
    elif not prompt.strip():
        problems.append("empty 'prompt'")

    seeds: list[int] = list(default_seeds)
    if "seed" in row and "seeds" in row:
        problems.append("give 'seed' or 'seeds', not both")
    elif "seed" in row:
        p = _check_seed(row["seed"], "'seed'")
        if p:
            problems.append(p)
        seeds = [row["seed"]]
    elif "seeds" in row:
        v = row.pop("seeds")
        if not isinstance(v, list) or not v:
            problems.append(f"'seeds' must be a non-empty list of ints, got {v!r}")
        else:
            bad = [p for p in (_check_seed(s, "each of 'seeds'") for s in v) if p]
            problems.extend(bad[:1])
            if not bad and len(set(v)) != len(v):
                problems.append(f"'seeds' repeats a seed: {v}")
            seeds = v
    row.pop("seed", None)

    if "target_class" in row:
        v = row["target_class"]
        if not _is_int(v) or v < 0:
            problems.append(f"'target_class' must be an int >= 0, got {v!r}")
    for key in ("weight", "target_score"):
        if key in row:
            v = row[key]
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)):
                problems.append(f"{key!r} must be a finite number, got {v!r}")
            elif key == "weight" and v < 0:
                problems.append(f"'weight' must be >= 0, got {v!r}: it multiplies a loss DOODL minimizes, so a negative "
                                "weight would steer away from the target while the stop and best-iterate rules still "
                                "seek a better score")
            else:
                row[key] = float(v)
    if "reference_images" in row:
        v = row["reference_images"]
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not v or not all(isinstance(p, str) and p for p in v):
            problems.append(f"'reference_images' must be a non-empty list of paths, got {v!r}")
        else:
            resolved = [base_dir / p for p in v]
            problems += [p for p in (image_problem(r, "reference image") for r in resolved) if p]
            row["reference_images"] = [str(p) for p in resolved]
    if "image" in row:
        v = row["image"]
        if not isinstance(v, str) or not v:
            problems.append(f"'image' must be a path, got {v!r}")
        else:
            p = base_dir / v
            problem = image_problem(p, "image")
            if problem:
                problems.append(problem)
            row["image"] = str(p)
    if "id" in row:
        v = row.pop("id")
        if not isinstance(v, str) or not _ID_RE.match(v):
            problems.append(f"'id' must be letters, digits, '.', '_' or '-' (filesystem-safe), got {v!r}")
        else:
            row["_id_base"] = v
    return row, seeds, problems


# ---- readers: (line number, raw row dict) or (line number, problem) -----------------------------
def _lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file (a BOM is dropped; only \\n, \\r\\n and \\r end a line)."""
    with path.open(encoding="utf-8-sig") as f:
        return [line.rstrip("\r\n") for line in f]


def _txt_rows(path: Path) -> Iterator[tuple[int, dict | str]]:
    for n, line in enumerate(_lines(path), start=1):
        text = line.strip()
        if text and not text.startswith("#"):
            yield n, {"prompt": text}


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict | str]]:
    for n, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            yield n, f"invalid JSON ({e.msg} at column {e.colno})"
            continue
        yield n, obj if isinstance(obj, dict) else f"expected a JSON object, got {type(obj).__name__}"


def _csv_rows(path: Path) -> Iterator[tuple[int, dict | str]]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header: list[str] | None = None
        last = 0
        for fields in reader:
            start, last = last + 1, reader.line_num
            if not fields:
                continue  # blank line
            if header is None:
                header = [h.strip() for h in fields]
                dup = sorted({h for h in header if header.count(h) > 1})
                if "prompt" not in header or dup or "" in header:
                    problem = f"duplicate columns {dup}" if dup else "an empty column name" if "" in header else (
                        f"the header row has no 'prompt' column (columns: {header})")
                    yield start, f"bad header: {problem}"
                    return
                continue
            if len(fields) != len(header):
                yield start, (f"row has {len(fields)} fields but the header has {len(header)} "
                              "(quote fields that contain commas)")
                continue
            yield start, {h: _csv_cell(h, v) for h, v in zip(header, fields) if h not in _TYPED or v.strip()}


_READERS = {".txt": _txt_rows, ".jsonl": _jsonl_rows, ".csv": _csv_rows}


def _check_seeds_arg(seeds: Sequence[int]) -> list[int]:
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or not seeds:
        raise ValueError(f"seeds must be a non-empty list of ints, got {seeds!r}")
    for s in seeds:
        p = _check_seed(s, "each seed")
        if p:
            raise ValueError(f"seeds: {p}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds repeats a seed: {list(seeds)}")
    return list(seeds)


def _expand(rows: list[tuple[int, dict, list[int]]], where: str) -> list[dict]:
    """Rows times their seeds, in row order; ids unique or a ValueError naming both rows."""
    items: list[dict] = []
    seen: dict[str, int] = {}
    clashes: list[str] = []
    for n, row, seeds in rows:
        base = row.pop("_id_base", None)
        for seed in seeds:
            iid = item_id(n, row["prompt"], seed, base)
            if iid in seen:
                clashes.append(f"{where}:{n}: id {iid!r} is also the id of the item from line {seen[iid]}: "
                               "give each row its own 'id' or seed")
                continue
            seen[iid] = n
            items.append({"id": iid, "row": n, "prompt": row["prompt"], "seed": seed,
                          **{k: v for k, v in row.items() if k != "prompt"}})
    if clashes:
        raise ValueError("duplicate item ids:\n" + "\n".join(clashes))
    return items


def read_items(path: str | Path, seeds: Sequence[int] = (0,), columns: Mapping[str, str] | None = None,
               split: str | None = None, rows: int | None = None) -> list[dict]:
    """Read and validate a prompt file or a Hugging Face dataset (``doodl.app.prompt_datasets``: a
    folder, a .parquet / .arrow file, or 'hf:owner/name'); its items, prompts times seeds, in row order.
    ``columns`` (doodl field -> dataset column), ``split`` and ``rows`` are for datasets only."""
    seeds = _check_seeds_arg(seeds)
    if is_dataset_source(path):
        where, base_dir, raw_rows = read_dataset_rows(path, columns, split, rows)
        return _validated(raw_rows, where, base_dir, seeds)
    given = [k for k, v in (("columns", columns), ("split", split), ("rows", rows)) if v]
    if given:
        raise ValueError(f"{', '.join(given)} apply to Hugging Face datasets sources, not to the prompt file {path}: "
                         f"drop them, or give a dataset ('hf:owner/name', a dataset folder, .parquet or .arrow)")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"prompt file {path} is a directory: give a .txt, .jsonl or .csv file, or a Hugging Face "
                         f"dataset folder (written by save_to_disk, or holding .parquet / .json / .arrow / .csv files)")
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} does not exist: give an existing .txt, .jsonl or .csv file, "
                                f"or a Hugging Face dataset ('hf:owner/name', a dataset folder, .parquet or .arrow)")
    ext = path.suffix.lower()
    if ext not in _READERS:
        raise ValueError(f"{path}: unknown prompt file extension {path.suffix!r}: use one of {', '.join(SUPPORTED)}, "
                         f"or a Hugging Face dataset (a dataset folder, .parquet, .arrow, or hf:{path} for a json file)")
    try:
        return _validated(_READERS[ext](path), str(path), path.parent, seeds)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}): save the file as UTF-8") from e


def _validated(raw_rows: Iterable[tuple[int, dict | str]], where: str, base_dir: Path, seeds: list[int]) -> list[dict]:
    """Every row checked (``_check_row``), all problems in one ValueError as ``where:row: problem``; the items."""
    rows, problems = [], []
    for n, raw in raw_rows:
        if isinstance(raw, str):
            problems.append(f"{where}:{n}: {raw}")
            continue
        row, row_seeds, row_problems = _check_row(raw, base_dir, seeds)
        problems += [f"{where}:{n}: {p}" for p in row_problems]
        if not row_problems:
            rows.append((n, row, row_seeds))
    if problems:
        raise ValueError(f"{where}: {len(problems)} bad row(s), fix them and run again:\n" + "\n".join(problems))
    if not rows:
        raise ValueError(f"{where}: no prompts found (the file is empty or holds only comments/headers)")
    return _expand(rows, where)


def items_from_prompts(prompts: Sequence[str], seeds: Sequence[int] = (0,)) -> list[dict]:
    """Items from a list of prompts (row k+1 for prompts[k]) times seeds."""
    seeds = _check_seeds_arg(seeds)
    if isinstance(prompts, str) or not isinstance(prompts, Sequence) or not prompts:
        raise ValueError(f"prompts must be a non-empty list of strings, got {prompts!r}")
    bad = [f"prompts[{k}]: must be a non-empty string, got {p!r}" for k, p in enumerate(prompts)
           if not isinstance(p, str) or not p.strip()]
    if bad:
        raise ValueError("bad prompts:\n" + "\n".join(bad))
    return _expand([(k + 1, {"prompt": p}, seeds) for k, p in enumerate(prompts)], "prompts")


def shard(items: Sequence[Any], rank: int, world_size: int) -> list[Any]:
    """The items of one rank: strided (``items[rank::world_size]``), each item on exactly one rank, no padding."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    return list(items[rank::world_size])
