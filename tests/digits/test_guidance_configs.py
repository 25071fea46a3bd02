"""The paper's other three applications in the digits world (doodl.digits.guidance and
configs/digits_{clip,bold,personalize}.yaml): the losses rank real digits sensibly, and each config
runs through the app (shortened) and moves its own guidance score past the unguided start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from doodl.app.cli import main
from doodl.digits import assets, data
from doodl.digits.guidance import DigitBoldnessLoss, DigitCLIPTextLoss, DigitReferenceLoss, DigitsCLIP
from doodl.digits.train_guidance import clip_image_embeddings
from doodl.guidance import Cutouts

ROOT = Path(__file__).resolve().parents[2]
REFERENCES = sorted((ROOT / "configs" / "references").glob("nine_*.png"))
CROPS = Cutouts(n=8, min_size=12)  # the crops of configs/digits_clip.yaml and digits_personalize.yaml


@pytest.fixture(scope="module")
def test_set():
    return assets.test_set()


def first_of_each(images, labels, digits=range(10), skip=0):
    """(len(digits), 3, 16, 16): the (skip+1)-th test image of each digit."""
    return torch.stack([images[labels == d][skip] for d in digits])


def seeded(items, seed=0):
    """The items with their own crop generators (the same crops for every call)."""
    return [{**it, "generator": torch.Generator().manual_seed(seed + k)} for k, it in enumerate(items)]


# ---- the losses on real test digits ---------------------------------------------------------------


def test_digits_clip_is_the_shipped_model():
    clip, (model, tokenizer) = DigitsCLIP(), assets.load_clip()
    x = assets.test_set()[0][:4]
    torch.testing.assert_close(clip.embed_images(x), clip_image_embeddings(model, x))
    assert torch.equal(clip.tokenizer(["a handwritten digit nine"]), tokenizer(["a handwritten digit nine"]))


def test_text_loss_ranks_the_right_caption_first(test_set):
    images, labels = test_set
    x = first_of_each(images, labels)  # digits 0..9, one each
    loss = DigitCLIPTextLoss(cutouts=CROPS)
    captions = [data.caption(d) for d in range(10)]
    with torch.no_grad():  # (captions, images); the same crops for every caption
        table = torch.stack([loss(x, seeded([{"prompt": c}] * 10)) for c in captions])
    right = (table.argmin(0) == torch.arange(10)).sum().item()
    assert right >= 9, table.argmin(0)
    # the fixed prompt is the same as that prompt per item
    fixed = DigitCLIPTextLoss(prompt=captions[8], cutouts=CROPS)
    torch.testing.assert_close(fixed(x, seeded([{}] * 10)), table[8])


def test_boldness_loss_is_lower_for_thicker_strokes(test_set):
    images, labels = test_set
    x = first_of_each(images, labels)
    thicker = F.max_pool2d(x, 3, stride=1, padding=1)  # dilation: every stroke one pixel wider
    loss = DigitBoldnessLoss()
    with torch.no_grad():
        thin, bold = loss(x), loss(thicker)
    assert (bold < thin).sum() >= 8, (thin, bold)
    # the score is the shipped scorer head on the tiny CLIP embedding, clipped to [1, 10]
    model, _ = assets.load_clip()
    want = assets.load_scorer()(clip_image_embeddings(model, x)).clamp(1, 10)
    torch.testing.assert_close(loss.score(x), want, atol=1e-4, rtol=1e-4)
    # 'target' mode: a target at the digit's own score costs (almost) nothing
    target = DigitBoldnessLoss(mode="target")
    assert target(x[:2], [{"target_score": float(s)} for s in want[:2]]).abs().max() < 1e-3
    with pytest.raises(ValueError, match="mode"):
        DigitBoldnessLoss(mode="bolder")


def test_reference_loss_is_lower_for_the_same_class(test_set):
    assert len(REFERENCES) == 4, "configs/references/nine_*.png: run configs/references/make_references.py"
    images, labels = test_set
    loss = DigitReferenceLoss(reference_images=[str(p) for p in REFERENCES], cutouts=CROPS)
    means = {}
    with torch.no_grad():
        for d in range(10):
            x = images[labels == d][4:12]  # test digits other than the four references
            means[d] = loss(x, seeded([{}] * len(x))).mean().item()
    others = {d: m for d, m in means.items() if d != 9}
    assert means[9] < min(others.values()), means
    # per-item references (an item's "reference_images") give the same target
    x = images[labels == 9][4:6]
    per_item = DigitReferenceLoss(cutouts=CROPS)(x, seeded([{"reference_images": [str(p) for p in REFERENCES]}] * 2))
    torch.testing.assert_close(per_item, loss(x, seeded([{}] * 2)))


# ---- the configs through the app -------------------------------------------------------------------

CONFIGS = {"digits_clip": 4, "digits_bold": 6, "digits_personalize": 4}  # items in each prompt file


def fit(cfg: str, root: Path, *extra: str):
    return main([
        "fit", "-c", str(ROOT / "configs" / f"{cfg}.yaml"),
        "--model.iterations=3", "--model.num_steps=5",
        f"--trainer.default_root_dir={root}", "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.init_args.save_dir={root}", "--trainer.enable_progress_bar=false", *extra,
    ])


@pytest.mark.parametrize("cfg", sorted(CONFIGS))
def test_config_runs_and_beats_the_unguided_start(cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the prompt files' paths are relative to the repository root
    cli = fit(cfg, tmp_path)
    run = Path(cli.trainer.log_dir)
    n = CONFIGS[cfg]
    assert len(list((run / "final").glob("*.png"))) == n
    assert (run / "contact_sheet.png").is_file() and (run / "results.csv").is_file()
    rows = [json.loads(line) for line in (run / "compare" / "results.jsonl").read_text().splitlines()]
    score = {(r["id"], r["method"]): r["score"] for r in rows}
    ids = sorted({r["id"] for r in rows})
    assert len(ids) == n
    # the best iterate's guidance score (higher is better for all three) against the plain sample
    # from the same noise: better for most items, and better on average
    gains = [score[i, "doodl"] - score[i, "plain"] for i in ids]
    assert sum(g > 0 for g in gains) > n / 2, gains
    assert sum(gains) / n > 0, gains
