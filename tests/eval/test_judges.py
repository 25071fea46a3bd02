"""Judges on the shipped digits weights: each against a direct computation, the bad-input errors,
KID / FID against their formulas, and construction from YAML (class_path / init_args)."""

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from doodl.digits import assets, data
from doodl.digits.world import DigitClassifierLoss
from doodl.eval.digits_parts import digits_judge_features, digits_test_images
from doodl.eval.distances import FID, KID
from doodl.eval.judges import ClassifierJudge, InkMass, Judge, LossJudge
from doodl.eval.registry import check_judges, find_judge, judge_class
from doodl.guidance import CallableLoss, Cutouts


@pytest.fixture(scope="module")
def digits():
    images, labels = assets.test_set()
    return images[:64], labels[:64]


def items_of(labels):
    return [{"target_class": int(y), "prompt": data.caption(int(y))} for y in labels]


def test_classifier_judge_is_argmax_accuracy_of_the_shipped_judge(digits):
    images, labels = digits
    judge = ClassifierJudge(assets.load_judge, name="judge")
    got = judge.score(images, items_of(labels))
    expected = (assets.load_judge()(images).argmax(1) == labels).float()
    assert torch.equal(got, expected)
    assert judge.kind == "accuracy" and judge.direction == "max"
    assert 0.8 < float(got.mean()) <= 1.0  # a good judge on real digits: the values can be wrong too
    wrong = judge.score(images, items_of((labels + 1) % 10))
    assert float(wrong.mean()) < 0.2


def test_classifier_judge_size_errors_name_the_fix(digits):
    images, labels = digits
    big = images.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # (B, 3, 32, 32), each pixel 2x2
    plain = ClassifierJudge(assets.load_classifier, name="guide")
    with pytest.raises(ValueError, match="set input_size .and resize: true. on the judge"):
        plain.score(big, items_of(labels))
    fixed = ClassifierJudge(assets.load_classifier, name="guide", input_size=16)
    with pytest.raises(ValueError, match="reads 16x16 images, got 32x32: set resize: true"):
        fixed.score(big, items_of(labels))
    assert "resize: true" in fixed.check({"target_class": 1}, 512, 512)[0]
    assert fixed.check({"target_class": 1}, 16, 16) == []
    assert "target_class" in fixed.check({"prompt": "x"}, 16, 16)[0]
    resized = ClassifierJudge(assets.load_classifier, name="guide", input_size=16, resize=True)
    assert torch.equal(resized.score(big, items_of(labels)), plain.score(images, items_of(labels)))  # area mean is exact here
    with pytest.raises(ValueError, match="resize needs the classifier's input_size"):
        ClassifierJudge(assets.load_classifier, resize=True)
    with pytest.raises(ValueError, match="not a class index"):
        plain.score(images[:1], [{"target_class": 12}])


def test_loss_judge_is_the_loss_score_with_its_direction(digits):
    images, labels = digits
    loss = DigitClassifierLoss(cutouts=Cutouts(n=4, min_size=8))
    judge = LossJudge(loss, name="guide")
    assert judge.direction == "max" and judge.kind == "mean"
    assert torch.equal(judge.score(images, items_of(labels)), loss.score(images, items_of(labels)))
    assert judge.check({"prompt": "x"}, 16, 16)[0].startswith("judge 'guide': no 'target_class'")
    assert judge.check({"target_class": 3}, 64, 64) == []  # the loss resizes to its input size
    with pytest.raises(ValueError, match="contradicts"):
        LossJudge(loss, name="guide", direction="min")
    directionless = CallableLoss(lambda x, items: x.mean((1, 2, 3)))
    directionless.score_direction = None
    with pytest.raises(ValueError, match="set direction: max or min"):
        LossJudge(directionless, name="mean_pixel")
    assert LossJudge(directionless, name="mean_pixel", direction="min").direction == "min"
    with pytest.raises(TypeError, match="GuidanceLoss"):
        LossJudge(torch.nn.Identity(), name="x")


def test_ink_mass_is_the_mean_luma_or_its_complement(digits):
    img = torch.zeros(2, 3, 4, 4)
    img[0, :, :2] = 1.0  # top half white
    img[1, 0] = 1.0  # pure red: luma 0.299
    light, dark = InkMass("light"), InkMass("dark", name="ink_dark")
    assert torch.allclose(light.score(img), torch.tensor([0.5, 0.299]))
    assert torch.allclose(dark.score(img), torch.tensor([0.5, 0.701]))
    assert torch.allclose(InkMass("light", threshold=0.25).score(img), torch.tensor([0.5, 1.0]))
    # the digits world's own ink (mean of the 8x8 original) is the same measure before upsampling
    digits_all = data.load()
    idx = torch.tensor(assets.split()["test"])
    ink16 = light.score(digits_all.images[idx])
    assert float(torch.corrcoef(torch.stack([ink16, digits_all.ink[idx]]))[0, 1]) > 0.99
    with pytest.raises(ValueError, match="ink must be 'light'"):
        InkMass("bold")
    with pytest.raises(ValueError, match="threshold"):
        InkMass("dark", threshold=1.5)


def test_registry_and_names():
    assert judge_class("classifier") is ClassifierJudge and judge_class("kid") is KID
    with pytest.raises(ValueError, match="unknown judge kind 'clasifier' .did you mean 'classifier'.*known: classifier, fid"):
        judge_class("clasifier")
    judges = [InkMass("light", name="ink"), InkMass("dark", name="ink2")]
    assert find_judge(judges, "ink2") is judges[1]
    with pytest.raises(ValueError, match="unknown judge 'guide'; known: ink, ink2"):
        find_judge(judges, "guide")
    with pytest.raises(ValueError, match="two judges are named 'ink'"):
        check_judges([InkMass("light", name="ink"), InkMass("dark", name="ink")])
    with pytest.raises(ValueError, match="reserved"):
        check_judges([InkMass("light", name="status")])
    with pytest.raises(ValueError, match="direction must be"):
        InkMass("light", direction="up")


def save_pngs(folder, images):
    folder.mkdir(parents=True)
    for i, im in enumerate(images):
        arr = (im.permute(1, 2, 0) * 255).round().byte().numpy()
        Image.fromarray(arr).save(folder / f"{i:03d}.png")


def features64(images):
    return digits_judge_features()(images).double().numpy()


def fid_formula(real, fake):
    from scipy import linalg

    mu_r, mu_f = real.mean(0), fake.mean(0)
    s_r, s_f = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    root = linalg.sqrtm(s_r @ s_f).real
    return float(((mu_r - mu_f) ** 2).sum() + np.trace(s_r + s_f - 2 * root))


def kid_formula(real, fake):
    """Unbiased MMD^2, kernel (x.y / D + 1)^3, of two sets of m features (every subset is the whole set)."""
    d, m = real.shape[1], len(real)
    k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = k(real, real), k(fake, fake), k(real, fake)
    return float((kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.sum() / m**2)


@pytest.mark.filterwarnings("ignore:Matrix is singular")  # dead ReLU features: scipy's sqrtm still converges
def test_kid_and_fid_match_their_formulas(tmp_path):
    real = digits_test_images("seen")[:130]
    save_pngs(tmp_path / "refs", real)
    fake = (digits_test_images("seen")[-130:] * 0.8 + 0.1).mul(255).round().div(255)
    kid = KID(digits_judge_features, reference_dir=str(tmp_path / "refs"), subsets=5)
    fid = FID(digits_judge_features, reference_dir=str(tmp_path / "refs"))
    refs = kid.references(None)
    assert torch.allclose(refs, real, atol=0.5 / 255)  # the PNGs hold the 8-bit images
    fr, ff = features64(refs), features64(fake)
    got_kid = kid.compute(fake, None)
    assert got_kid["subset_size"] == 130 and got_kid["std"] < 1e-9 * max(1.0, abs(got_kid["value"]))
    assert got_kid["value"] == pytest.approx(kid_formula(fr, ff), rel=1e-6)
    assert fid.compute(fake, None)["value"] == pytest.approx(fid_formula(fr, ff), rel=1e-4)
    assert fid.compute(refs, None)["value"] < 1e-3 * fid.compute(fake, None)["value"]
    assert kid.check({"group": "seen"}, 16, 16) == []
    assert "generated ones 32x32" in kid.check({}, 32, 32)[0]


def test_kid_is_seeded_and_too_few_images_give_nan_with_a_note():
    kid = KID(digits_judge_features, reference_loader=digits_test_images, subsets=20, subset_size=10, seed=3)
    fake = digits_test_images("unseen")[:30]
    state = torch.random.get_rng_state()
    first, second = kid.compute(fake, None), kid.compute(fake, None)
    assert first == second and first["std"] > 0
    assert torch.equal(state, torch.random.get_rng_state())  # the global generator is left as it was
    assert KID(digits_judge_features, reference_loader=digits_test_images, subsets=20, subset_size=10,
               seed=4).compute(fake, None)["value"] != first["value"]
    small = kid.compute(fake[:5], None)
    assert np.isnan(small["value"]) and "no more than either set" in small["note"]
    one = FID(digits_judge_features, reference_loader=digits_test_images).compute(fake[:1], None)
    assert np.isnan(one["value"]) and "at least 2" in one["note"]


def test_references_per_group_and_reference_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="reference folder .*nowhere.* not found"):
        KID(digits_judge_features, reference_dir=str(tmp_path / "nowhere"))
    save_pngs(tmp_path / "refs" / "seen", digits_test_images("seen")[:8])
    with pytest.raises(FileNotFoundError, match="set by_group: true"):
        FID(digits_judge_features, reference_dir=str(tmp_path / "refs"))
    with pytest.raises(ValueError, match="exactly one of reference_dir"):
        FID(digits_judge_features)
    by_group = FID(digits_judge_features, reference_dir=str(tmp_path / "refs"), by_group=True)
    assert len(by_group.references("seen")) == 8
    assert "no reference folder" in by_group.check({"group": "unseen"}, 16, 16)[0]
    assert "has no 'group'" in by_group.check({}, 16, 16)[0]
    loader = FID(digits_judge_features, reference_loader=digits_test_images, by_group=True)
    labels = assets.test_set()[1]
    assert len(loader.references("unseen")) == int(((labels == 8) | (labels == 9)).sum())
    bad = FID(digits_judge_features, reference_loader=lambda: torch.rand(4, 16, 16))
    assert "must be a float (N, 3, H, W)" in bad.check({}, 16, 16)[0]
    with pytest.raises(TypeError, match="set-level"):
        loader.score(torch.rand(2, 3, 16, 16), None)


def test_judges_from_yaml_with_class_paths(digits):
    from jsonargparse import ArgumentParser

    config = yaml.safe_load("""
judges:
  - class_path: doodl.eval.judges.ClassifierJudge
    init_args: {model: doodl.digits.assets.load_judge, name: judge}
  - class_path: doodl.eval.judges.LossJudge
    init_args:
      name: guide
      loss: {class_path: doodl.digits.world.DigitClassifierLoss}
  - class_path: doodl.eval.judges.InkMass
    init_args: {ink: light}
  - class_path: doodl.eval.judges.KID
    init_args:
      features: doodl.eval.digits_parts.digits_judge_features
      reference_loader: doodl.eval.digits_parts.digits_test_images
      by_group: true
      subset_size: 10
""")
    parser = ArgumentParser()
    parser.add_argument("--judges", type=list[Judge])
    judges = parser.instantiate(parser.parse_object(config)).judges
    assert [j.name for j in judges] == ["judge", "guide", "ink_mass", "kid"]
    assert [j.kind for j in judges] == ["accuracy", "mean", "mean", "set"]
    images, labels = digits
    assert torch.equal(judges[0].score(images, items_of(labels)),
                       ClassifierJudge(assets.load_judge, name="j").score(images, items_of(labels)))
    assert len(judges[3].references("seen")) > 0


def test_a_judge_on_another_scale_reports_no_gap(digits):
    """gap=False: the guide is not compared with that judge (a difference of two scales means nothing)."""
    from doodl.eval.summary import gap_judges

    g = LossJudge(DigitClassifierLoss(), name="guide")
    same = LossJudge(DigitClassifierLoss(), name="twin")
    other = LossJudge(DigitClassifierLoss(), name="other_scale", gap=False)
    assert [j.name for j in gap_judges([g, same, other], "guide")] == ["twin"]
