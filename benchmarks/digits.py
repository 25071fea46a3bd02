"""Digits benchmark (issue 5, part 6): unguided, one-step guidance and DOODL on the same items and seeds.

Items: ``caption(label)`` with target_class = label, one distinct seed per item, in two groups:
"seen" (digits 0-7, which the tiny Stable Diffusion was trained on) and "unseen" (8 and 9, which
it never saw). Every method starts from the same seeded noise with the same noise model:
    plain    EDICT sample, no guidance (``doodl.app.baseline``, "plain")
    onestep  DDIM with one-step classifier guidance at every step (SPEC.md section 7)
    doodl    the DOODL loop of the app (``DOODL.images_and_loss``: EDICT chain with the
             "invert" gradient, decode, DigitClassifierLoss, then the per-item DOODLOptimizer),
             the iterate the guide scores best (best_by="score": mean over a fixed set of crops), as ``doodl fit`` reports it
Per method and group:
    guide_prob   guidance classifier probability of the target (bootstrap 95% CI)
    guide_acc    argmax of the guidance classifier == label (Wilson 95% CI)
    judge_acc    argmax of the independent judge == label (Wilson 95% CI); never used for tuning
    clip         tiny-CLIP cosine of image and caption embeddings (bootstrap 95% CI)
    gap          adversarial gap guide_acc - judge_acc (paired bootstrap 95% CI)
    kid, fid     on the judge's penultimate features against the real test digits of the group
                 (torchmetrics); the "real" row holds real-vs-real (two halves of the test digits)
Hyperparameters are tuned on the guide only, over a separate seed range, by benchmarks/digits_sweep.py.

    python benchmarks/digits.py [--n-seen 104] [--n-unseen 100] [--steps T] [--iterations N] [--cutouts N --min-cut PX] [--out DIR]

Writes DIR/digits.json, DIR/digits.md (table) and DIR/digits.png (bar chart, 95% CIs).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Sequence

import torch

from doodl.digits import assets
from doodl.digits.world import DigitsStableDiffusion
from doodl.eval.digits import Scorers, feature_distances
from doodl.eval.report import METHODS, draw_chart, markdown
from doodl.eval.runs import GROUPS, build_module, guide_loss, make_items, run_baseline, run_doodl
from doodl.eval.stats import summarize

SEED0 = 0  # evaluation seeds: SEED0, SEED0 + 1, ...
OUT = Path(__file__).resolve().parent / "results"


# ---- main --------------------------------------------------------------------------------------
DEFAULT_SETTINGS = dict(num_steps=10, iterations=20, batch_size=52, cfg_scale=7.5, guidance_scale=1.0,
                        onestep_guidance_scale=3.0, clip_grad_val=0.3, perturb=1e-3, renormalize=True,
                        target_score=0.9, cutouts=16, min_cut=8, cut_power=0.3, best_by="score")

# How these were chosen: benchmarks/digits_sweep.py (results/digits_sweep.json), on the tuning
# seeds only and by the guidance classifier only (never the judge).
SWEEP_FILE = OUT / "digits_sweep.json"


def parse(args: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-seen", type=int, default=104, help="items on digits 0-7 (13 per digit)")
    p.add_argument("--n-unseen", type=int, default=100, help="items on digits 8 and 9 (50 each)")
    p.add_argument("--steps", type=int, default=DEFAULT_SETTINGS["num_steps"], help="EDICT/DDIM steps T")
    p.add_argument("--iterations", type=int, default=DEFAULT_SETTINGS["iterations"], help="DOODL iterations")
    p.add_argument("--batch-size", type=int, default=DEFAULT_SETTINGS["batch_size"])
    for key in ("guidance_scale", "onestep_guidance_scale", "clip_grad_val", "perturb"):
        p.add_argument("--" + key.replace("_", "-"), type=float, default=DEFAULT_SETTINGS[key])
    p.add_argument("--target-score", type=float, default=DEFAULT_SETTINGS["target_score"],
                   help="DOODL stops an item once its guide prob reaches this (the app's target_score)")
    p.add_argument("--no-renormalize", action="store_true")
    p.add_argument("--cutouts", type=int, default=DEFAULT_SETTINGS["cutouts"],
                   help="random crops per image for the guidance classifier, both guided methods (SPEC section 7)")
    p.add_argument("--min-cut", type=int, default=DEFAULT_SETTINGS["min_cut"], help="smallest crop side in pixels")
    p.add_argument("--cut-power", type=float, default=DEFAULT_SETTINGS["cut_power"])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--out", type=Path, default=OUT)
    return p.parse_args(args)


def main(args: Sequence[str] | None = None) -> dict:
    a = parse(args)
    if a.threads:
        torch.set_num_threads(a.threads)
    t_start = time.perf_counter()
    s = dict(DEFAULT_SETTINGS, num_steps=a.steps, iterations=a.iterations, batch_size=a.batch_size,
             guidance_scale=a.guidance_scale, onestep_guidance_scale=a.onestep_guidance_scale,
             clip_grad_val=a.clip_grad_val, perturb=a.perturb, renormalize=not a.no_renormalize,
             target_score=a.target_score, cutouts=a.cutouts, min_cut=a.min_cut, cut_power=a.cut_power)
    model = DigitsStableDiffusion()
    tuning = {"file": str(SWEEP_FILE.relative_to(OUT.parent.parent)),
              "chosen": json.loads(SWEEP_FILE.read_text()).get("chosen") if SWEEP_FILE.is_file() else None}
    items = make_items(a.n_seen, a.n_unseen, SEED0)
    labels = torch.tensor([it["target_class"] for it in items])
    timing, images = {}, {}
    for method in METHODS:
        t0 = time.perf_counter()
        if method == "doodl":
            images[method], trace, ran = run_doodl(build_module(model, guide_loss(s), s), items, s["batch_size"])
        else:
            scale = s["onestep_guidance_scale"] if method == "onestep" else s["guidance_scale"]
            module = build_module(model, guide_loss(s), {**s, "guidance_scale": scale})
            images[method] = run_baseline(module, items, method, s["batch_size"])
        timing[f"{method}_s"] = time.perf_counter() - t0
        print(f"{method}: {timing[f'{method}_s']:.1f} s", flush=True)

    scorers = Scorers()
    real_images, real_labels = assets.test_set()
    groups: dict[str, dict] = {}
    for group, digits in GROUPS.items():
        mask = torch.tensor([it["group"] == group for it in items])
        if not bool(mask.any()):
            continue
        rmask = torch.isin(real_labels, torch.tensor(digits))
        real, rlab = real_images[rmask], real_labels[rmask]
        half = len(real) // 2
        perm = torch.randperm(len(real), generator=torch.Generator().manual_seed(0))
        subset = max(2, min(half, int(mask.sum()), 100))
        rows = {}
        for method in METHODS:
            rows[method] = summarize(scorers.per_item(images[method][mask], labels[mask]))
            rows[method]["distance"] = feature_distances(scorers, images[method][mask], real, subset)
        rows["real"] = summarize(scorers.per_item(real, rlab))
        rows["real"]["distance"] = feature_distances(scorers, real[perm[half:]], real[perm[:half]], subset)
        tr = torch.tensor(trace)[mask]
        rows["doodl"]["guide_prob_by_iteration"] = [round(float(v), 4) for v in tr.mean(0)]
        it_ran = torch.tensor(ran, dtype=torch.float64)[mask]
        rows["doodl"]["iterations_run"] = {"mean": float(it_ran.mean()), "max": int(it_ran.max()),
                                           "stopped_early": int((it_ran < s["iterations"]).sum())}
        groups[group] = rows

    timing["total_s"] = time.perf_counter() - t_start
    results = {
        "benchmark": "digits: unguided vs one-step guidance vs DOODL (issue 5, part 6)",
        "command": " ".join(["python benchmarks/digits.py", *map(str, sys.argv[1:] if args is None else args)]),
        "settings": {**s, "grad_mode": "invert", "mix": 0.93, "leapfrog": True, "tied": True, "momentum": 0.9,
                     "grad_scale": 0.5, "loss_on": "both", "decode_clamp": "none",
                     "n_seen": a.n_seen, "n_unseen": a.n_unseen, "seeds": f"{SEED0}..{SEED0 + len(items) - 1}"},
        "tuning": tuning,
        "timing": timing,
        "machine": {"cpus": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version()},
        "groups": groups,
        "notes": "gap = guide_acc - judge_acc; 'real' row: classifiers on real test digits of the group and "
                 "KID/FID of one half of them against the other half (real-vs-real reference).",
    }
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "digits.json").write_text(json.dumps(results, indent=1) + "\n")
    (a.out / "digits.md").write_text(markdown(results))
    draw_chart(results, a.out / "digits.png")
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
