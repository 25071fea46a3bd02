"""The runs of the digits tuning sweep (``benchmarks/digits_sweep.py``): items on tuning seeds and
each method from the same seeded noise, through the runner (``doodl.run``); the evaluation itself
is ``doodl compare -c configs/digits_compare.yaml``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from doodl.run.context import Chain, RunContext
from doodl.run.methods import OneStep, Unguided
from doodl.run.runner import DOODLRunner, paper_update
from doodl.digits.data import caption
from doodl.digits.world import DigitClassifierLoss
from doodl.eval.digits_parts import GROUPS
from doodl.guidance.cutouts import Cutouts


def make_items(n_seen: int, n_unseen: int, seed0: int = 0) -> list[dict]:
    """Labels cycle through each group's digits; every item has its own seed."""
    items, seed = [], seed0
    for group, n in (("seen", n_seen), ("unseen", n_unseen)):
        labels = GROUPS[group]
        for k in range(n):
            label = labels[k % len(labels)]
            items.append({"id": f"{group}-{label}-{seed}", "prompt": caption(label), "target_class": label,
                          "seed": seed, "group": group})
            seed += 1
    return items


def guide_loss(s: dict) -> DigitClassifierLoss:
    """The guidance loss of both guided methods: the digit classifier with the settings' crops
    (``cutouts`` crops per image of ``min_cut``-16 px, ``cut_power``; no crops when ``cutouts`` is None);
    ``score_on`` (default "crops"): what the score of the early stop and the best iterate reads."""
    if not s["cutouts"]:
        if s["min_cut"] is not None:
            raise ValueError(f"min_cut={s['min_cut']} is set but cutouts is off: set cutouts=<crops per image> or drop min_cut")
        return DigitClassifierLoss(cutouts=None)
    return DigitClassifierLoss(cutouts=Cutouts(n=s["cutouts"], power=s["cut_power"], min_size=s["min_cut"]),
                               score_on=s.get("score_on", "crops"))


def build_module(model: nn.Module, guidance: nn.Module, s: dict) -> DOODLRunner:
    """The benchmark's DOODL on a 16x16 chain (``doodl.run.runner.DOODLRunner``); ``s["update"]``, where
    set, is the update factory (``doodl.core.updates.update_preset``), else the paper's with the settings';
    ``s["accept_score"]``, where set, keeps a start whose image already reaches it."""
    ctx = RunContext(model, guidance, Chain(num_steps=s["num_steps"], cfg_scale=s["cfg_scale"], height=16, width=16))
    update = s.get("update") or paper_update(clip_grad_val=s["clip_grad_val"], perturb=s["perturb"],
                                             renormalize=s["renormalize"])
    return DOODLRunner(ctx, iterations=s["iterations"], grad_mode="invert", guidance_scale=s["guidance_scale"],
                       update=update, target_score=s["target_score"], best_by=s["best_by"],
                       accept_score=s.get("accept_score"))


def run_baseline(module: DOODLRunner, items: list[dict], method: str, batch_size: int) -> Tensor:
    """``method`` "plain" (unguided) or "onestep" (at the runner's guidance scale) on every item."""
    m = Unguided() if method == "plain" else OneStep(module.guidance_scale)
    out = []
    for start in range(0, len(items), batch_size):
        out += [r.image for r in m.run(module.ctx, items[start:start + batch_size])]
    if any(im is None for im in out):
        raise RuntimeError(f"{method} gave a non-finite image: fix the benchmark's settings before scoring")
    return torch.stack(out).clamp(0, 1)


def run_doodl(module: DOODLRunner, items: list[dict], batch_size: int) -> tuple[Tensor, list[list[float]], list[int]]:
    """Result images (N, 3, H, W; the runner's ``best_by`` rule), the guide score of every item at
    every iteration (the last one carried on after an early stop) and the iterations each item
    ran. An item stops once its score reaches ``target_score``, so the budget goes to the items
    that need it."""
    iterations, images, trace, ran = module.iterations, [], [], []
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        scores_of: dict[str, list[float]] = {it["id"]: [] for it in batch}

        def keep(out) -> None:
            for jj, item_id in enumerate(out.ids):
                scores_of[item_id].append(float(out.scores["score"][jj]))

        results = module.run(batch, keep)
        trace += [sc + [sc[-1]] * (iterations - len(sc)) for sc in scores_of.values()]
        ran += [r.iterations for r in results]
        failed = [r.id for r in results if r.failed]
        if failed:  # no finite iterate: nothing to judge, and nothing to quietly count as an image
            raise RuntimeError(f"DOODL found no finite iterate for {len(failed)} item(s) ({', '.join(failed)}): "
                               "the benchmark's settings give non-finite latents or losses; fix them before scoring")
        images += [r.image for r in results]
        for r in results:  # free the latents and momentum of finished items
            module.release(r.id)
        print(f"  doodl items {start + len(batch)}/{len(items)}", flush=True)
    return torch.stack(images).clamp(0, 1), trace, ran
