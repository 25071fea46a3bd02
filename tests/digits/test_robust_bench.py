"""benchmarks/digits_robust.py, digits_natural.py, digits_steps.py and digits_transfer.py (the second
to fifth tuning rounds) and digits_diagnose.py in a reduced setting: the held-out views, and the
choices following the stated rules from the guide's scores alone."""

from __future__ import annotations

import json

import pytest
import torch

from tests.digits.bench import load_bench


def test_held_out_views():
    robust = load_bench("digits_robust")
    images = torch.rand(2, 3, 16, 16)
    views = robust.held_out_views(images)
    assert views.shape == (15, 2, 3, 16, 16)
    torch.testing.assert_close(views[4], images)  # the centre of the shifts: the image itself
    torch.testing.assert_close(views[0, ..., 2:, 2:], images[..., :-2, :-2])  # moved by two pixels
    assert (views[11] >= images).all() and (views[12] <= images).all()  # thicker / thinner strokes
    assert not torch.allclose(views[11], images) and not torch.allclose(views[12], images)
    torch.testing.assert_close(robust.held_out_views(images), views, rtol=0, atol=0)  # the same noise every call
    flat = torch.full((1, 3, 16, 16), 0.5)
    torch.testing.assert_close(robust.blur(flat), flat)  # a normalized kernel


def test_reduced_robust_tuning_run(tmp_path):
    robust = load_bench("digits_robust")
    out = tmp_path / "robust.json"
    res = robust.main(["--quick", "--items", "2", "--seen-items", "4", "--steps", "2", "--iterations", "2",
                       "--out", str(out)])
    assert json.loads(out.read_text())["chosen"] == res["chosen"]
    rows = res["tried"]
    assert {r["sweep"] for r in rows} == {"reference", "crops", "lr", "stop"}
    crops = [r for r in rows if r["sweep"] == "crops"]
    best = max(crops, key=lambda r: r["held_out"])
    assert best["setting"] == robust.label_of({k: res["chosen"][k] for k in ("cutouts", "min_cut", "cut_power")})
    # the setting a sweep carries on is not run again: its row is repeated
    assert [r.get("repeat", False) for r in rows if r["sweep"] == "lr"] == [True, False]
    # the stop rule: the lowest seen kid among the settings within the slack of the best held-out score
    held = {r["setting"]: r["held_out"] for r in rows if r["sweep"] == "stop" and r["group"] == "unseen"}
    kid = {r["setting"]: r["guide_kid"] for r in rows if r["sweep"] == "stop" and r["group"] == "seen"}
    ok = [k for k in held if held[k] >= max(held.values()) - robust.STOP_SLACK]
    assert min(ok, key=kid.get) == robust.label_of({k: res["chosen"][k] for k in ("score_on", "target_score")})
    assert 0 < res["reference"]["real_unseen_held_out"] <= 1
    assert "judge" not in json.dumps(rows)  # only the guide is read

    # the third round starts from the second's choice and keeps to its own rule
    natural = load_bench("digits_natural")
    res3 = natural.main(["--quick", "--items", "2", "--seen-items", "4", "--steps", "2", "--iterations", "2",
                         "--start", str(out), "--out", str(tmp_path / "natural.json")])
    assert res3["start"] == {"regularizer_weight": 0.01, "accept_score": None, **res["start"], **res["chosen"]}
    rows3 = res3["tried"]
    for sweep, key in (("lr", "lr"), ("cfg", "cfg_scale"), ("regularizer", "regularizer_weight")):
        doodl = [r for r in rows3 if r["sweep"] == sweep and r["method"] == "doodl" and r["group"] == "unseen"]
        ok = [r for r in doodl if r["held_out"] >= max(d["held_out"] for d in doodl) - natural.SLACK]
        assert min(ok, key=lambda r: r["guide_kid_unseen"])["setting"] == f"{key}={res3['chosen'][key]}"
    for sweep, label in (("stop", f"score_on=crops, target_score={res3['chosen']['target_score']}"),
                         ("accept", f"accept_score={res3['chosen']['accept_score']}")):
        held = {r["setting"]: r["held_out"] for r in rows3 if r["sweep"] == sweep and r["group"] == "unseen"}
        kid = {r["setting"]: r["guide_kid"] for r in rows3 if r["sweep"] == sweep and r["group"] == "seen"}
        ok = [k for k in held if held[k] >= max(held.values()) - natural.SLACK]
        assert min(ok, key=kid.get) == label
    assert {(r["method"], r["group"]) for r in rows3 if r["sweep"] == "cfg"} == {
        (m, g) for m in ("plain", "onestep", "doodl") for g in ("seen", "unseen")} - {("doodl", "seen")}
    assert any(r.get("repeat") for r in rows3 if r["sweep"] == "regularizer")
    assert "judge" not in json.dumps(rows3)
    with pytest.raises(SystemExit, match="digits_robust.py"):
        natural.main(["--start", str(tmp_path / "missing.json")])


def test_reduced_diagnosis_reads_the_judge_and_chooses_nothing(tmp_path):
    diagnose = load_bench("digits_diagnose")
    res = diagnose.main(["--quick", "--items", "2", "--steps", "2", "--iterations", "2",
                         "--out", str(tmp_path / "diagnose.json")])
    rows = res["tried"]
    assert [r["sweep"] for r in rows] == ["first round's default", "third round's default", "reference"]
    assert all(0 <= r["judge_acc"] <= 1 and "held_out" in r and "guide_kid_unseen" in r for r in rows)
    assert res["chosen"] is None and "nothing is chosen" in res["note"]


def test_reduced_steps_round_keeps_to_its_rule(tmp_path):
    """The fourth round (benchmarks/digits_steps.py): each T runs the iterations the budget buys,
    and the choice follows its rule from the guide's scores alone."""
    steps = load_bench("digits_steps")
    res = steps.main(["--grid", "3", "2", "--evals", "24", "--items", "2", "--seen-items", "4",
                      "--out", str(tmp_path / "steps.json")])
    assert res["start"] == steps.start_from(steps.NATURAL)
    rows = res["tried"]
    doodl = {(r["setting"], r["group"]): r for r in rows if r["method"] == "doodl"}
    assert set(doodl) == {(f"num_steps={t}, iterations={24 // (4 * t)}", g) for t in (3, 2) for g in ("seen", "unseen")}
    assert {(r["method"], r["group"]) for r in rows} == {(m, g) for m in ("plain", "onestep", "doodl")
                                                         for g in ("seen", "unseen")}
    table = [(t, doodl[(f"num_steps={t}, iterations={24 // (4 * t)}", "unseen")]["held_out"],
              doodl[(f"num_steps={t}, iterations={24 // (4 * t)}", "unseen")]["guide_kid_unseen"],
              doodl[(f"num_steps={t}, iterations={24 // (4 * t)}", "seen")]["guide_kid"]) for t in (3, 2)]
    assert res["chosen"] == {"num_steps": steps.choose(table, table[0][3]), "iterations": 24 // (4 * res["chosen"]["num_steps"])}
    assert "judge" not in json.dumps(rows)
    # the guard: a T whose seen kid is above the reference's is out, however it scores on the unseen digits
    assert steps.choose([(10, 0.90, 5.0, 1.0), (4, 0.95, 1.0, 2.0)], 1.0) == 10
    assert steps.choose([(10, 0.90, 5.0, 1.0), (4, 0.95, 1.0, 0.5)], 1.0) == 4
    assert steps.choose([(10, 0.90, 5.0, 1.0), (4, 0.99, 1.0, 0.5), (3, 0.99, 0.5, 3.0)], 1.0) == 4
    # within the slack the unseen kid decides, not the held-out score
    assert steps.choose([(10, 0.95, 5.0, 1.0), (4, 0.96, 1.0, 0.5)], 1.0) == 4
    assert steps.choose([(10, 0.95, 1.0, 1.0), (4, 0.96, 5.0, 0.5)], 1.0) == 10
    with pytest.raises(ValueError, match="--evals >= 40"):
        steps.iterations_at(10, 24)
    with pytest.raises(SystemExit, match="digits_natural.py"):
        steps.main(["--start", str(tmp_path / "missing.json")])
    with pytest.raises(SystemExit):  # argparse's error: the sweep's own settings are not options here
        steps.main(["--steps", "4", "--out", str(tmp_path / "never.json")])
    assert not (tmp_path / "never.json").exists()


def test_reduced_transfer_round_keeps_to_its_rule(tmp_path):
    """The fifth round (benchmarks/digits_transfer.py): guides retrained by the guide's recipe score
    every unseen result, and the choice is the highest of that score; the judge is never read."""
    transfer = load_bench("digits_transfer")
    res = transfer.main(["--quick", "--items", "2", "--seen-items", "4", "--steps", "2", "--iterations", "2",
                         "--guide-steps", "5", "--out", str(tmp_path / "transfer.json")])
    rows = res["tried"]
    doodl = [r for r in rows if r["method"] == "doodl" and r["group"] == "unseen"]
    assert [r["setting"] for r in doodl] == ["lr=1.0, cfg_scale=2.0", "lr=4.0, cfg_scale=2.0"]
    assert all(0 <= r["transfer"] <= 1 for r in rows if r["group"] == "unseen")
    best = max(doodl, key=lambda r: r["transfer"])
    assert best["setting"] == f"lr={res['chosen']['lr']}, cfg_scale={res['chosen']['cfg_scale']}"
    assert len(res["reference"]["retrained_test_accuracy"]) == 1
    assert "judge" not in json.dumps(rows)
    # retraining restores the global seed, and another seed trains another guide
    torch.manual_seed(0)
    a, b = transfer.retrained_guides((1, 2), steps=3)
    after = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(1), after)
    x = torch.rand(2, 3, 16, 16)
    assert not torch.allclose(a(x), b(x))
    # one retrained guide's transfer is that guide's held-out score; two guides average theirs
    robust, y = load_bench("digits_robust"), torch.tensor([8, 9])
    ta, tb = robust.held_out_score(a, x, y), robust.held_out_score(b, x, y)
    assert transfer.transfer_score([a], x, y) == pytest.approx(ta, rel=1e-6)
    assert transfer.transfer_score([a, b], x, y) == pytest.approx((ta + tb) / 2, rel=1e-6)
    with pytest.raises(SystemExit, match="digits_steps.py"):
        transfer.main(["--start", str(tmp_path / "missing.json")])
