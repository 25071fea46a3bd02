"""Relative paths written in a config file are relative to that file's folder, so
``doodl fit -c /abs/path/configs/digits.yaml`` works from any folder; a path given on the command
line stays relative to the working directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import yaml

CONFIG_PATHS = ("data.path", "model.eval_dir")  # the options that name a file or folder of the user's


def _lookup(d: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(d, dict):
            return None
        d = d.get(part)
    return d


def _read_config(text: str) -> dict:
    path = Path(text)
    if not path.is_file():
        return {}  # a YAML string given to -c, or nothing: the parser has already judged it
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return {}


def who_set(argv: Sequence[str]) -> dict[str, Path | None]:
    """For each of ``CONFIG_PATHS`` that ``argv`` sets: the folder of the config file that set it
    last, or None when the command line set it after every config file that did."""
    found: dict[str, Path | None] = {}
    i = 0
    while i < len(argv):
        name, eq, value = str(argv[i]).partition("=")
        if not eq and i + 1 < len(argv) and (name in ("-c", "--config") or name[2:] in CONFIG_PATHS):
            i += 1
            value = str(argv[i])
        if name in ("-c", "--config"):
            conf = _read_config(value)
            for key in CONFIG_PATHS:
                if _lookup(conf, key) is not None:
                    found[key] = Path(value).parent
        elif name.startswith("--") and name[2:] in CONFIG_PATHS:
            found[name[2:]] = None
        i += 1
    return found


def resolve_config_paths(cfg: Any, argv: Sequence[str]) -> None:
    """Make each relative path of ``CONFIG_PATHS`` that came from a config file absolute, against
    that file's folder (in place, on the parsed jsonargparse Namespace ``cfg``)."""
    for key, folder in who_set(argv).items():
        value = cfg.get(key)
        if folder is None or not isinstance(value, (str, os.PathLike)) or Path(value).is_absolute():
            continue
        if key == "data.path" and isinstance(value, str):
            from .prompt_datasets import absolute_source

            cfg[key] = absolute_source(value, folder)  # hub ids and '?' options kept; relative files as below
            continue
        cfg[key] = os.path.normpath(os.path.abspath(folder / value))
