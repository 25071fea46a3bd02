"""The guide's probability of each item's target on the images of a compare run and on their
1-pixel shifted views (benchmarks/digits_sweep.py's criterion: an adversarial pattern tied to one
pixel grid tends not to survive a shift), per method. Guide only; the judge is not read.

    python benchmarks/results/digits_flow/shifted_views.py [RUN_FOLDER] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # benchmarks/, for digits_sweep

from digits_sweep import guide_scores  # noqa: E402

from doodl.digits import assets  # noqa: E402


def method_images(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, 16, 16) images in [0, 1] and (N,) targets of one method's folder, sorted by item id."""
    images, targets = [], []
    for meta in sorted(folder.glob("*.json")):
        info = json.loads(meta.read_text())
        if info["status"] not in ("done", "stopped_early"):
            continue
        pixels = np.asarray(Image.open(meta.with_suffix(".png")).convert("RGB"), dtype=np.float32) / 255.0
        images.append(torch.from_numpy(pixels).permute(2, 0, 1))
        targets.append(int(info["item"]["target_class"]))
    return torch.stack(images), torch.tensor(targets)


def main(args: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, nargs="?", default=HERE / "tuning")
    parser.add_argument("--out", type=Path, default=HERE / "tuning_views.json")
    ns = parser.parse_args(args)
    guide = assets.load_classifier()
    out = {}
    for folder in sorted(p for p in (ns.run / "methods").iterdir() if p.is_dir()):
        images, targets = method_images(folder)
        out[folder.name] = {"n": len(targets), **guide_scores(guide, images, targets)}
    ns.out.write_text(json.dumps({"run": str(ns.run), "guide_scores": out}, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
