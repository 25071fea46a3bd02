"""Speed benchmark (`make bench`): DOODL iterations per gradient mode against plain sampling, the
one-step baseline and an emulation of the reference code, on one machine in one run.

Per T (default 10 20 50, tiny UNet + tiny VAE, 16x16 latents, batch 1, CFG 7.5):
    sample        plain EDICT sample + one decode (no graph)
    onestep       one-step guided DDIM sample (doodl.core.onestep) + decode, per sample
    invert, checkpoint, naive, auto (memory_budget=None: half the free memory, holds the whole
                  graph here), auto-half (a budget of half naive's peak)   one DOODL iteration each:
                  chain with grad, decode both final latents, loss, backward to (x_T, y_T), update
    reference     the same iteration the way the authors' code costs it (benchmarks/reference.py)
Each: seconds (min and median of --repeats, rounds interleaved over the rows so machine load hits
all alike), ratio to the plain sample (min over min), UNet calls per step and batch per call,
peak tensor memory (benchmarks/memory.py), gradient error against naive on the same inputs.
Then the constant-memory modes' peak at T=10 and T=100. ``--scale sd15|sdxl|sd3|flux``: the published
configurations with random weights at small latents (default T 2 4, one repeat; slow on CPU; the
flow models, benchmarks/flow_models.py, have no reference row: the authors' code is SD-only).
Writes benchmarks/results/speed{,_<scale>}.json and .md.

    python benchmarks/speed.py [--scale tiny|sd15|sdxl|sd3|flux|tiny-sd3|tiny-flux] [--steps 10 20 50] [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import PeakMemory  # noqa: E402
from reference import TrainableUNet, reference_sample_with_grad  # noqa: E402
from flow_models import FLOW_SCALES, TINY_FLOW  # noqa: E402
from speed_models import SCALES, build  # noqa: E402
from speed_report import machine, summary, table  # noqa: E402

import doodl  # noqa: E402
from doodl.core.grad import graph_bytes  # noqa: E402
from doodl.core.onestep import one_step_guided_sample  # noqa: E402

ITER_MODES = ("invert", "checkpoint", "naive", "auto", "auto-half", "reference")
CONSTANT = ("invert", "checkpoint")
SCALE_NAMES = ("tiny", *SCALES, *FLOW_SCALES, *TINY_FLOW)


class Bench:
    """One world, one T: the rows' callables and their gradient w.r.t. the starting pair."""

    def __init__(self, world, T: int, batch: int = 1):
        self.world, self.T = world, T
        self.sampler = world.sampler(T)
        self.z = world.latents(batch)
        with torch.no_grad():
            side = world.decode(self.z[:1]).shape[-1]
        g = torch.Generator().manual_seed(7)
        self.target = torch.rand(1, 3, side, side, generator=g).to(self.z.device)
        self.budget = {"auto": None}

    def least_budget(self):
        """1.5 of one step's graph (graph_bytes) plus some latents: above the budgeted mode's floor."""
        x, y = (self.z.clone().requires_grad_(True) for _ in range(2))
        step = graph_bytes(self.sampler.denoise(self.world.eps, x, y, 0), (x, y))
        return int(1.5 * step) + 4 * (self.T + 4) * x.numel() * x.element_size()

    def loss(self, img):
        """Per-item loss of images in [0, 1]: mean squared distance to a fixed target image."""
        return (img - self.target).square().flatten(1).mean(1)

    def chain(self, mode, x, y):
        if mode == "reference":
            return reference_sample_with_grad(self.sampler, self.world, x, y)
        budget = self.budget.get(mode)
        return doodl.sample_with_grad(self.sampler, self.world.eps, x, y, mode=mode.split("-")[0],
                                      **({} if budget is None else {"memory_budget": budget}))

    def grads(self, mode):
        """d loss / d (x_T, y_T) of one iteration from the fixed start (no update)."""
        x, y = (self.z.clone().requires_grad_(True) for _ in range(2))
        with TrainableUNet(self.world) if mode == "reference" else _Null():
            x0, y0 = self.chain(mode, x, y)
            (self.loss(self.world.decode(x0)) + self.loss(self.world.decode(y0))).sum().backward()
        return torch.cat([x.grad.flatten(), y.grad.flatten()]).float()

    def iteration(self, mode):
        """A callable running one DOODL iteration (chain, decode x0 and y0, loss, backward, update)."""
        x, y = (torch.nn.Parameter(self.z.clone()) for _ in range(2))
        opt = doodl.DOODLOptimizer([(x, y)], generator=torch.Generator(x.device).manual_seed(0))

        def run():
            opt.zero_grad()
            with TrainableUNet(self.world) if mode == "reference" else _Null():
                x0, y0 = self.chain(mode, x, y)
                (self.loss(self.world.decode(x0)) + self.loss(self.world.decode(y0))).sum().backward()
            opt.step()
        return run

    def sample(self):
        def run():
            with torch.no_grad():
                x0, _ = self.sampler.sample(self.world.eps, self.z, self.z)
                return self.world.decode(x0)
        return run

    def onestep(self):
        def run():
            x0 = one_step_guided_sample(self.sampler, self.world.eps, lambda s: self.loss(self.world.decode(s)), self.z)
            with torch.no_grad():
                return self.world.decode(x0)
        return run


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def calls_and_peak(world, fn):
    """UNet calls (by kind, batch per call) and peak tensor memory of one run of ``fn``."""
    for k in world.calls:
        world.calls[k] = 0
    with PeakMemory() as mem:
        fn()
    c = dict(world.calls)
    return c, mem.peak


def run_T(world, T, repeats, modes):
    b = Bench(world, T)
    fns = {"sample": b.sample(), "onestep": b.onestep()}
    info = {}
    for name in ("sample", "onestep", *[m for m in modes if m != "auto-half"]):
        fn = fns.get(name) or b.iteration(name)
        fns[name] = fn
        info[name] = calls_and_peak(world, fn)
    if "auto-half" in modes:
        b.budget["auto-half"] = max(int(info["naive"][1] // 2), b.least_budget())
        fns["auto-half"] = b.iteration("auto-half")
        info["auto-half"] = calls_and_peak(world, fns["auto-half"])
    times = {k: [] for k in fns}
    for _ in range(repeats):  # interleaved rounds: a burst of machine load hits every row alike
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    g_naive = b.grads("naive")
    rows = []
    for k, ts in times.items():
        calls, peak = info[k]
        ref = k == "reference"
        plain, graph = (calls["ref_plain"], calls["ref_graph"]) if ref else (calls["plain"], calls["graph"])
        err = None
        if k in ITER_MODES:
            err = float((b.grads(k) - g_naive).norm() / g_naive.norm())
        ts = sorted(ts)
        rows.append({
            "T": T, "row": k, "seconds_min": ts[0], "seconds_median": ts[len(ts) // 2], "repeats": len(ts),
            "unet_calls_per_step_no_graph": plain / T, "unet_calls_per_step_with_graph": graph / T,
            "batch_per_unet_call": 1 if ref else world.batch_per_call, "peak_mb": peak / 2**20, "grad_rel_err_vs_naive": err,
            "memory_budget": b.budget.get(k) if k.startswith("auto") else None,
        })
    base = next(r for r in rows if r["row"] == "sample")["seconds_min"]
    for r in rows:
        r["ratio_to_sample"] = r["seconds_min"] / base
        print(f"  T={T:<3d} {r['row']:<11s} {r['seconds_min']:8.3f}s (median {r['seconds_median']:.3f})  "
              f"x{r['ratio_to_sample']:5.2f}  peak {r['peak_mb']:9.1f} MB  err {r['grad_rel_err_vs_naive']}", flush=True)
    return rows


def flat_memory(world, Ts, modes=CONSTANT):
    """Peak MB of one iteration of each constant-memory mode at each T in ``Ts``."""
    out = {}
    for mode in modes:
        out[mode] = {}
        for T in Ts:
            out[mode][T] = calls_and_peak(world, Bench(world, T).iteration(mode))[1] / 2**20
        print(f"  peak {mode}: " + ", ".join(f"T={T} {v:.2f} MB" for T, v in out[mode].items()), flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", choices=SCALE_NAMES, default="tiny")
    ap.add_argument("--steps", type=int, nargs="+", default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--flat-steps", type=int, nargs="+", default=None, help="T values of the memory-flatness check")
    ap.add_argument("--modes", nargs="+", default=None, choices=ITER_MODES, help="default: all (no reference for flow models)")
    ap.add_argument("--flat-modes", nargs="+", default=list(CONSTANT), choices=CONSTANT, help="modes of the memory-flatness check")
    ap.add_argument("--latent", type=int, default=None, help="latent side (default: the scale's CPU size)")
    ap.add_argument("--text-tokens", type=int, default=None,
                    help="flow scales: context tokens (default the pipeline's: SD3 77 CLIP + 256 T5, FLUX 512 T5)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    tiny = args.scale.startswith("tiny")
    flow = args.scale in FLOW_SCALES or args.scale in TINY_FLOW
    modes = args.modes or [m for m in ITER_MODES if not (flow and m == "reference")]
    if flow and "reference" in modes:
        ap.error("--modes reference: the reference emulation runs the authors' SD-only code path; "
                 f"leave it out for the flow scale {args.scale!r}")
    steps = args.steps or ([10, 20, 50] if tiny else [2, 4])
    repeats = args.repeats or (5 if tiny else 1)
    flat = args.flat_steps or ([10, 100] if tiny else [2, 4])
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or Path(__file__).parent / "results" / ("speed.json" if tiny else f"speed_{args.scale}.json")
    info = machine()
    print(json.dumps(info))
    if args.text_tokens is not None and not flow:
        ap.error("--text-tokens is for the flow scales (the UNet scales read 77 CLIP tokens)")
    world = build(args.scale, latent=args.latent, **({} if args.text_tokens is None else {"tokens": args.text_tokens}))
    t0 = time.perf_counter()
    rows = [r for T in steps for r in run_T(world, T, repeats, modes)]
    memory = flat_memory(world, flat, args.flat_modes)
    result = {
        "command": "python benchmarks/speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "scale": args.scale, "latents": list(world.latents().shape), "unet_dtype": str(world.dtype),
        "text_tokens": getattr(world, "tokens", None),
        "machine": info, "load_average_end": machine()["load_average"], "seconds_total": time.perf_counter() - t0,
        "rows": rows, "peak_mb_by_T": memory, "summary": summary(rows, memory, max(steps)),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    md = table(result)
    out.with_suffix(".md").write_text(md)
    print(md)
    print(f"wrote {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
