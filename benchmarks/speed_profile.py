"""Where one DOODL iteration spends its time, by phase (wall-clock timers, one thread of control):
chain forward, VAE decode, guidance loss, decode backward (until the gradient reaches the final
latents), chain backward, update. Writes benchmarks/results/speed_profile.json.

    python benchmarks/speed_profile.py [--scale tiny|sd15|sdxl] [--steps T] [--modes ...] [--threads N]
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
from speed_models import build  # noqa: E402
from speed_report import machine  # noqa: E402

import doodl  # noqa: E402


def phases(b: Bench, mode: str) -> dict:
    """Seconds per phase of one iteration of ``mode`` (not the reference)."""
    x, y = (torch.nn.Parameter(b.z.clone()) for _ in range(2))
    opt = doodl.DOODLOptimizer([(x, y)], generator=torch.Generator(x.device).manual_seed(0))
    t = {}
    clock = [time.perf_counter()]

    def lap(name):
        now = time.perf_counter()
        t[name] = t.get(name, 0.0) + now - clock[0]
        clock[0] = now

    opt.zero_grad()
    x0, y0 = b.chain(mode, x, y)
    lap("chain_forward")
    ix, iy = b.world.decode(x0), b.world.decode(y0)
    lap("decode")
    loss = (b.loss(ix) + b.loss(iy)).sum()
    lap("guidance_loss")
    seen = []
    x0.register_hook(lambda g: seen.append(0) or (lap("decode_backward") if len(seen) == 2 else None))
    y0.register_hook(lambda g: seen.append(0) or (lap("decode_backward") if len(seen) == 2 else None))
    loss.backward()
    lap("chain_backward")
    opt.step()
    lap("update")
    t["total"] = sum(t.values())
    return t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", choices=("tiny", "sd15", "sdxl"), default="tiny")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--modes", nargs="+", default=["invert", "checkpoint", "naive"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "speed_profile.json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    world = build(args.scale)
    b = Bench(world, args.steps)
    phases(b, "checkpoint")  # warm-up
    result = {"scale": args.scale, "T": args.steps, "machine": machine(), "phases_s": {}}
    for mode in args.modes:
        p = phases(b, mode)
        result["phases_s"][mode] = p
        print(mode, " ".join(f"{k} {v:.3f}s ({100 * v / p['total']:.0f}%)" for k, v in p.items()), flush=True)
    old = json.loads(args.out.read_text()) if args.out.exists() else {}
    old[args.scale] = result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(old, indent=2))


if __name__ == "__main__":
    main()
