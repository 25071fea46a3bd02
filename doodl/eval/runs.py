"""The digits benchmark's items and runs: each method from the same seeded noise, through the
app's own code (``doodl.app.baseline.predict_images`` and ``DOODL.iterate``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from doodl.app.baseline import predict_images
from doodl.app.module import DOODL
from doodl.digits.data import SEEN, caption
from doodl.digits.world import DigitClassifierLoss

GROUPS = {"seen": tuple(SEEN), "unseen": (8, 9)}


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
    """The guidance loss of both guided methods: the digit classifier with the settings' crops."""
    return DigitClassifierLoss(cutouts=s["cutouts"], min_cut=s["min_cut"], cut_power=s["cut_power"])


def build_module(model: nn.Module, guidance: nn.Module, s: dict) -> DOODL:
    return DOODL(model, guidance, iterations=s["iterations"], num_steps=s["num_steps"], grad_mode="invert",
                 cfg_scale=s["cfg_scale"], guidance_scale=s["guidance_scale"], clip_grad_val=s["clip_grad_val"],
                 perturb=s["perturb"], renormalize=s["renormalize"], target_score=s["target_score"], best_by=s["best_by"],
                 height=16, width=16)


def run_baseline(module: DOODL, items: list[dict], method: str, batch_size: int) -> Tensor:
    out = []
    for start in range(0, len(items), batch_size):
        out.append(predict_images(module, items[start:start + batch_size], method)["images"])
    return torch.cat(out).clamp(0, 1)


def run_doodl(module: DOODL, items: list[dict], batch_size: int) -> tuple[Tensor, list[list[float]], list[int]]:
    """Result images (N, 3, H, W; the module's ``best_by`` rule), the guide score of every item at
    every iteration (the last one carried on after an early stop) and the iterations each item
    ran. Each iteration is the app's own (``DOODL.iterate``); an item stops once its score reaches
    ``target_score``, so the budget goes to the items that need it."""
    iterations, images, trace, ran = module.hparams.iterations, [], [], []
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        states = [module.state(it) for it in batch]
        scores_of: list[list[float]] = [[] for _ in batch]
        for _ in range(iterations):
            active = [j for j, st in enumerate(states) if not st.stopped_early]
            if not active:
                break
            _, _, scores = module.iterate([batch[j] for j in active], [states[j] for j in active], Tensor.backward)
            for jj, j in enumerate(active):
                scores_of[j].append(float(scores["score"][jj]))
        trace += [sc + [sc[-1]] * (iterations - len(sc)) for sc in scores_of]
        ran += [st.iterations for st in states]
        failed = [st.id for st in states if not st.has_result]
        if failed:  # no finite iterate: nothing to judge, and nothing to quietly count as an image
            raise RuntimeError(f"DOODL found no finite iterate for {len(failed)} item(s) ({', '.join(failed)}): "
                               "the benchmark's settings give non-finite latents or losses; fix them before scoring")
        images += [st.best_image for st in states]
        for st in states:  # free the latents and momentum of finished items
            module.states.pop(st.id)
        print(f"  doodl items {start + len(batch)}/{len(items)}", flush=True)
    return torch.stack(images).clamp(0, 1), trace, ran
