"""Local path first, then the Hugging Face cache, then (when allowed) the hub: one place for all of it.

    hf_offline()                          HF_HUB_OFFLINE, read now (not at import)
    resolve_folder(value, what, help)     a local folder, or a hub repo 'owner/name' -> its local snapshot
    resolve_file(value, what, help)       a local file, or 'owner/name/path/in/repo' -> its local copy
    snapshot(repo_id, ...)                the cache first; the hub only when downloads are allowed
    cached_file(repo_id, names)           a file already in the cache, without any network call

Downloads are allowed unless ``HF_HUB_OFFLINE`` is set or the caller passes ``local_files_only=True``;
``local_files_only=None`` follows the environment. Every miss is a FileNotFoundError that names what
is missing and both ways to supply it (download it once while online, or pass a local path).
Models, guidance losses and prompt datasets all resolve through here. Imports nothing of doodl.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

TRUE_VALUES = {"1", "on", "yes", "true"}
REPO_TYPES = ("model", "dataset")


def hf_offline() -> bool:
    """True when HF_HUB_OFFLINE is set, read now (not at import) from the environment or huggingface_hub."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in TRUE_VALUES:
        return True
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover
        return False
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def downloads_off(local_files_only: bool | None) -> bool:
    """``local_files_only`` when given, else ``hf_offline()``."""
    return hf_offline() if local_files_only is None else bool(local_files_only)


def looks_like_path(text: str) -> bool:
    """Whether ``text`` reads as a path rather than a hub id 'owner/name' (absolute, ./ ~ \\, or not one '/')."""
    return os.path.isabs(text) or text.startswith((".", "~")) or text.count("/") != 1 or "\\" in text


def check_hub_id(repo_id: str, kind: str = "folder") -> None:
    """FileNotFoundError unless ``repo_id`` is a valid hub id (``kind``: what a local path would have been)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise FileNotFoundError(f"{repo_id!r} is neither an existing {kind} nor a valid hub id 'owner/name'") from err


def _download_command(repo_id: str, repo_type: str) -> str:
    return f"hf download {repo_id}" + ("" if repo_type == "model" else f" --repo-type {repo_type}")


def offline_miss(what: str, repo_id: str, where: Any, help: str, repo_type: str = "model",
                 local: str = "folder") -> FileNotFoundError:
    """The error for a hub repo that is not cached while downloads are off."""
    return FileNotFoundError(
        f"{what} {repo_id!r} is not in the local Hugging Face cache ({where}) and downloads are off "
        f"(HF_HUB_OFFLINE=1 or local_files_only=True). Download it once on a machine with network "
        f"(`{_download_command(repo_id, repo_type)}`), or pass the path of a local {local} instead: {help}"
    )


def _fetch(fn, repo_id: str, what: str, help: str, local_files_only: bool | None, cache_dir: Any,
           repo_type: str, local: str = "folder", **kwargs: Any) -> Path:
    """``fn`` (snapshot_download / hf_hub_download) from the cache, else from the hub when allowed."""
    from huggingface_hub import constants

    if repo_type not in REPO_TYPES:
        raise ValueError(f"repo_type must be one of {', '.join(REPO_TYPES)}, got {repo_type!r}")
    kwargs = dict(cache_dir=cache_dir, repo_type=repo_type, **kwargs)
    try:
        return Path(fn(repo_id, local_files_only=True, **kwargs))
    except Exception as err:  # huggingface_hub raises several kinds for "not in the cache"
        cached_error = err
    if downloads_off(local_files_only):
        raise offline_miss(what, repo_id, cache_dir or constants.HF_HUB_CACHE, help, repo_type, local) from cached_error
    try:
        return Path(fn(repo_id, local_files_only=False, etag_timeout=10, **kwargs))
    except Exception as err:
        raise FileNotFoundError(
            f"could not download {what} {repo_id!r} ({type(err).__name__}: {err}); without network, pass the "
            f"path of a local {local} instead ({help}), or set HF_HUB_OFFLINE=1 to use only the cache"
        ) from err


def snapshot(repo_id: str, what: str, help: str, local_files_only: bool | None = None, cache_dir: Any = None,
             revision: str | None = None, allow_patterns: Sequence[str] | None = None,
             repo_type: str = "model") -> Path:
    """Local snapshot folder of hub repo ``repo_id`` (only the files of ``allow_patterns`` when given)."""
    from huggingface_hub import snapshot_download

    check_hub_id(repo_id)
    patterns = None if allow_patterns is None else list(allow_patterns)
    return _fetch(snapshot_download, repo_id, what, help, local_files_only, cache_dir, repo_type,
                  revision=revision, allow_patterns=patterns)


def cached_file(repo_id: str, names: Sequence[str], cache_dir: Any = None, repo_type: str = "model") -> str | None:
    """The cached path of the first of ``names`` in hub repo ``repo_id``, or None; never a network call."""
    from huggingface_hub import try_to_load_from_cache

    for name in names:
        found = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir, repo_type=repo_type)
        if isinstance(found, str):
            return found
    return None


def resolve_folder(value: str | os.PathLike, what: str, help: str, file_hint: str | None = None,
                   local_files_only: bool | None = None, cache_dir: Any = None, revision: str | None = None,
                   allow_patterns: Sequence[str] | None = None, repo_type: str = "model") -> Path:
    """A local folder (returned as it is), or a hub id 'owner/name' resolved to its local snapshot.

    ``what`` names the thing in errors ("pipeline folder"), ``help`` says what a valid folder holds,
    ``file_hint`` what to do when ``value`` is a file. Raises at once, without a network call, when
    nothing local is found and downloads are off.
    """
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise ValueError(f"{what} must be a folder path or a hub id 'owner/name', got {value!r}")
    path = Path(value).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{path} is a file: {file_hint or f'{what} must be a folder ({help})'}")
    text = str(value)
    if isinstance(value, os.PathLike) or looks_like_path(text):
        raise FileNotFoundError(f"{what} {path} does not exist: pass an existing folder ({help}) or a hub id 'owner/name'")
    kind = "hub dataset" if repo_type == "dataset" else "hub model"
    return snapshot(text, kind, help, local_files_only, cache_dir, revision, allow_patterns, repo_type)


def resolve_file(value: str | os.PathLike, what: str, help: str, local_files_only: bool | None = None,
                 cache_dir: Any = None, revision: str | None = None) -> Path:
    """A local file, or 'owner/name/path/in/repo' (a file of a hub model repo) resolved to its local copy."""
    from huggingface_hub import hf_hub_download

    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise ValueError(f"{what} must be a file path or 'owner/name/file' on the hub, got {value!r}")
    path = Path(value).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise ValueError(f"{what} {path} is a directory: pass the file itself ({help})")
    text = str(value)
    parts = text.split("/")
    if isinstance(value, os.PathLike) or os.path.isabs(text) or text.startswith((".", "~")) or "\\" in text or len(parts) < 3:
        raise FileNotFoundError(f"{what} {path} does not exist: pass an existing file ({help}) or 'owner/name/file' on the hub")
    repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:])
    check_hub_id(repo_id, "file")
    return _fetch(hf_hub_download, repo_id, f"{what} {filename!r} of hub repo", help, local_files_only, cache_dir,
                  "model", "file", filename=filename, revision=revision)
