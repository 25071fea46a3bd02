"""A W&B Table of a comparison: one row per item, the methods' images side by side, each followed
by its judges' values and status (issue 10). wandb is imported only when a table is built."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from torch import Tensor

from .scoring import group_key


def to_uint8(image: Tensor):
    """(3, H, W) in [0, 1] -> (H, W, 3) uint8 numpy array (the image is already 8-bit: exact)."""
    return (image.detach().float().cpu().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def wandb_table(records: Sequence[Mapping[str, Any]], methods: Sequence[str], judges: Sequence[str] | None = None):
    """``wandb.Table`` with columns id, group, prompt, then per method: its image (None when failed
    or missing), "<method>/status" and "<method>/<judge>" for each judge in ``judges`` (default:
    every score the records carry). Rows in (group, id) order."""
    import wandb

    methods = list(methods)
    unknown = sorted({r["method"] for r in records} - set(methods))
    if unknown:
        raise ValueError(f"records of method(s) {', '.join(map(repr, unknown))} not in methods {methods}")
    if judges is None:
        judges = list(dict.fromkeys(name for r in records for name in r.get("scores", {})))
    by_item: dict[str, dict[str, Mapping[str, Any]]] = {}
    for r in records:
        by_item.setdefault(r["id"], {})[r["method"]] = r
    columns = ["id", "group", "prompt"]
    for m in methods:
        columns += [m, f"{m}/status", *(f"{m}/{j}" for j in judges)]
    table = wandb.Table(columns=columns)
    first = {i: next(iter(rs.values())) for i, rs in by_item.items()}
    for item_id in sorted(by_item, key=lambda i: (group_key(first[i]["group"]), i)):
        row: list[Any] = [item_id, first[item_id]["group"], first[item_id]["item"].get("prompt")]
        for m in methods:
            r = by_item[item_id].get(m)
            image = None if r is None or r["image"] is None else wandb.Image(to_uint8(r["image"]), caption=f"{m}: {item_id}")
            scores = {} if r is None else r.get("scores", {})
            row += [image, None if r is None else r["status"], *(scores.get(j) for j in judges)]
        table.add_data(*row)
    return table
