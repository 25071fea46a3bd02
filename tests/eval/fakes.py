"""Fabricated (item, method) records of the runner's contract: random 8-bit images (or real test
digits), seeded, with failed items where asked."""

from __future__ import annotations

import torch

from doodl.digits import assets


def eight_bit(images: torch.Tensor) -> torch.Tensor:
    return (images.clamp(0, 1) * 255).round() / 255


def make_records(methods=("plain", "doodl"), n_per_group=6, groups=("seen", "unseen"), failed=(), real=False,
                 size=16, seed=0):
    """Records for every (item, method); ``failed``: (id, method) pairs with no image; ``real``:
    the images are test digits of the item's class (so classifiers have something to get right)."""
    g = torch.Generator().manual_seed(seed)
    test_images, test_labels = assets.test_set() if real else (None, None)
    items, k = [], 0
    for group in groups:
        labels = (0, 3, 5, 7) if group == "seen" else (8, 9)
        for i in range(n_per_group):
            label = labels[i % len(labels)]
            items.append({"id": f"{group}-{label}-s{k}", "prompt": f"a handwritten digit {label}", "seed": k,
                          "target_class": label, "group": group})
            k += 1
    records = []
    for m_idx, method in enumerate(methods):
        for j, item in enumerate(items):
            status = ("done", "stopped_early", "unfinished")[(j + m_idx) % 3]
            if (item["id"], method) in failed:
                image, status = None, "failed"
            elif real:
                pool = test_images[test_labels == item["target_class"]]
                image = pool[int(torch.randint(len(pool), (1,), generator=g))]
                image = eight_bit(image + 0.3 * m_idx * torch.rand(image.shape, generator=g))
            else:
                image = eight_bit(torch.rand(3, size, size, generator=g))
            records.append({"id": item["id"], "method": method, "group": item["group"], "status": status,
                            "item": dict(item), "image": image,
                            "cost": {"evals_graph": 40 * m_idx + j, "evals_plain": 20, "wall_s": 0.5 + j / 10}})
    return records
