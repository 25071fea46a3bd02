"""Machine description, summary ratios and the markdown table of benchmarks/speed.py."""

from __future__ import annotations

import os
import platform

import torch

DOODL_MODES = ("invert", "checkpoint", "naive", "auto", "auto-half")
CONSTANT = ("invert", "checkpoint")


def machine() -> dict:
    """CPU model, core count, torch's threads, load average (the benchmark machine may be shared)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def summary(rows: list[dict], memory: dict, T: int) -> dict:
    """The issue's ratios at the largest T (seconds: minimum over repeats)."""
    s = {r["row"]: r["seconds_min"] for r in rows if r["T"] == T}
    out: dict = {"T": T}
    doodl = [m for m in DOODL_MODES if m in s]
    const = [m for m in CONSTANT if m in s]
    if "reference" in s and doodl:
        fastest = min(doodl, key=s.get)
        out["fastest_mode"] = fastest
        out["reference_over_fastest"] = s["reference"] / s[fastest]
    if "reference" in s and const:
        best = min(const, key=s.get)
        out["best_constant_memory_mode"] = best
        out["reference_over_best_constant"] = s["reference"] / s[best]
    if "auto" in s and "naive" in s:
        out["auto_full_budget_over_naive"] = s["auto"] / s["naive"]
    if "sample" in s:
        out["over_sample"] = {m: s[m] / s["sample"] for m in s if m != "sample"}
    Ts = sorted({t for m in memory.values() for t in m})
    if len(Ts) > 1:
        out[f"peak_T{Ts[-1]}_over_T{Ts[0]}"] = {m: v[Ts[-1]] / v[Ts[0]] for m, v in memory.items()}
    return out


def table(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"# Speed benchmark: {result['scale']} noise model, latents {result['latents']}, {result['unet_dtype']}",
        "",
        f"`{result['command']}` on {m['cpu']}, {m['cpu_count']} cores, {m['torch_threads']} torch thread(s), "
        f"torch {m['torch']}; load average at start {m['load_average']}, at end {result['load_average_end']}.",
        "Seconds: minimum (median) over the repeats; ratio: minimum over the plain sample's minimum.",
        "",
        "| T | row | seconds | ratio to sample | noise-model calls/step (no graph + graph) x batch | peak MB | grad error vs naive |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        err = "" if r["grad_rel_err_vs_naive"] is None else f"{r['grad_rel_err_vs_naive']:.1e}"
        lines.append(
            f"| {r['T']} | {r['row']} | {r['seconds_min']:.3f} ({r['seconds_median']:.3f}) | {r['ratio_to_sample']:.2f} "
            f"| {r['unet_calls_per_step_no_graph']:g} + {r['unet_calls_per_step_with_graph']:g} x {r['batch_per_unet_call']} "
            f"| {r['peak_mb']:.1f} | {err} |")
    lines += ["", "Peak MB of one iteration by T: " + "; ".join(
        f"{mode}: " + ", ".join(f"T={T} {v:.2f}" for T, v in by.items()) for mode, by in result["peak_mb_by_T"].items()),
        "", "Summary: `" + str({k: (round(v, 3) if isinstance(v, float) else v) for k, v in result["summary"].items()
                               if k != "over_sample"}) + "`",
        "Ratios to the plain sample: " + ", ".join(f"{k} {v:.2f}" for k, v in result["summary"].get("over_sample", {}).items()),
        ""]
    return "\n".join(lines)
