"""benchmarks/digits_pair.py in a reduced setting: the pair's drift and the share of the second
image in the paper's loss on both, and DOODL with loss_on both / x, on tuning seeds."""

from __future__ import annotations

import json

from tests.digits.bench import load_bench


def test_reduced_pair_run(tmp_path):
    pair = load_bench("digits_pair")
    out = tmp_path / "pair.json"
    res = pair.main(["--items", "1", "--steps", "2", "40", "--doodl-steps", "2", "--iterations", "2", "--out", str(out)])
    assert json.loads(out.read_text())["drift"] == res["drift"]
    assert {(r["group"], r["T"]) for r in res["drift"]} == {(g, T) for g in ("seen", "unseen") for T in (2, 40)}
    for r in res["drift"]:
        assert 0.0 <= r["share_of_y_in_pair_loss"] <= 1.0 and r["max_abs_x0_minus_y0_max"] >= r["max_abs_x0_minus_y0_mean"]
    by_T = {T: max(r["max_abs_x0_minus_y0_max"] for r in res["drift"] if r["T"] == T) for T in (2, 40)}
    assert by_T[40] < by_T[2]  # the members agree as the steps get small (the coupling's error is per step)
    assert {(r["group"], r["loss_on"]) for r in res["doodl"]} == {(g, lo) for g in ("seen", "unseen") for lo in ("both", "x")}
    assert all(0.0 <= r["guide_prob_shifted"] <= 1.0 and r["pixels_moved_from_unguided"] >= 0 for r in res["doodl"])
