"""benchmarks/digits_tune.py in a reduced setting: every sweep runs on the tuning seeds, the
choices follow the stated rules from the guide's scores alone."""

from __future__ import annotations

import json

from tests.digits.bench import load_bench


def load_tune():
    return load_bench("digits_tune")


def test_reduced_tuning_run(tmp_path):
    tune = load_tune()
    out = tmp_path / "tune.json"
    res = tune.main(["--quick", "--items", "2", "--seen-items", "4", "--steps", "2", "--iterations", "2",
                     "--out", str(out)])
    assert json.loads(out.read_text())["chosen"] == res["chosen"]
    rows = res["tried"]
    assert {r["sweep"] for r in rows} == {"update", "stop", "cfg"}
    assert all(r["group"] == "unseen" for r in rows if r["sweep"] == "update")
    assert {r["group"] for r in rows if r["sweep"] == "stop"} == {"seen", "unseen"}
    # the chosen update is the best by the criterion among the update trials
    update_rows = [r for r in rows if r["sweep"] == "update"]
    best = max(update_rows, key=lambda r: r["guide_prob_shifted"])
    assert best["setting"].startswith(res["chosen"]["update"]["preset"] + "(")
    # the presets' families all ran, at their published defaults first
    assert {r["setting"].split("(")[0] for r in update_rows} == {"paper", "dno", "reno"}
    # the cfg rule: the lowest seen kid among scales within the slack of the best shifted score
    for method in ("doodl", "onestep"):
        sh = {r["setting"]: r["guide_prob_shifted"] for r in rows
              if r["sweep"] == "cfg" and r["method"] == method and r["group"] == "unseen"}
        kid = {r["setting"]: r["guide_kid"] for r in rows
               if r["sweep"] == "cfg" and r["method"] == method and r["group"] == "seen"}
        ok = [c for c in sh if sh[c] >= max(sh.values()) - tune.CFG_SLACK]
        assert res["chosen"][f"{method}_cfg"] == float(min(ok, key=kid.get).split("=")[1])
    assert "judge" not in json.dumps(rows)  # only the guide is read


def test_guide_features_are_the_guides_penultimate_layer():
    import torch

    from doodl.digits import assets

    tune = load_tune()
    guide = assets.load_classifier()
    x = torch.rand(3, 3, 16, 16)
    f = tune.GuideFeatures(guide)(x)
    assert f.shape == (3, 64)
    torch.testing.assert_close(guide.head[-1](f), guide(x))
