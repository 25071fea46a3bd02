"""Tuning for the digits benchmark, on the guidance classifier only and on seeds the benchmark never uses.

The guide alone cannot tell a digit from an image that fools it: DOODL drives the guide's own
probability to the early-stop target whatever the crops. So settings are compared by the guide's
probability on SHIFTED VIEWS of each final image: the image moved by one pixel in each of the 8
directions and left in place (9 views, edges replicated). An adversarial pattern tuned to one
exact pixel grid tends not to survive a one-pixel shift; a drawn digit does. The views are not
fully held out: random crops, which the loss trains on, include small shifts too, so the
criterion favours crops by construction; it measures robustness, not correctness. The judge is
never read here (it was read once, on these tuning seeds, to diagnose why DOODL fell short
without crops: benchmarks/results/digits.diagnosis.md).

Sweeps (unseen digits 8 and 9, tuning seeds from ``SWEEP_SEED0``):
    crops   DOODL with 16 crops per image and min_cut in MIN_CUTS (None: no crops), the rest as
            the benchmark's defaults, plus a control without crops that runs every iteration (no
            early stop: without crops the stop reads the whole image, with crops a fixed set of
            crops, so the control separates the crops from the stopping rule); the best crop
            setting is kept for both guided methods
            (SPEC section 7: the baseline uses the same crops and losses as DOODL)
    scale   one-step guidance scale in ONESTEP_SCALES with the chosen crops

    python benchmarks/digits_sweep.py [--items 16] [--out benchmarks/results]

Writes DIR/digits_sweep.json (every configuration's scores, the chosen settings, the command).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from doodl.digits import assets
from doodl.digits.world import DigitsStableDiffusion
from doodl.eval.runs import build_module, guide_loss, make_items, run_baseline, run_doodl

OUT = Path(__file__).resolve().parent / "results"
SWEEP_SEED0 = 100_000  # tuning seeds, disjoint from the benchmark's evaluation seeds (0, 1, ...)
# the benchmark's settings (configs/digits_compare.yaml) other than what is swept here
BASE = dict(num_steps=10, iterations=20, batch_size=52, cfg_scale=7.5, guidance_scale=1.0, clip_grad_val=0.3,
            perturb=1e-3, renormalize=True, target_score=0.9, cut_power=0.3, best_by="score")

MIN_CUTS = (None, 12, 10, 8)
CROPS = 16
ONESTEP_SCALES = (0.3, 1.0, 3.0, 10.0, 30.0)

# Earlier tuning by hand (step size, T, iterations; 8 unseen items of the tuning seeds, scored by the
# guide's probability on the image itself), kept as the record behind the other defaults.
MANUAL_TUNING = [
    {"method": "onestep", "T": 5, "guidance_scale": 1.0, "guide_prob": 0.124},
    {"method": "onestep", "T": 5, "guidance_scale": 10.0, "guide_prob": 0.151},
    {"method": "onestep", "T": 10, "guidance_scale": 10.0, "guide_prob": 0.384},
    {"method": "onestep", "T": 10, "guidance_scale": 100.0, "guide_prob": 0.207},
    {"method": "doodl", "T": 5, "iterations": 8, "clip_grad_val": 0.03, "guidance_scale": 1.0, "guide_prob": 0.098},
    {"method": "doodl", "T": 5, "iterations": 8, "clip_grad_val": 0.1, "guidance_scale": 1.0, "guide_prob": 0.162},
    {"method": "doodl", "T": 5, "iterations": 10, "clip_grad_val": 0.1, "guidance_scale": 10.0, "guide_prob": 0.693,
     "target_score": 0.9},
    {"method": "doodl", "T": 5, "iterations": 10, "clip_grad_val": 0.3, "guidance_scale": 1.0, "guide_prob": 0.802,
     "target_score": 0.9},
    {"method": "doodl", "T": 10, "iterations": 20, "clip_grad_val": 0.3, "guidance_scale": 1.0, "guide_prob": 0.939,
     "target_score": 0.9, "note": "all 8 items reached guide prob 0.9 within 6-12 iterations"},
    {"method": "doodl", "note": "first timing run, the demo settings clip_grad_val 0.01 (T=10, 3 iterations): guide prob "
     "0.000 on 8 unseen items; with clipping before momentum the step is about clip_grad_val per element, too small "
     "to move the norm-16 latents of 4x8x8 in a few iterations"},
]


def shifted_views(images: Tensor, shift: int = 1) -> Tensor:
    """(B, C, H, W) -> (9, B, C, H, W): the images moved by -shift, 0, +shift pixels along each axis."""
    h, w = images.shape[-2:]
    padded = F.pad(images, (shift,) * 4, mode="replicate")
    views = [padded[..., shift + dy : shift + dy + h, shift + dx : shift + dx + w]
             for dy in (-shift, 0, shift) for dx in (-shift, 0, shift)]
    return torch.stack(views)


@torch.no_grad()
def guide_scores(guide: torch.nn.Module, images: Tensor, labels: Tensor) -> dict[str, float]:
    """The guide's mean probability of the target on the images, and on their 9 shifted views."""
    prob = lambda x: guide(x).softmax(-1).gather(1, labels[:, None]).squeeze(1)  # noqa: E731
    views = shifted_views(images)
    return {"guide_prob": float(prob(images).mean()),
            "guide_prob_shifted": float(torch.stack([prob(v) for v in views]).mean())}


def run(model, s: dict, method: str, items: list[dict]) -> Tensor:
    if method == "doodl":
        return run_doodl(build_module(model, guide_loss(s), s), items, s["batch_size"])[0]
    module = build_module(model, guide_loss(s), {**s, "guidance_scale": s["onestep_guidance_scale"]})
    return run_baseline(module, items, "onestep", s["batch_size"])


def main(args: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--items", type=int, default=16, help="unseen items of the tuning seeds per configuration")
    p.add_argument("--steps", type=int, default=BASE["num_steps"])
    p.add_argument("--iterations", type=int, default=BASE["iterations"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=OUT)
    a = p.parse_args(args)
    if a.threads:
        torch.set_num_threads(a.threads)
    t_start = time.perf_counter()
    model, guide = DigitsStableDiffusion(), assets.load_classifier()
    items = make_items(0, a.items, SWEEP_SEED0)
    labels = torch.tensor([it["target_class"] for it in items])
    base = dict(BASE, num_steps=a.steps, iterations=a.iterations, cutouts=None, min_cut=None, onestep_guidance_scale=None)
    tried = []

    def trial(sweep: str, method: str, over: dict) -> dict:
        t0 = time.perf_counter()
        images = run(model, {**base, **over}, method, items)
        row = {"sweep": sweep, "method": method, "overrides": over, **guide_scores(guide, images, labels),
               "seconds": round(time.perf_counter() - t0, 1)}
        tried.append(row)
        print(f"{sweep} {method} {over}: guide prob {row['guide_prob']:.3f}, shifted views "
              f"{row['guide_prob_shifted']:.3f} ({row['seconds']} s)", flush=True)
        return row

    crops = [trial("crops", "doodl", {"cutouts": CROPS if m else None, "min_cut": m}) for m in MIN_CUTS]
    crops.append(trial("crops", "doodl", {"cutouts": None, "min_cut": None, "target_score": None}))  # the control
    best = max(crops, key=lambda r: r["guide_prob_shifted"])["overrides"]
    base.update(best)
    scales = [trial("scale", "onestep", {"onestep_guidance_scale": g}) for g in ONESTEP_SCALES]
    chosen = {**best, **max(scales, key=lambda r: r["guide_prob_shifted"])["overrides"]}
    real_images, real_labels = assets.test_set()
    keep = real_labels >= 8
    results = {
        "command": " ".join(["python benchmarks/digits_sweep.py", *map(str, sys.argv[1:] if args is None else args)]),
        "criterion": "mean guide probability of the target over 9 one-pixel-shifted views (never the judge)",
        "seeds": f"{SWEEP_SEED0}..{SWEEP_SEED0 + a.items - 1} (unseen digits 8 and 9)",
        "real_unseen_reference": guide_scores(guide, real_images[keep], real_labels[keep]),
        "base_settings": {**BASE, "num_steps": a.steps, "iterations": a.iterations},
        "tried": tried, "chosen": chosen, "manual": MANUAL_TUNING,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "digits_sweep.json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"chosen: {chosen}")
    return results


if __name__ == "__main__":
    main()
