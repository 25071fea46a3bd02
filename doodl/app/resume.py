"""Resuming with ``--ckpt_path``: the run's model settings against the checkpoint's.

Lightning's CLI replaces the model settings by the checkpoint's ``hyper_parameters``, so an
option given on resume would be silently ignored. doodl keeps the run's own settings instead and
refuses any that differs from the checkpoint's, except those a resumed run honours.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

HONOURED = ("iterations",)  # more (or fewer) iterations: the items go on (or stop) at the new count
NOT_IN_FIT = ("predict_method", "eval_dir")  # read by predict / test only


def read_hparams(ckpt_path: str | Path) -> dict[str, Any]:
    """The checkpoint's saved model settings (``{}`` if it has none); a bad file is named."""
    import torch

    path = Path(ckpt_path)
    if path.is_dir():
        raise IsADirectoryError(f"--ckpt_path {path} is a directory: give a checkpoint file such as .../checkpoints/last.ckpt")
    if not path.is_file():
        raise FileNotFoundError(f"--ckpt_path {path} does not exist")
    try:
        ckpt = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # torch raises several kinds for a truncated or foreign file
        raise ValueError(f"--ckpt_path {path} is not a readable checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(ckpt, Mapping):
        raise ValueError(f"--ckpt_path {path} is not a Lightning checkpoint (it holds a {type(ckpt).__name__})")
    hparams = dict(ckpt.get("hyper_parameters") or {})
    hparams.pop("_instantiator", None)
    return hparams


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; ``init_args`` levels are kept as they are."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def differences(saved: Mapping[str, Any], now: Mapping[str, Any], subcommand: str = "fit") -> list[tuple[str, Any, Any]]:
    """``(setting, checkpoint's value, this run's value)`` for every model setting the run may not change.

    Settings only one side has (a checkpoint from an older doodl) are not compared."""
    skip = set(HONOURED) | (set(NOT_IN_FIT) if subcommand == "fit" else set())
    a, b = flatten(saved), flatten(now)
    return [(k, a[k], b[k]) for k in sorted(a.keys() & b.keys())
            if k.split(".")[0] not in skip and not _same(a[k], b[k])]


# the update's settings were the module's own before the update became an injected factory
LEGACY_UPDATE = ("grad_scale", "clip_grad_val", "momentum", "perturb", "tied", "renormalize")
PAPER_UPDATE = "doodl.core.update.DOODLOptimizer"


def legacy_update_differences(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """A checkpoint from before ``model.update`` kept the paper's update settings as model keys:
    compare them with this run's ``update`` (the paper's, with its published settings, when unset)."""
    old = {k: saved[k] for k in LEGACY_UPDATE if k in saved}
    if not old or "update" in saved:
        return []
    update = now.get("update") or {}
    cls = update.get("class_path", PAPER_UPDATE) if isinstance(update, Mapping) else str(update)
    if cls != PAPER_UPDATE:
        return [("update", f"{PAPER_UPDATE} (the paper's; this checkpoint predates injected updates)", cls)]
    from doodl.core.update import DOODLOptimizer

    import inspect

    args = {k: p.default for k, p in inspect.signature(DOODLOptimizer).parameters.items()}
    args.update({k: v for k, v in DOODLOptimizer.DEFAULTS.items()})
    args.update({k: v for k, v in (update.get("init_args") or {}).items() if v is not None})
    return [(f"update.init_args.{k}", v, args.get(k)) for k, v in old.items() if not _same(v, args.get(k))]


def _same(x: Any, y: Any) -> bool:
    if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
        return len(x) == len(y) and all(_same(p, q) for p, q in zip(x, y))
    if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool) and not isinstance(y, bool):
        return float(x) == float(y)
    return x == y


def check_resume(ckpt_path: str | Path, model_config: Mapping[str, Any], subcommand: str = "fit") -> None:
    """Refuse, naming each setting with both values and the fix, a run whose model settings differ
    from the checkpoint's (other than ``HONOURED``)."""
    saved = read_hparams(ckpt_path)
    if not saved:
        return
    diff = differences(saved, model_config, subcommand) + legacy_update_differences(saved, model_config)
    if diff:
        lines = "\n".join(f"  model.{k}: checkpoint {a!r}, this run {b!r}" for k, a, b in diff)
        raise ValueError(
            f"--ckpt_path {ckpt_path}: {len(diff)} setting(s) differ from the checkpoint's:\n{lines}\n"
            "a resumed run continues the checkpoint's items with its settings: drop these options (or give the "
            "checkpoint's values) to resume, or start a new run without --ckpt_path (only model.iterations may change)")
