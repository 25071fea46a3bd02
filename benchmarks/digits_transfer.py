"""Fifth tuning round of the digits default (issue 13), on the guide's side only and on tuning seeds:
do the unseen images hold for guides retrained from the guide's own recipe?

Why: the diagnosis on tuning seeds (``digits_diagnose.py``, which read the judge to explain and chose
nothing) found that the third round's criteria, robustness to views of the one guide and KID on its
features, preferred settings the judge rates lower: a pattern can hold for one network under every
view and still be that network's own. This round was designed after that diagnosis; its rule was
fixed before it ran, and it reads nothing of the judge (not its outputs, its architecture or its data
split B). Its criterion:

    transfer  unseen items: the mean probability of the target under K guides retrained by the
              guide's own recipe (``doodl.digits.train_guidance.train_classifier``: the guide's
              architecture, split A, its 800 steps) from other seeds (RETRAIN_SEEDS; the guide's is 1),
              over the image and the 14 held-out views of ``digits_robust.held_out_views``

Grid: AdamW's lr in LRS x the chain's cfg in CFGS (the first round's choice, lr 1 / cfg 2, and the
third's, lr 4 / cfg 1, are corners), the rest as the fourth round chose (benchmarks/results/
digits_steps.json). Rule: the highest ``transfer``. Recorded beside it: ``held_out`` and the
guide-feature KIDs of the earlier rounds, the seen digits' KID, unguided and one-step guidance at each
cfg, and the retrained guides' accuracy on the real test digits and their ``transfer`` on the real 8s and 9s.

    python benchmarks/digits_transfer.py [--items 32] [--seen-items 48] [--threads N] [--out FILE]

Unseen items: 32 on tuning seeds 100128.. (fresh: no earlier round's); seen: the second round's 48.
Writes benchmarks/results/digits_transfer.json.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from digits_natural import kid_unseen  # noqa: E402
from digits_robust import Trials, held_out_views  # noqa: E402
from digits_steps import OUT as STEPS, start_from  # noqa: E402
from digits_sweep import SWEEP_SEED0  # noqa: E402
from digits_tune import begin, finish, tuning_parser  # noqa: E402

from doodl.digits import assets, data  # noqa: E402
from doodl.digits.train_guidance import accuracy, train_classifier  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "digits_transfer.json"

LRS = (1.0, 2.0, 4.0)
CFGS = (2.0, 1.0)
RETRAIN_SEEDS = (1001, 1002, 1003)
GUIDE_STEPS = 800  # the guide's own training steps (doodl.digits.train.FULL)
UNSEEN_SEED0, SEEN_SEED0 = SWEEP_SEED0 + 128, SWEEP_SEED0 + 16


def retrained_guides(seeds: Sequence[int] = RETRAIN_SEEDS, steps: int = GUIDE_STEPS) -> list[nn.Module]:
    """Guides trained as the guide was (its architecture, split A, all ten digits), from ``seeds``;
    the global torch seeds are restored afterwards."""
    digits, idx = data.load(), torch.tensor(assets.split()["A"])
    with torch.random.fork_rng(devices=[]):  # the CPU generator; the guides train on the CPU
        return [train_classifier(digits.images[idx], digits.labels[idx], steps, s) for s in seeds]


@torch.no_grad()
def transfer_score(guides: Sequence[nn.Module], images: Tensor, labels: Tensor) -> float:
    """The target's mean probability under each of ``guides`` over the image and its held-out views."""
    views = held_out_views(images)
    return float(torch.stack([g(v).softmax(-1).gather(1, labels[:, None]).squeeze(1)
                              for g in guides for v in views]).mean())


def main(args: Sequence[str] | None = None) -> dict:
    p = tuning_parser(__doc__, OUT, None, None, items=32)
    p.add_argument("--start", type=Path, default=STEPS, help="the fourth round's results")
    p.add_argument("--guide-steps", type=int, default=GUIDE_STEPS, help="training steps of each retrained guide")
    a = p.parse_args(args)
    start = start_from(a.start, "digits_steps.py (the fourth round)")
    start.update({k: v for k, v in (("num_steps", a.steps), ("iterations", a.iterations)) if v is not None})
    lrs, cfgs, seeds = (LRS[::2], CFGS[:1], RETRAIN_SEEDS[:1]) if a.quick else (LRS, CFGS, RETRAIN_SEEDS)
    t_start, model, guide, unseen, seen = begin(a, UNSEEN_SEED0, SEEN_SEED0)
    guides = retrained_guides(seeds, a.guide_steps)
    labels = torch.tensor([it["target_class"] for it in unseen])
    extra = {"transfer": lambda images: transfer_score(guides, images, labels), **kid_unseen(guide)}
    trial = Trials(model, guide, unseen, seen, dict(start), unseen_extra=extra)

    real, real_labels = assets.test_set()
    unseen_real = real_labels >= 8
    reference = {"retrained_test_accuracy": [accuracy(g, real, real_labels) for g in guides],
                 "real_unseen_transfer": transfer_score(guides, real[unseen_real], real_labels[unseen_real])}
    rows = []
    for cfg in cfgs:
        for lr in lrs:
            over = {"lr": lr, "cfg_scale": cfg}
            rows.append((over, trial("grid", "doodl", over, unseen)["transfer"]))
            trial("grid", "doodl", over, seen)
        for method in ("plain", "onestep"):
            trial("grid", method, {"cfg_scale": cfg}, unseen)
            trial("grid", method, {"cfg_scale": cfg}, seen)
    chosen = max(rows, key=lambda r: r[1])[0]  # the first on a tie
    return finish("digits_transfer.py", args, a.out, t_start, {
        "criteria": {"transfer": f"mean target probability under {len(guides)} guides retrained by the guide's recipe "
                                 f"(seeds {list(seeds)}, {a.guide_steps} steps, split A) over the image and the 14 "
                                 "held-out views, unseen 8/9",
                     "held_out": "as in digits_robust.json", "kid_unseen": "as in digits_natural.json",
                     "kid": "as in digits_robust.json, seen items", "rule": "highest transfer"},
        "seeds": f"unseen {UNSEEN_SEED0}..{UNSEEN_SEED0 + a.items - 1}, seen {SEEN_SEED0}.."
                 f"{SEEN_SEED0 + a.seen_items - 1} (tuning seeds; the study uses 0-203)",
        "start": start, "reference": reference, "tried": trial.tried, "chosen": chosen,
    })


if __name__ == "__main__":
    main()
