"""The EDICT pair at the digits setting: how far x_0 and y_0 drift apart, what the paper's loss on
both decoded images (SPEC section 4) then reads, and what DOODL delivers with ``loss_on`` both / x.

Part 1, ``drift`` (unguided, no gradient): for T in STEPS and mixing weight p in MIXES (cfg 7.5),
    per item max |x_0 - y_0|, and the guide's loss (cross-entropy toward the item's digit, whole
    image) on D(x_0) and on D(y_0): the share of the pair's loss that the second image, never
    shown or saved, contributes.
Part 2, ``doodl`` (the settings of configs/digits_compare.yaml: 20 iterations, stop at guide score
    0.9, clip_grad_val 0.3, 16 crops of 8-16 px) with loss_on "both" (the paper) and "x", at T = 10
    and 20, on both groups: the guide's probability of the delivered image (x's) and on its 9
    one-pixel-shifted views (the robustness criterion of benchmarks/digits_sweep.py), how far the
    delivered image moved from the unguided one (pixels, no model), and iterations run.
Items: unseen 8/9 and seen 0-7 on the tuning seeds (from 100000; never the evaluation seeds);
only the guide is read, never the judge. Writes benchmarks/results/digits_pair.json.

    python benchmarks/digits_pair.py [--items 16] [--threads N] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from digits_sweep import SWEEP_SEED0, guide_scores  # noqa: E402

from doodl.digits import assets  # noqa: E402
from doodl.digits.world import DigitClassifierLoss, DigitsStableDiffusion  # noqa: E402
from doodl.eval.runs import make_items, run_doodl  # noqa: E402
from doodl.guidance.cutouts import Cutouts  # noqa: E402
from doodl.run.context import Chain, RunContext  # noqa: E402
from doodl.run.methods import Unguided  # noqa: E402
from doodl.run.runner import DOODLRunner, paper_update  # noqa: E402

STEPS = (10, 20, 50)
MIXES = (0.9, 0.93, 0.97)
DOODL_STEPS = (10, 20)
LOSS_ON = ("both", "x")


def context(model, guidance, T: int, mix: float = 0.93) -> RunContext:
    return RunContext(model, guidance, Chain(num_steps=T, mix=mix, cfg_scale=7.5, height=16, width=16))


@torch.no_grad()
def drift(model, items: list[dict], T: int, mix: float) -> dict:
    """The unguided pair's distance and the whole-image guide loss of each of its two images."""
    ctx = context(model, DigitClassifierLoss(cutouts=None), T, mix)
    starts = [ctx.start(it) for it in items]
    x, y = torch.cat([s[0] for s in starts]), torch.cat([s[1] for s in starts])
    x0, y0 = ctx.sampler.sample(ctx.eps_fn(items), x, y)
    gap = (x0 - y0).abs().flatten(1).amax(1)
    lx, ly = ctx.guidance(ctx.decode(x0), items), ctx.guidance(ctx.decode(y0), items)
    return {"T": T, "mix": mix, "max_abs_x0_minus_y0_mean": float(gap.mean()), "max_abs_x0_minus_y0_max": float(gap.max()),
            "loss_x_mean": float(lx.mean()), "loss_y_mean": float(ly.mean()),
            "share_of_y_in_pair_loss": float(ly.sum() / (lx + ly).sum())}  # of the summed pair loss


def doodl_row(model, guide, items: list[dict], T: int, loss_on: str, iterations: int = 20) -> dict:
    """DOODL's delivered images: the guide's probability (and on shifted views), and how far they
    moved from the unguided image of the same seed (mean absolute pixel difference, no model)."""
    loss = DigitClassifierLoss(cutouts=Cutouts(n=16, min_size=8))
    ctx = context(model, loss, T)
    runner = DOODLRunner(ctx, iterations=iterations, grad_mode="invert", loss_on=loss_on,
                         update=paper_update(clip_grad_val=0.3, perturb=1e-3), target_score=0.9, best_by="score")
    t0 = time.perf_counter()
    images, _, ran = run_doodl(runner, items, batch_size=len(items))
    plain = torch.stack([r.image for r in Unguided().run(ctx, items)]).clamp(0, 1)
    labels = torch.tensor([it["target_class"] for it in items])
    return {"T": T, "loss_on": loss_on, **guide_scores(guide, images, labels),
            "pixels_moved_from_unguided": float((images - plain).abs().mean()),
            "iterations_mean": sum(ran) / len(ran), "seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=16, help="items per group (unseen 8/9, seen 0-7)")
    ap.add_argument("--steps", type=int, nargs="+", default=list(STEPS))
    ap.add_argument("--doodl-steps", type=int, nargs="+", default=list(DOODL_STEPS))
    ap.add_argument("--iterations", type=int, default=20, help="DOODL iterations at most (configs/digits_compare.yaml: 20)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "digits_pair.json")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    t_start = time.perf_counter()
    model, guide = DigitsStableDiffusion(), assets.load_classifier()
    groups = {"unseen": make_items(0, a.items, SWEEP_SEED0), "seen": make_items(a.items, 0, SWEEP_SEED0)}
    result = {"command": "python benchmarks/digits_pair.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "seeds": f"tuning seeds from {SWEEP_SEED0}; only the guide is read", "drift": [], "doodl": []}
    for group, items in groups.items():
        for T in a.steps:
            for mix in MIXES:
                row = {"group": group, **drift(model, items, T, mix)}
                result["drift"].append(row)
                print(row, flush=True)
    for group, items in groups.items():
        for T in a.doodl_steps:
            for loss_on in LOSS_ON:
                row = {"group": group, **doodl_row(model, guide, items, T, loss_on, a.iterations)}
                result["doodl"].append(row)
                print(row, flush=True)
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {a.out}")
    return result


if __name__ == "__main__":
    main()
