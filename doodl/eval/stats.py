"""Confidence intervals for benchmark tables: Wilson for accuracies, percentile bootstrap for means,
paired percentile bootstrap for differences of two scores of the same items. Every bootstrap draws
from its own ``torch.Generator`` seeded explicitly: the same values give the same interval."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor


def wilson(k: float, n: int, z: float = 1.96) -> list[float]:
    """Wilson score interval of a proportion k/n."""
    if n == 0:
        return [math.nan, math.nan]
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def bootstrap(values: Tensor, n_boot: int = 2000, seed: int = 0) -> list[float]:
    """Percentile bootstrap 95% interval of the mean of ``values`` (N,) (items resampled); NaNs for N = 0."""
    if len(values) == 0:
        return [math.nan, math.nan]
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(values), (n_boot, len(values)), generator=g)
    means = values.double()[idx].mean(1)
    return [float(means.quantile(0.025)), float(means.quantile(0.975))]


def paired_bootstrap(a: Tensor, b: Tensor, n_boot: int = 2000, seed: int = 0) -> list[float]:
    """Paired percentile bootstrap 95% interval of mean(a - b) for two scores of the same N items:
    items are resampled together, so what the two share (the item's difficulty) cancels. When
    a == b every resampled difference is exactly 0, and so is the interval."""
    if a.shape != b.shape or a.dim() != 1:
        raise ValueError(f"paired_bootstrap needs two (N,) scores of the same items, got {tuple(a.shape)} and {tuple(b.shape)}")
    return bootstrap(a.double() - b.double(), n_boot, seed)


def summarize(m: dict[str, Tensor]) -> dict[str, Any]:
    """Per-item guide_prob, guide_correct, judge_correct, clip (N,) -> values with 95% CIs; the
    adversarial gap guide_correct - judge_correct is bootstrapped paired, item by item."""
    n = len(m["guide_prob"])
    out: dict[str, Any] = {"n": n}
    for key, name in (("guide_correct", "guide_acc"), ("judge_correct", "judge_acc")):
        k = float(m[key].sum())
        out[name] = {"value": k / n, "ci95": wilson(k, n), "ci": "wilson"}
    for key in ("guide_prob", "clip"):
        out[key] = {"value": float(m[key].mean()), "ci95": bootstrap(m[key]), "ci": "bootstrap"}
    gap = m["guide_correct"] - m["judge_correct"]
    out["gap"] = {"value": float(gap.mean()), "ci95": bootstrap(gap), "ci": "paired bootstrap"}
    return out
