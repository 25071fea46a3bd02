"""Benchmark of the gradient through the EDICT chain: time, peak memory and UNet calls per step.

For each mode (invert, checkpoint, naive) and T in {5, 10, 20, 50, 100}, on a tiny
UNet2DConditionModel (16x16 latents, batch 1, classifier-free guidance as one batched call):
    sample_s     seconds of one plain EDICT sample (no graph)
    iteration_s  seconds of one DOODL iteration: chain with grad, a loss on the final pair,
                 backward to (x_T, y_T) and the DOODL update
    ratio        iteration_s / sample_s
    peak_mb      peak live tensor memory of one iteration (benchmarks/memory.py)
    evals/step   UNet calls per step in one iteration, without and with a graph
Also the exactness figures at T=50: round trip error and gradient agreement with naive, in
float64 and float32. Writes benchmarks/results/chain.json and prints a table.

    python benchmarks/chain.py [--steps 5 10 20 50 100] [--repeats 3] [--threads N] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import PeakMemory  # noqa: E402

import doodl  # noqa: E402
from doodl.models.tiny import sd_scheduler, tiny_unet  # noqa: E402

MODES = ("invert", "checkpoint", "naive")


class CFGEps:
    """eps = eps_u + s*(eps_c - eps_u) from ONE batched UNet call; counts calls by kind."""

    def __init__(self, unet, scale: float = 7.5, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        ctx = torch.randn(2, 8, unet.config.cross_attention_dim, generator=g, dtype=unet.dtype)
        self.unet, self.ctx, self.scale = unet, ctx, scale
        self.plain = self.graph = 0

    def __call__(self, latents, t):
        if torch.is_grad_enabled() and latents.requires_grad:
            self.graph += 1
        else:
            self.plain += 1
        l2 = torch.cat([latents, latents]).to(self.unet.dtype)
        eps_u, eps_c = self.unet(l2, t, encoder_hidden_states=self.ctx).sample.chunk(2)
        return eps_u + self.scale * (eps_c - eps_u)


def iteration(sampler, eps_fn, mode, opt, pair, target):
    """One DOODL iteration on the pair: chain, loss on both final latents, backward, update."""
    opt.zero_grad()
    x0, y0 = doodl.sample_with_grad(sampler, eps_fn, *pair, mode=mode)
    loss = (x0 - target).square().mean() + (y0 - target).square().mean()
    loss.backward()
    opt.step()


def timed(fn, repeats):
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def new_pair(dtype=torch.float32, seed=0):
    z = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    x, y = torch.nn.Parameter(z.clone()), torch.nn.Parameter(z.clone())
    return (x, y), doodl.DOODLOptimizer([(x, y)], generator=torch.Generator().manual_seed(seed))


def speed_and_memory(steps, repeats):
    unet = tiny_unet()
    rows = []
    target = torch.zeros(1, 4, 16, 16)
    for T in steps:
        sampler = doodl.EDICTSampler(sd_scheduler(), num_steps=T)
        eps_fn = CFGEps(unet)
        pair, _ = new_pair()
        sample_s = timed(lambda: sampler.sample(eps_fn, *pair), repeats)
        for mode in MODES:
            pair, opt = new_pair()
            it_s = timed(lambda: iteration(sampler, eps_fn, mode, opt, pair, target), repeats)
            eps_fn.plain = eps_fn.graph = 0
            pair, opt = new_pair()
            with PeakMemory() as mem:
                iteration(sampler, eps_fn, mode, opt, pair, target)
            rows.append({
                "mode": mode, "T": T, "sample_s": sample_s, "iteration_s": it_s,
                "ratio": it_s / sample_s, "peak_mb": mem.peak / 2**20,
                "evals_per_step_no_graph": eps_fn.plain / T,
                "evals_per_step_with_graph": eps_fn.graph / T,
            })
            print(f"  T={T:<4d} {mode:<10s} iter {it_s:7.3f}s  sample {sample_s:6.3f}s  "
                  f"ratio {it_s / sample_s:5.2f}  peak {mem.peak / 2**20:8.2f} MB", flush=True)
    return rows


def exactness(T=50):
    """Round trip and gradient agreement with naive at T steps, float64 and float32."""
    out = {}
    for dtype in (torch.float64, torch.float32):
        unet = tiny_unet().to(dtype)
        eps_fn = CFGEps(unet)
        sampler = doodl.EDICTSampler(sd_scheduler(), num_steps=T)
        z = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1), dtype=dtype)
        x0, y0 = sampler.sample(eps_fn, z, z)
        xb, _ = sampler.invert(eps_fn, x0, y0)
        name = str(dtype).replace("torch.", "")
        out[name] = {"round_trip_rel": float((xb - z).norm() / z.norm())}
        w = torch.randn(z.shape, generator=torch.Generator().manual_seed(2), dtype=dtype)
        g = {}
        for mode in MODES:
            xT = z.clone().requires_grad_(True)
            yT = z.clone().requires_grad_(True)
            a, b = doodl.sample_with_grad(sampler, eps_fn, xT, yT, mode=mode)
            ((w * a).sum() + (a * b).sum()).backward()
            g[mode] = torch.cat([xT.grad.flatten(), yT.grad.flatten()])
        for mode in ("invert", "checkpoint"):
            out[name][f"grad_rel_{mode}_vs_naive"] = float((g[mode] - g["naive"]).norm() / g["naive"].norm())
    return out


def table(rows):
    lines = ["| mode | T | iteration s | sample s | ratio | peak MB | evals/step (no graph + with graph) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['T']} | {r['iteration_s']:.3f} | {r['sample_s']:.3f} | {r['ratio']:.2f} "
                     f"| {r['peak_mb']:.2f} | {r['evals_per_step_no_graph']:.0f} + {r['evals_per_step_with_graph']:.0f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 50, 100])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "chain.json")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    rows = speed_and_memory(args.steps, args.repeats)
    exact = exactness()
    peak = {m: {r["T"]: r["peak_mb"] for r in rows if r["mode"] == m} for m in MODES}
    summary = {}
    if 10 in args.steps and 100 in args.steps:
        summary["peak_T100_over_T10"] = {m: peak[m][100] / peak[m][10] for m in MODES}
    if 50 in args.steps:
        summary["ratio_T50"] = {r["mode"]: r["ratio"] for r in rows if r["T"] == 50}
    result = {
        "command": "python benchmarks/chain.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "device": "cpu", "threads": torch.get_num_threads(), "torch": torch.__version__,
        "unet": "tiny UNet2DConditionModel (doodl.models.tiny.tiny_unet), latents 1x4x16x16, CFG batch 2",
        "rows": rows, "summary": summary, "exactness_T50": exact,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(table(rows))
    print(json.dumps({"summary": summary, "exactness_T50": exact}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
