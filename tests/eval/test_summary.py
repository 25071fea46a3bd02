"""score_records, summarize and the files of a comparison, on fabricated records scored by the real
shipped digits classifiers: the gap-0 rule, Wilson vs bootstrap, failed items, order independence,
set-level judges per (method, group), bad input, the files written and the W&B table."""

import csv
import json
import math
import random

import pytest
import torch
from PIL import Image

from doodl.digits import assets
from doodl.digits.world import DigitClassifierLoss
from doodl.eval.digits_parts import digits_judge_features, digits_test_images
from doodl.eval.distances import FID, KID
from doodl.eval.judges import ClassifierJudge, InkMass, LossJudge
from doodl.eval.scoring import score_records
from doodl.eval.stats import bootstrap, paired_bootstrap, wilson
from doodl.eval.summary import summarize
from doodl.eval.writers import write_report

from .fakes import make_records

METHODS = ["plain", "onestep", "doodl"]  # the given order: not alphabetical
FAILED = {("unseen-8-s6", "doodl"), ("seen-3-s1", "doodl"), ("seen-0-s0", "plain")}


@pytest.fixture(scope="module")
def judges():
    return [ClassifierJudge(assets.load_classifier, name="guide"),
            ClassifierJudge(assets.load_classifier, name="guide_again"),
            ClassifierJudge(assets.load_judge, name="judge"),
            LossJudge(DigitClassifierLoss(), name="guide_prob"),
            LossJudge(DigitClassifierLoss(), name="guide_prob_again"),
            InkMass("light", name="ink"),
            InkMass("light", name="thinness", direction="min")]


@pytest.fixture(scope="module")
def records():
    return make_records(METHODS, n_per_group=8, failed=FAILED, real=True)


@pytest.fixture(scope="module")
def scored(records, judges):
    return score_records(records, judges, batch_size=5)[0]


def test_paired_bootstrap():
    a = torch.rand(30, generator=torch.Generator().manual_seed(1))
    b = torch.rand(30, generator=torch.Generator().manual_seed(2))
    assert paired_bootstrap(a, a.clone()) == [0.0, 0.0]
    assert paired_bootstrap(a, b, seed=5) == bootstrap(a.double() - b.double(), seed=5) == paired_bootstrap(a, b, seed=5)
    assert paired_bootstrap(a, b, seed=5) != paired_bootstrap(a, b, seed=6)
    lo, hi = paired_bootstrap(a, b)
    assert lo < float((a - b).mean()) < hi
    assert all(math.isnan(v) for v in bootstrap(torch.zeros(0)))
    with pytest.raises(ValueError, match="same items"):
        paired_bootstrap(a, b[:-1])


def test_a_judge_equal_to_the_guide_gives_a_gap_of_exactly_zero(scored, judges):
    rows = summarize(scored, judges, guide="guide", methods=METHODS)
    for row in rows:
        assert set(row["gaps"]) == {"guide_again", "judge"}  # the guide's kind (accuracy) and direction
        assert row["gaps"]["guide_again"]["value"] == 0.0 and row["gaps"]["guide_again"]["ci95"] == [0.0, 0.0]
        cell = [r for r in scored if (r["method"], r["group"]) == (row["method"], row["group"])]
        direct = sum((r["scores"]["guide"] or 0) - (r["scores"]["judge"] or 0) for r in cell) / len(cell)
        assert row["gaps"]["judge"]["value"] == pytest.approx(direct, abs=1e-12)
    assert any(row["gaps"]["judge"]["value"] != 0 for row in rows)  # the independent judge disagrees somewhere
    means = summarize(scored, judges, guide="guide_prob", methods=METHODS)
    for row in means:
        assert set(row["gaps"]) == {"guide_prob_again", "ink"}  # not "thinness": the other direction
        assert row["gaps"]["guide_prob_again"]["value"] == 0.0
        assert row["gaps"]["guide_prob_again"]["ci95"] == [0.0, 0.0]
    assert all(row["gaps"] == {} for row in summarize(scored, judges, guide=None, methods=METHODS))


def test_wilson_for_accuracies_bootstrap_for_means_and_failed_items(scored, judges):
    rows = summarize(scored, judges, guide="guide", methods=METHODS, seed=7)
    doodl_seen = next(r for r in rows if (r["method"], r["group"]) == ("doodl", "seen"))
    cell = [r for r in scored if (r["method"], r["group"]) == ("doodl", "seen")]
    assert doodl_seen["n"] == 8 and doodl_seen["failed"] == 1 and doodl_seen["statuses"]["failed"] == 1
    assert sum(doodl_seen["statuses"].values()) == 8
    acc = doodl_seen["judges"]["judge"]
    k = sum(r["scores"]["judge"] for r in cell if r["image"] is not None)  # failed: counted as wrong
    assert acc["ci"] == "wilson" and acc["n"] == 8 and acc["value"] == k / 8 and acc["ci95"] == wilson(k, 8)
    prob = doodl_seen["judges"]["guide_prob"]
    kept = torch.tensor([r["scores"]["guide_prob"] for r in cell if r["image"] is not None], dtype=torch.float64)
    assert prob["ci"] == "bootstrap" and prob["n"] == 7 and prob["excluded"] == 1
    assert prob["value"] == pytest.approx(float(kept.mean()), abs=1e-12)
    assert prob["ci95"] == bootstrap(kept, 2000, 7)
    assert doodl_seen["gaps"]["judge"]["ci"] == "paired bootstrap" and doodl_seen["gaps"]["judge"]["n"] == 8
    assert doodl_seen["cost"]["wall_s"] == pytest.approx(sum(r["cost"]["wall_s"] for r in cell) / 8)  # failed included
    assert all(r["scores"]["guide"] is None for r in scored if r["status"] == "failed")


def test_rows_and_files_do_not_depend_on_record_order(records, judges, tmp_path):
    shuffled = list(records)
    random.Random(3).shuffle(shuffled)
    first, second = score_records(records, judges, batch_size=5)[0], score_records(shuffled, judges, batch_size=5)[0]
    assert [(r["id"], r["method"], r["scores"]) for r in first] == [(r["id"], r["method"], r["scores"]) for r in second]
    rows = summarize(first, judges, guide="guide", methods=METHODS)
    again = list(second)
    random.Random(4).shuffle(again)
    assert summarize(again, judges, guide="guide", methods=METHODS) == rows
    assert [(r["method"], r["group"]) for r in rows] == [(m, g) for m in METHODS for g in ("seen", "unseen")]
    a = write_report(tmp_path / "a", first, rows, judges, "guide", METHODS)
    b = write_report(tmp_path / "b", again, summarize(again, judges, guide="guide", methods=METHODS), judges, "guide", METHODS)
    for name in a:
        assert a[name].read_bytes() == b[name].read_bytes(), name


def test_set_level_judges_per_method_and_group(records):
    kid = KID(digits_judge_features, reference_loader=digits_test_images, by_group=True, subsets=10, subset_size=5)
    fid = FID(digits_judge_features, reference_loader=digits_test_images, by_group=True)
    all_failed = [dict(r, image=None, status="failed") if (r["method"], r["group"]) == ("doodl", "unseen") else r
                  for r in records]
    scored, sets = score_records(all_failed, [kid, fid], batch_size=4)
    assert [(s["judge"], s["method"], s["group"]) for s in sets] == [
        (j, m, g) for j in ("kid", "fid") for m in sorted(METHODS) for g in ("seen", "unseen")]
    cell = sorted((r for r in records if (r["method"], r["group"]) == ("plain", "seen")), key=lambda r: r["id"])
    plain_seen = torch.stack([r["image"] for r in cell if r["image"] is not None])  # by id: KID's subsets follow the order
    assert len(plain_seen) == 7  # one failed plain item is left out
    found = next(s for s in sets if (s["judge"], s["method"], s["group"]) == ("kid", "plain", "seen"))
    assert found["value"] == kid.compute(plain_seen, "seen")["value"] and found["n_fake"] == 7
    empty = next(s for s in sets if (s["judge"], s["method"], s["group"]) == ("fid", "doodl", "unseen"))
    assert math.isnan(empty["value"]) and "every item failed" in empty["note"]
    rows = summarize(scored, [kid, fid], sets=sets, methods=METHODS)
    row = next(r for r in rows if (r["method"], r["group"]) == ("plain", "seen"))
    assert row["judges"]["kid"]["ci"] == "± std over subsets" and row["judges"]["fid"]["ci95"] is None
    with pytest.raises(ValueError, match="pass the set-level results"):
        summarize(scored, [kid, fid], methods=METHODS)
    with pytest.raises(ValueError, match="is set-level: name a per-item judge"):
        summarize(scored, [kid, fid], guide="kid", sets=sets, methods=METHODS)


def test_bad_input_is_a_clear_error(records, scored, judges):
    with pytest.raises(ValueError, match="unknown judge 'guid' .did you mean 'guide'.*known: guide, guide_again"):
        summarize(scored, judges, guide="guid", methods=METHODS)
    with pytest.raises(ValueError, match="method.s. 'onestep' not in methods"):
        summarize(scored, judges, methods=["plain", "doodl"])
    with pytest.raises(ValueError, match="score the records with score_records"):
        summarize(records, judges, methods=METHODS)
    bad = [dict(records[0])]
    del bad[0]["cost"]
    with pytest.raises(ValueError, match="has no 'cost'"):
        score_records(bad, judges)
    with pytest.raises(ValueError, match="a failed record has image None"):
        score_records([dict(records[1], status="failed")], judges)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        score_records([dict(records[1], image=records[1]["image"] * 2 + 0.5)], judges)
    with pytest.raises(ValueError, match="appears twice"):
        score_records([records[1], records[1]], judges)
    with pytest.raises(ValueError, match="status 'ok'"):
        score_records([dict(records[1], status="ok")], judges)
    with pytest.raises(ValueError, match="batch_size"):
        score_records(records, judges, batch_size=0)
    big = [dict(records[1], image=torch.zeros(3, 64, 64))]
    with pytest.raises(ValueError, match="set input_size .and resize: true."):
        score_records(big, judges[:1])


def test_files_written(scored, judges, tmp_path):
    rows = summarize(scored, judges, guide="guide", methods=METHODS)
    paths = write_report(tmp_path, scored, rows, judges, "guide", METHODS, title="Digits: guide vs judge")
    md = paths["summary.md"].read_text()
    assert md.startswith("# Digits: guide vs judge\n")
    assert "Wilson for accuracies" in md and "paired bootstrap" in md and "count as wrong" in md
    assert "- `judge`: accuracy of DigitJudge's argmax against the item's target_class (accuracy, in %" in md
    assert "- `guide` (the guide)" in md and "gap guide−judge pts" in md
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(rows) and table[1].startswith("| plain | seen | 8 | 1 |")
    with open(paths["summary.csv"]) as f:
        summary = list(csv.DictReader(f))
    assert [(r["method"], r["group"]) for r in summary] == [(r["method"], r["group"]) for r in rows]
    assert float(summary[0]["judge"]) == rows[0]["judges"]["judge"]["value"]
    assert float(summary[0]["gap_judge_lo"]) == rows[0]["gaps"]["judge"]["ci95"][0]
    lines = paths["scores.jsonl"].read_text().splitlines()
    assert len(lines) == len(scored)
    by_key = {(r["id"], r["method"]): r for r in scored}
    for line in lines:
        row = json.loads(line)
        assert row["scores"] == by_key[(row["id"], row["method"])]["scores"]  # floats written in full
        assert row["item"]["prompt"].startswith("a handwritten digit")
    assert json.loads(lines[0])["method"] == "plain"  # the given method order, not alphabetical
    with open(paths["scores.csv"]) as f:
        per_item = list(csv.DictReader(f))
    assert len(per_item) == len(scored) and "item_prompt" in per_item[0] and "evals_graph" in per_item[0]
    failed = next(r for r in per_item if (r["id"], r["method"]) == ("seen-0-s0", "plain"))
    assert failed["status"] == "failed" and failed["guide"] == ""
    with Image.open(paths["summary.png"]) as im:
        assert im.format == "PNG" and im.width >= 3 * 340


def test_wandb_table_side_by_side(scored):
    import wandb

    from doodl.eval.side_by_side import wandb_table

    table = wandb_table(scored, METHODS, judges=["guide", "judge"])
    assert table.columns[:6] == ["id", "group", "prompt", "plain", "plain/status", "plain/guide"]
    assert len(table.columns) == 3 + 4 * len(METHODS)
    assert len(table.data) == 16
    row = next(r for r in table.data if r[0] == "seen-0-s0")
    col = table.columns.index
    assert row[col("plain")] is None and row[col("plain/status")] == "failed"
    assert isinstance(row[col("doodl")], wandb.Image) and row[col("doodl/judge")] in (0.0, 1.0)
    with pytest.raises(ValueError, match="not in methods"):
        wandb_table(scored, ["plain"])
