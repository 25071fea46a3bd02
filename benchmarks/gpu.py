"""GPU run (`make bench-gpu`), sized for about 8 minutes on one H100/H200-class GPU.

On CUDA, SD-1.5 size at 512 px (64x64 latents) and SDXL size at 1024 px (128x128 latents), the
published configurations with random weights (benchmarks/speed_models.py), T = 50, bfloat16 and
float16; SD3-medium and FLUX.1-dev size at 1024 px, bfloat16, T = 28 (benchmarks/flow_models.py): seconds per DOODL iteration of each mode (invert, checkpoint, auto = the memory-budgeted
one with its default budget, naive where it fits), of the reference emulation (benchmarks/reference.py)
and of a plain sample; torch.cuda.max_memory_allocated of each; items per hour at batch 1, 4 and 8
(best constant-memory mode); gradient error of each mode against naive at T = 4. Every shape is
warmed up on a 2-step chain first. Rows past the time budget are recorded as skipped, never guessed.
Then ``pytest -m gpu`` and the fast suite. Writes benchmarks/results/gpu.json.

    python benchmarks/gpu.py [--budget-s 300] [--no-tests] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import Bench  # noqa: E402
from speed_models import build  # noqa: E402
from speed_report import machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# (scale, latent side, dtype, rows, T or None for --steps): the SD-1.5 bf16 setting gets every row,
# the others fewer, in the order the issues' targets need them; the flow models (1024 px) at their
# pipelines' default of 28 steps
PLAN = [
    ("sd15", 64, torch.bfloat16, ("sample", "checkpoint", "invert", "auto", "reference", "naive"), None),
    ("sdxl", 128, torch.bfloat16, ("sample", "checkpoint", "auto", "reference"), None),
    ("sd3", 128, torch.bfloat16, ("sample", "checkpoint", "invert", "auto"), 28),
    ("flux", 128, torch.bfloat16, ("sample", "checkpoint", "invert"), 28),
    ("sd15", 64, torch.float16, ("sample", "checkpoint", "invert", "auto", "reference"), None),
    ("sdxl", 128, torch.float16, ("checkpoint", "auto"), None),
]
SMOKE = {"sd15": "tiny", "sdxl": "tiny", "sd3": "tiny-sd3", "flux": "tiny-flux"}
BATCHES = (4, 8)


def timed(fn):
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0, torch.cuda.max_memory_allocated() / 2**30 if cuda else None


def row(world, T, mode, batch=1):
    """(seconds, peak GiB) of one run after a 2-step warm-up of the same shapes; OOM is recorded."""
    try:
        warm = Bench(world, 2, batch)
        (warm.sample() if mode == "sample" else warm.iteration(mode))()
        b = Bench(world, T, batch)
        s, peak = timed(b.sample() if mode == "sample" else b.iteration(mode))
        return {"mode": mode, "T": T, "batch": batch, "seconds": s, "peak_gib": peak,
                "items_per_hour": 3600 * batch / s}
    except torch.OutOfMemoryError as e:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return {"mode": mode, "T": T, "batch": batch, "error": f"out of memory: {str(e).splitlines()[0]}"}


def grad_errors(world, T=4):
    b = Bench(world, T)
    modes = ("naive", "invert", "checkpoint", "auto") + (("reference",) if hasattr(world, "eps_ref") else ())
    g = {m: b.grads(m) for m in modes}
    return {m: float((v - g["naive"]).norm() / g["naive"].norm()) for m, v in g.items() if m != "naive"}


def pytest_run(args, timeout):
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=ROOT,
                           capture_output=True, text=True, timeout=timeout)
        return {"args": args, "returncode": p.returncode, "seconds": time.perf_counter() - t0,
                "tail": (p.stdout + p.stderr)[-1500:]}
    except subprocess.TimeoutExpired:
        return {"args": args, "returncode": None, "seconds": timeout, "tail": f"timed out after {timeout} s"}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-s", type=float, default=360.0, help="seconds for the timing rows")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--no-tests", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="the plan's code path on the CPU with the tiny UNet (a check, no figures)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu.json")
    args = ap.parse_args(argv)
    plan, device = PLAN, "cuda"
    if args.smoke:
        plan = [(SMOKE[scale], 8, dt, modes, T and 2) for scale, _, dt, modes, T in PLAN if dt == torch.bfloat16]
        device = "cpu"
    elif not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py needs CUDA (torch.cuda.is_available() is False); gpu.json left as it is")
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    start = time.perf_counter()
    result = {"status": "smoke check on CPU, not a measurement" if args.smoke else "measured", "machine": machine(), "T": args.steps, "settings": [], "tests": []}

    def save():
        result["seconds_total"] = time.perf_counter() - start
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))

    for k, (scale, side, dtype, modes, T) in enumerate(plan):
        world = build(scale, device=device, dtype=dtype, latent=side)
        T = T or args.steps
        entry = {"scale": scale, "pixels": 8 * side, "dtype": str(dtype).replace("torch.", ""), "T": T, "rows": []}
        result["settings"].append(entry)
        first = k == 0
        if first or scale.endswith(("sd3", "flux")):
            entry["grad_rel_err_vs_naive_T4"] = grad_errors(world)
        for mode in modes:
            if time.perf_counter() - start > args.budget_s:
                entry["rows"].append({"mode": mode, "skipped": "time budget spent"})
                continue
            entry["rows"].append(row(world, T, mode))
            print(scale, entry["dtype"], entry["rows"][-1], flush=True)
            save()
        if first:
            for batch in BATCHES:
                if time.perf_counter() - start > args.budget_s:
                    entry["rows"].append({"mode": "checkpoint", "batch": batch, "skipped": "time budget spent"})
                    continue
                entry["rows"].append(row(world, args.steps, "checkpoint", batch))
                print(scale, entry["dtype"], entry["rows"][-1], flush=True)
        del world
        if device == "cuda":
            torch.cuda.empty_cache()
        save()
    if not args.no_tests:
        result["tests"].append(pytest_run(["-m", "gpu"], 90))
        result["tests"].append(pytest_run(["-m", "not slow", "-x", "-n", "8", "--dist", "loadfile"], 150))
    save()
    print(json.dumps({k: v for k, v in result.items() if k != "settings"}, indent=2)[:3000])


if __name__ == "__main__":
    main()
