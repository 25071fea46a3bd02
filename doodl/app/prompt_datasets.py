"""Prompt sets from Hugging Face ``datasets``: a hub id, or a local parquet / json / arrow folder or file.

A source is named by the prompt ``path`` (so ``--data.path`` takes it as it takes a prompt file):

    hf:nateraw/parti-prompts?split=train&prompt=Prompt     a hub dataset (the cache when offline)
    /data/drawbench?prompt=Prompts&rows=50                  a folder written by Dataset.save_to_disk,
                                                            or a folder of .parquet / .json(l) / .arrow / .csv files
    /data/prompts.parquet   /data/prompts.arrow             one data file (hf:/data/prompts.json for .json)

Options after '?', '&'-separated: ``split`` (needed when the dataset has several), ``rows`` (read
only the first rows), ``name`` (the dataset's configuration), and ``<field>=<column>`` for each
doodl field read from a differently named column (PartiPrompts' ``Prompt``, DrawBench's
``Prompts`` -> ``prompt``; any other field alike: ``target_class=label``). Read are the mapped
columns and those already named as a doodl field (``FIELDS``); other columns (PartiPrompts'
``Category``, ``Note`` ...) are not, unless mapped (``Category=Category`` keeps one as it is,
passed through to the item). The same options can be
given as arguments (``read_dataset_rows(path, columns=, split=, rows=)``). Arrow nulls are absent
values. ``datasets`` is imported only here, when such a source is read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping
from urllib.parse import parse_qsl

PREFIX = "hf:"
FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".json": "json", ".jsonl": "json", ".csv": "csv"}
AUTO_SUFFIXES = (".parquet", ".arrow")  # read through datasets without the hf: prefix
OPTIONS = ("split", "rows", "name")
FIELDS = ("prompt", "seed", "seeds", "id", "image", "weight", "target_class", "target_score", "reference_images")
_SAVED = (("dataset_info.json", "state.json"), ("dataset_dict.json",))  # what save_to_disk writes
_LOCAL_HELP = "a folder written by Dataset.save_to_disk, or a folder or file of .parquet / .json / .arrow / .csv data"
_HELP = ("a hub dataset id 'hf:owner/name', a folder written by Dataset.save_to_disk, or a folder or file of "
         ".parquet / .json / .arrow / .csv data")


@dataclass
class DatasetSource:
    """Where a prompt set comes from and how its columns map to doodl's fields."""

    location: str  # hub id or local path
    hub: bool
    columns: dict[str, str] = field(default_factory=dict)  # doodl field -> dataset column
    split: str | None = None
    rows: int | None = None
    name: str | None = None

    def label(self) -> str:
        """How rows are named in errors: ``hf:owner/name[split]`` or the local path."""
        where = PREFIX + self.location if self.hub else self.location
        return f"{where}[{self.split}]" if self.split else where


def _strip_query(text: str) -> tuple[str, str]:
    """(location, query): a '?' starts the options unless the whole text is an existing path."""
    if "?" not in text or Path(text.removeprefix(PREFIX)).expanduser().exists():
        return text, ""
    location, _, query = text.partition("?")
    return location, query


def is_dataset_source(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a ``datasets`` source rather than a .txt / .jsonl / .csv prompt file."""
    text = os.fspath(path)
    location, query = _strip_query(text)
    if location.startswith(PREFIX) or query:
        return True
    p = Path(location).expanduser()
    return is_dataset_folder(p) or p.suffix.lower() in AUTO_SUFFIXES


def is_dataset_folder(path: Path) -> bool:
    """A folder written by ``save_to_disk``, or one holding data files that datasets reads."""
    if not path.is_dir():
        return False
    if any(all((path / f).is_file() for f in files) for files in _SAVED):
        return True
    return any(p.suffix.lower() in FILE_BUILDERS and p.is_file() for p in path.rglob("*"))


def parse_source(path: str | os.PathLike, columns: Mapping[str, str] | None = None, split: str | None = None,
                 rows: int | None = None) -> DatasetSource:
    """The source ``path`` names, its '?' options and the keyword ones merged (giving one both ways is an error)."""
    text = os.fspath(path)
    location, query = _strip_query(text)
    found: dict[str, Any] = {"columns": {}}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)):
        if not value:
            raise ValueError(f"{text}: option {key!r} has no value: write {key}=<value>")
        target = found if key in OPTIONS else found["columns"]
        if key in target:
            raise ValueError(f"{text}: option {key!r} is given twice")
        target[key] = value
    if "rows" in found:
        if not found["rows"].isdigit() or int(found["rows"]) < 1:
            raise ValueError(f"{text}: rows must be an integer >= 1, got {found['rows']!r}")
        found["rows"] = int(found["rows"])
    for key, value in (("columns", dict(columns or {})), ("split", split), ("rows", rows)):
        if value in (None, {}):
            continue
        if found.get(key) not in (None, {}):
            raise ValueError(f"{text}: {key} is given both in the path and as an argument: give it once")
        found[key] = value
    for doodl_field, column in found["columns"].items():
        if not isinstance(doodl_field, str) or not isinstance(column, str) or not doodl_field or not column:
            raise ValueError(f"columns must map doodl field names to column names (strings), got {doodl_field!r}: {column!r}")
    if found.get("rows") is not None and (isinstance(found["rows"], bool) or not isinstance(found["rows"], int)
                                          or found["rows"] < 1):
        raise ValueError(f"rows must be an integer >= 1 or None, got {found['rows']!r}")
    hub = location.startswith(PREFIX)
    location = location.removeprefix(PREFIX)
    if hub and (Path(location).expanduser().exists() or location.startswith((".", "/", "~"))):
        hub = False  # hf:<local path>: a local file or folder read by datasets
    if not location:
        raise ValueError(f"{text}: no dataset named: give {_HELP}")
    return DatasetSource(location, hub, found["columns"], found.get("split"), found.get("rows"), found.get("name"))


def _offline_error(source: DatasetSource) -> FileNotFoundError:
    import datasets
    from huggingface_hub import constants

    from ..hub import offline_miss

    where = f"{constants.HF_HUB_CACHE}, nor in datasets' cache {datasets.config.HF_DATASETS_CACHE}"
    return offline_miss("hub dataset", source.location, where, _LOCAL_HELP, "dataset")


def _load(source: DatasetSource) -> Any:
    """The Dataset or DatasetDict of ``source`` (no split chosen yet)."""
    import datasets

    from ..hub import hf_offline, snapshot

    if source.hub:
        if hf_offline():  # a snapshot in the hub cache (`hf download --repo-type dataset`) reads as a local folder
            try:
                folder = snapshot(source.location, "hub dataset", _LOCAL_HELP, local_files_only=True, repo_type="dataset")
            except FileNotFoundError:
                folder = None
            if folder is not None:
                return _local(datasets, folder, source)
        try:  # online; offline: datasets' own cache of a dataset it prepared before
            return datasets.load_dataset(source.location, source.name)
        except Exception as err:  # datasets raises ConnectionError, DatasetNotFoundError, FileNotFoundError ...
            if hf_offline() or isinstance(err, ConnectionError):
                raise _offline_error(source) from err
            raise FileNotFoundError(f"could not load hub dataset {source.location!r} ({type(err).__name__}: {err}); "
                                    f"give {_HELP}") from err
    path = Path(source.location).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"dataset {path} does not exist: give {_HELP}")
    return _local(datasets, path, source)


def _local(datasets: Any, path: Path, source: DatasetSource) -> Any:
    """A local folder (save_to_disk's, or of data files) or data file, through datasets."""
    try:
        if path.is_dir() and any(all((path / f).is_file() for f in files) for files in _SAVED):
            if source.name:
                raise ValueError(f"{path}: name={source.name!r} is set but a save_to_disk folder has no configurations")
            return datasets.load_from_disk(str(path))
        if path.is_dir():
            return datasets.load_dataset(str(path), source.name)
        builder = FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(f"{path}: datasets reads {', '.join(FILE_BUILDERS)} files here, not {path.suffix!r}")
        return datasets.load_dataset(builder, data_files=str(path))
    except (ValueError, FileNotFoundError):
        raise
    except Exception as err:  # an unreadable file: pyarrow / json errors, an empty folder (EmptyDatasetError), ...
        raise ValueError(f"datasets could not read {path} ({type(err).__name__}: {err}); give {_HELP}") from err


def _pick_split(data: Any, source: DatasetSource) -> Any:
    import datasets

    if isinstance(data, datasets.DatasetDict):
        splits = list(data)
        if source.split is None:
            if len(splits) != 1:
                raise ValueError(f"{source.label()}: the dataset has splits {', '.join(splits)}: choose one with "
                                 f"split=<name> (?split=... in the path)")
            source.split = splits[0]
        elif source.split not in data:
            raise ValueError(f"{source.label()}: no split {source.split!r}; the dataset's splits: {', '.join(splits)}")
        return data[source.split]
    if source.split is not None and getattr(data, "split", None) not in (None, source.split):
        raise ValueError(f"{source.label()}: no split {source.split!r}: this dataset is the single split "
                         f"{data.split!r}; drop split")
    return data


def check_columns(dataset: Any, source: DatasetSource) -> dict[str, str]:
    """Column -> doodl field of every column read: the mapped columns, and those already named as a
    doodl field that no mapping replaces. A ValueError naming the dataset's columns for a missing one."""
    columns = list(dataset.column_names)
    if len(set(source.columns.values())) != len(source.columns):
        raise ValueError(f"{source.label()}: two doodl fields read the same column: {source.columns}")
    missing = [f"{column!r} (for {f!r})" for f, column in source.columns.items() if column not in columns]
    if missing:
        raise ValueError(f"{source.label()}: no column {', '.join(missing)}; the dataset's columns: "
                         f"{', '.join(columns)}: map each doodl field to one of them (?prompt=<column> in the path)")
    mapping = {c: c for c in columns if c in FIELDS and c not in source.columns}
    mapping.update({column: f for f, column in source.columns.items()})
    if "prompt" not in mapping.values():
        raise ValueError(f"{source.label()}: no 'prompt' column; the dataset's columns: {', '.join(columns)}: map one, "
                         f"e.g. ?prompt={columns[0] if columns else 'Prompt'} in the path (columns={{'prompt': ...}})")
    for column in mapping:
        kind = type(dataset.features[column]).__name__
        if kind in ("Image", "Audio", "Video", "Pdf"):
            raise ValueError(f"{source.label()}: column {column!r} holds {kind} data; doodl reads text, numbers and "
                             f"image paths from a prompt set: map only such columns")
    return mapping


def read_dataset_rows(path: str | os.PathLike, columns: Mapping[str, str] | None = None, split: str | None = None,
                      rows: int | None = None) -> tuple[str, Path, Iterator[tuple[int, dict]]]:
    """(label for errors, folder that relative paths start from, rows as (row number from 1, fields))."""
    source = parse_source(path, columns, split, rows)
    dataset = _pick_split(_load(source), source)
    mapping = check_columns(dataset, source)
    if source.rows is not None:
        dataset = dataset.select(range(min(source.rows, len(dataset))))
    dataset = dataset.select_columns(list(mapping))
    local = Path(source.location).expanduser()
    base_dir = Path.cwd() if source.hub else (local if local.is_dir() else local.parent)

    def generate() -> Iterator[tuple[int, dict]]:
        for n, record in enumerate(dataset, start=1):
            yield n, {mapping[c]: v for c, v in record.items() if v is not None}

    return source.label(), base_dir, generate()


def absolute_source(value: str, folder: Path) -> str:
    """``value`` with a relative local location made absolute against ``folder`` (a config file's):
    hub ids and the '?' options are kept as they are."""
    location, query = _strip_query(value)
    prefix = PREFIX if location.startswith(PREFIX) else ""
    rest = location.removeprefix(PREFIX)
    if prefix and not (rest.startswith((".", "~")) or (folder / rest).exists()):
        return value  # a hub id
    if Path(rest).expanduser().is_absolute():
        return value
    return prefix + os.path.normpath(os.path.abspath(folder / rest)) + (f"?{query}" if query else "")
