"""The digits benchmark (benchmarks/digits.py) end to end on a tiny setting: files and keys written."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from .conftest import one_torch_thread

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "digits.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_digits", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def one_thread():
    """One torch thread: much faster than two on a shared 2-core machine for these tiny batches."""
    with one_torch_thread():
        yield


def test_tiny_run_writes_table_chart_and_json(bench, tmp_path, one_thread):
    results = bench.main(["--n-seen", "2", "--n-unseen", "2", "--steps", "3", "--iterations", "2",
                          "--batch-size", "4", "--out", str(tmp_path)])
    for name in ("digits.json", "digits.md", "digits.png"):
        assert (tmp_path / name).is_file() and (tmp_path / name).stat().st_size > 0
    saved = json.loads((tmp_path / "digits.json").read_text())
    assert saved["command"].startswith("python benchmarks/digits.py") and "--steps 3" in saved["command"]
    assert saved["settings"]["num_steps"] == 3 and saved["settings"]["iterations"] == 2
    assert {"total_s", "plain_s", "onestep_s", "doodl_s"} <= set(saved["timing"])
    assert set(saved["groups"]) == {"seen", "unseen"}
    for rows in saved["groups"].values():
        assert set(rows) == {"plain", "onestep", "doodl", "real"}
        for row in rows.values():
            for key in ("judge_acc", "guide_acc", "guide_prob", "clip", "gap"):
                lo, hi = row[key]["ci95"]
                assert lo <= row[key]["value"] + 1e-9 and row[key]["value"] <= hi + 1e-9
            assert {"kid", "kid_std", "fid"} <= set(row["distance"])
        assert rows["plain"]["n"] == 2 and rows["real"]["n"] > 2
        assert len(rows["doodl"]["guide_prob_by_iteration"]) == 2
    table = (tmp_path / "digits.md").read_text()
    assert table.count("| seen |") == 4 and table.count("| unseen |") == 4
    assert results["groups"]["unseen"]["doodl"]["iterations_run"]["max"] <= 2


def test_items_have_distinct_seeds_and_group_labels(bench):
    items = bench.make_items(16, 10)
    assert len({it["seed"] for it in items}) == len(items) == 26
    assert {it["target_class"] for it in items if it["group"] == "seen"} == set(range(8))
    assert {it["target_class"] for it in items if it["group"] == "unseen"} == {8, 9}
    assert all(it["prompt"].endswith(("eight", "nine")) for it in items if it["group"] == "unseen")


def test_wilson_and_bootstrap_intervals():
    from doodl.eval.stats import bootstrap, wilson

    lo, hi = wilson(80, 100)
    assert 0.70 < lo < 0.80 < hi < 0.88
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0
    lo, hi = bootstrap(torch.arange(100.0))
    assert lo < 49.5 < hi


@pytest.fixture(scope="module")
def sweep():
    path = SCRIPT.with_name("digits_sweep.py")
    spec = importlib.util.spec_from_file_location("bench_digits_sweep", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shifted_views_move_the_image_by_one_pixel(sweep):
    images = torch.rand(2, 3, 6, 7, generator=torch.Generator().manual_seed(0))
    views = sweep.shifted_views(images)
    assert views.shape == (9, 2, 3, 6, 7)
    torch.testing.assert_close(views[4], images)  # (dy, dx) = (0, 0)
    # view 5 is (dy, dx) = (0, +1): pixel (i, j) shows (i, j + 1), the last column repeated
    torch.testing.assert_close(views[5][..., :-1], images[..., 1:])
    torch.testing.assert_close(views[5][..., -1], images[..., -1])
    torch.testing.assert_close(views[1][..., 1:, :], images[..., :-1, :])  # (dy, dx) = (-1, 0)


def test_tiny_sweep_writes_its_choice(sweep, tmp_path, one_thread):
    results = sweep.main(["--items", "2", "--steps", "2", "--iterations", "1", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "digits_sweep.json").read_text())
    assert saved["chosen"] == results["chosen"]
    assert {"cutouts", "min_cut", "onestep_guidance_scale"} <= set(saved["chosen"])
    crops = [row for row in saved["tried"] if row["sweep"] == "crops"]
    best = max(crops, key=lambda r: r["guide_prob_shifted"])
    assert saved["chosen"]["min_cut"] == best["overrides"]["min_cut"]
    assert all(0.0 <= row["guide_prob_shifted"] <= 1.0 for row in saved["tried"])
    assert "judge" not in json.dumps(saved["tried"])
