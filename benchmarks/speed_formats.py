"""Do channels-last and bfloat16 pay on this machine? One run, one world, rounds interleaved.

For each variant of the noise model and VAE (float32; float32 channels-last; bfloat16;
bfloat16 channels-last; latents and coupling in float32 throughout), times a plain EDICT sample
and one DOODL iteration in ``--mode`` (default checkpoint, the constant-memory mode without
inversion drift) and reports each against the float32 variant of the same round, with the
gradient's relative error against the float32 variant (what the speed costs in exactness).
Writes benchmarks/results/speed_formats.json (a key per scale).

    python benchmarks/speed_formats.py [--scale tiny|sd15|sdxl] [--steps 10] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import Bench  # noqa: E402
from speed_models import SCALES, build  # noqa: E402
from speed_report import machine  # noqa: E402

VARIANTS = {
    "float32": (torch.float32, False),
    "float32-channels-last": (torch.float32, True),
    "bfloat16": (torch.bfloat16, False),
    "bfloat16-channels-last": (torch.bfloat16, True),
}


def world_of(scale: str, dtype, channels_last: bool, latent: int | None):
    world = build(scale, dtype=dtype, latent=latent)
    if channels_last:
        world.unet.to(memory_format=torch.channels_last)
        world.vae.to(memory_format=torch.channels_last)
    return world


def measure(scale: str, T: int, repeats: int, mode: str, latent: int | None = None) -> dict:
    benches = {name: Bench(world_of(scale, dt, cl, latent), T) for name, (dt, cl) in VARIANTS.items()}
    fns = {(name, row): (b.sample() if row == "sample" else b.iteration(mode))
           for name, b in benches.items() for row in ("sample", "iteration")}
    for fn in fns.values():  # warm-up: first-call allocations and kernel choices
        fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    g32 = benches["float32"].grads(mode)
    out = {}
    for name, b in benches.items():
        g = b.grads(mode)
        row = {"grad_rel_err_vs_float32": float((g - g32).norm() / g32.norm())}
        for kind in ("sample", "iteration"):
            ts = sorted(times[(name, kind)])
            row[f"{kind}_s_min"], row[f"{kind}_s_median"] = ts[0], ts[len(ts) // 2]
            row[f"{kind}_over_float32"] = ts[0] / min(times[("float32", kind)])
        out[name] = row
        print(f"  {name:<24s} sample {row['sample_s_min']:.3f}s (x{row['sample_over_float32']:.2f})  "
              f"iteration {row['iteration_s_min']:.3f}s (x{row['iteration_over_float32']:.2f})  "
              f"grad err {row['grad_rel_err_vs_float32']:.1e}", flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", choices=("tiny", *SCALES), default="tiny")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--mode", default="checkpoint", choices=("invert", "checkpoint", "naive"))
    ap.add_argument("--latent", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "speed_formats.json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine()
    t0 = time.perf_counter()
    rows = measure(args.scale, args.steps, args.repeats, args.mode, args.latent)
    result = {"command": "python benchmarks/speed_formats.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "scale": args.scale, "T": args.steps, "mode": args.mode, "repeats": args.repeats, "machine": info,
              "load_average_end": machine()["load_average"], "seconds_total": time.perf_counter() - t0,
              "variants": rows}
    old = json.loads(args.out.read_text()) if args.out.exists() else {}
    old[args.scale] = result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(old, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
