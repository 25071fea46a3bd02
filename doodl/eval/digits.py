"""Scorers of the digits world: the guidance classifier, the independent judge (never used for
guidance), the tiny CLIP, and KID / FID (torchmetrics) on the judge's penultimate features."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from doodl.digits import assets
from doodl.digits.data import caption


class JudgeFeatures(nn.Module):
    """The judge's penultimate activations (B, 128): the feature space of KID and FID."""

    def __init__(self, judge: nn.Module):
        super().__init__()
        self.judge = judge
        self.num_features = judge.net[-1].in_features

    def forward(self, images: Tensor) -> Tensor:
        return self.judge.net[:-1](2 * images.float().mean(dim=1) - 1).double()


class Scorers:
    """Loads the shipped guide, judge and tiny CLIP; ``per_item`` scores images against labels."""

    def __init__(self) -> None:
        self.guide, self.judge = assets.load_classifier(), assets.load_judge()
        self.clip, self.tokenizer = assets.load_clip()
        self.features = JudgeFeatures(self.judge).eval()
        v = self.clip.visual
        self.mean = torch.tensor(v.image_mean).view(1, 3, 1, 1)
        self.std = torch.tensor(v.image_std).view(1, 3, 1, 1)

    @torch.no_grad()
    def per_item(self, images: Tensor, labels: Tensor) -> dict[str, Tensor]:
        guide, judge = self.guide(images).softmax(-1), self.judge(images)
        img = self.clip.encode_image((images - self.mean) / self.std, normalize=True)
        txt = self.clip.encode_text(self.tokenizer([caption(int(y)) for y in labels]), normalize=True)
        return {"guide_prob": guide.gather(1, labels[:, None]).squeeze(1),
                "guide_correct": (guide.argmax(1) == labels).float(),
                "judge_correct": (judge.argmax(1) == labels).float(),
                "clip": (img * txt).sum(-1)}


def feature_distances(scorers: Scorers, fake: Tensor, real: Tensor, subset_size: int) -> dict[str, float]:
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    kid = KernelInceptionDistance(feature=scorers.features, subsets=100, subset_size=subset_size)
    fid = FrechetInceptionDistance(feature=scorers.features)
    for metric in (kid, fid):
        metric.update(real, real=True)
        metric.update(fake, real=False)
    with torch.random.fork_rng(devices=[]):  # KID draws its subsets from the global generator
        torch.manual_seed(0)
        kid_mean, kid_std = kid.compute()
    return {"kid": float(kid_mean), "kid_std": float(kid_std), "fid": float(fid.compute()), "kid_subset_size": subset_size,
            "n_fake": len(fake), "n_real": len(real)}
