"""Results that mean what they say: the score reported is the saved PNG's, failed items are failed."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from doodl.run.images import delivered, to_uint8
from doodl.run.items import ItemState
from doodl.run.selection import summary
from doodl.run.start import load_image

from .fakes import MeanColorLoss
from .test_fit import args, fit, pipeline  # noqa: F401 (fixture)

CONTACT_SHEET = ("--trainer.callbacks+=doodl.app.callbacks.ContactSheet", "--trainer.callbacks.batch_size=2")


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def rescore(png: Path) -> float:
    """The fake loss's score of a saved PNG, read as ``doodl test`` reads it."""
    return float(MeanColorLoss().score(load_image(png, 16, 16)))


def test_delivered_is_what_the_png_writer_stores(tmp_path):
    from torchvision.utils import save_image

    from doodl.app.callbacks.common import read_png, write_png

    x = torch.linspace(-0.41, 1.47, 3 * 5 * 7).view(3, 5, 7)  # decoded pixels outside [0, 1], as the VAE gives
    write_png(tmp_path / "a.png", x)
    save_image(x, tmp_path / "b.png")
    assert torch.equal(read_png(tmp_path / "a.png"), read_png(tmp_path / "b.png"))  # rounded as torchvision does
    assert torch.equal(read_png(tmp_path / "a.png"), to_uint8(x))
    # bitwise: torch and numpy both compute k / 255 in float32, one correctly rounded IEEE division
    torch.testing.assert_close(delivered(x), load_image(tmp_path / "a.png", 5, 7)[0], rtol=0, atol=0)
    assert float(delivered(x).min()) == 0.0 and float(delivered(x).max()) == 1.0


def test_reported_scores_are_the_saved_images_scores(pipeline, tmp_path):
    """Every score a run reports (results.csv, the final JSON, the contact sheet's doodl and
    baseline columns, ``doodl predict``) is the score of the PNG it saved, to float32 rounding;
    the item's kept image is the PNG's pixels exactly."""
    trainer, model = fit(pipeline, tmp_path, *CONTACT_SHEET)
    run = Path(trainer.log_dir)
    rows = read_csv(run / "results.csv")
    assert len(rows) == 3 and all(r["status"] == "done" for r in rows)
    for r in rows:
        png = run / r["image"]
        assert float(r["score"]) == pytest.approx(rescore(png), rel=1e-5, abs=1e-6)
        assert json.loads(png.with_suffix(".json").read_text())["scores"]["score"] == pytest.approx(float(r["score"]))
        torch.testing.assert_close(model.states[r["id"]].best_image, load_image(png, 16, 16)[0], rtol=0, atol=0)  # k / 255 both
    compare = [json.loads(x) for x in (run / "compare" / "results.jsonl").read_text().splitlines()]
    assert {c["method"] for c in compare} == {"plain", "onestep", "doodl"} and len(compare) == 9
    for c in compare:
        assert c["status"] == "done"
        assert c["score"] == pytest.approx(rescore(run / "compare" / c["method"] / f"{c['id']}.png"), rel=1e-5, abs=1e-6)

    cli = __import__("doodl.app.cli", fromlist=["main"]).main(
        ["predict", *args(pipeline, tmp_path / "p"), "--model.predict_method=onestep"])
    folder = Path(cli.trainer.log_dir) / "predict" / "onestep"
    lines = [json.loads(x) for x in (folder / "results.rank0.jsonl").read_text().splitlines()]
    assert len(lines) == 3
    for line in lines:
        assert line["status"] == "done"
        assert line["score"] == pytest.approx(rescore(Path(line["image"])), rel=1e-5, abs=1e-6)


def test_early_stop_reads_the_saved_image(pipeline, tmp_path):
    """target_score set to an item's delivered score: it stops there, and its PNG reaches the target."""
    trainer, model = fit(pipeline, tmp_path / "a", "--model.iterations=1")
    first = min(st.best_scores["score"] for st in model.states.values())
    trainer, model = fit(pipeline, tmp_path / "b", f"--model.target_score={first!r}")
    run = Path(trainer.log_dir)
    for r in read_csv(run / "results.csv"):
        if r["status"] == "stopped_early":
            assert rescore(run / r["image"]) >= first - 1e-6
    assert any(st.stopped_early for st in model.states.values())


def test_failed_item_is_reported_not_delivered(pipeline, tmp_path, capsys):
    """An item whose loss is never finite has no result: status "failed" in results.csv/jsonl, no
    final or compare PNG, a grey cell in the grid, counted in ``n_failed`` and the summary line;
    ``doodl test`` skips it. The other items go on."""
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "ok one"}\n{"prompt": "bad", "poison": true}\n{"prompt": "ok two"}\n')
    trainer, model = fit(pipeline, tmp_path, f"--data.path={prompts}", "--data.prompts=null", *CONTACT_SHEET)
    run = Path(trainer.log_dir)
    assert model.n_failed == 1
    assert "doodl: 3 items: 2 done, 1 failed (non-finite loss at every iteration)" in capsys.readouterr().out
    rows = {r["id"]: r for r in read_csv(run / "results.csv")}
    bad = next(i for i in rows if "bad" in i)
    assert {k: rows[bad][k] for k in ("status", "loss", "score", "image", "best_iteration", "failure")} == {
        "status": "failed", "loss": "", "score": "", "image": "", "best_iteration": "-1",
        "failure": "non-finite loss at every iteration"}
    assert all(rows[i]["status"] == "done" and rows[i]["image"] for i in rows if i != bad)
    jsonl = {json.loads(x)["id"]: json.loads(x) for x in (run / "results.jsonl").read_text().splitlines()}
    assert jsonl[bad]["status"] == "failed" and jsonl[bad]["loss"] is None
    assert sorted(p.stem for p in (run / "final").glob("*.png")) == sorted(i for i in rows if i != bad)
    assert json.loads((run / "final" / f"{bad}.json").read_text())["status"] == "failed"
    assert not (run / "compare" / "doodl" / f"{bad}.png").exists()
    compare = [json.loads(x) for x in (run / "compare" / "results.jsonl").read_text().splitlines()]
    assert [c["status"] for c in compare if c["id"] == bad and c["method"] == "doodl"] == ["failed"]
    assert (run / "grid.png").is_file() and (run / "contact_sheet.png").is_file()

    cli = __import__("doodl.app.cli", fromlist=["main"]).main(
        ["test", *args(pipeline, tmp_path), f"--data.path={prompts}", "--data.prompts=null",
         f"--model.eval_dir={run / 'final'}"])
    metrics = cli.trainer.callback_metrics
    assert float(metrics["test/failed"]) == 1 and math.isfinite(float(metrics["test/score"]))


def test_non_finite_latents_fail_every_item(pipeline, tmp_path):
    """cfg_scale 1e30 makes the latents non-finite: every item failed, no PNG written (not even a
    per-iteration snapshot: it would read as a black image), n_failed 3."""
    trainer, model = fit(pipeline, tmp_path, "--model.cfg_scale=1e30", "--model.iterations=1",
                         "--image_writer.every_n_iterations=1")
    run = Path(trainer.log_dir)
    assert model.n_failed == 3
    assert [r["status"] for r in read_csv(run / "results.csv")] == ["failed"] * 3
    assert not list(run.rglob("final/*.png")) and not (run / "grid.png").exists()
    snapshots = sorted(run.glob("images/*/iter_0000.json"))
    assert len(snapshots) == 3 and not list(run.glob("images/*/*.png"))
    assert all(json.loads(p.read_text())["image"] is None for p in snapshots)


def test_non_finite_iterates_never_become_best():
    z = torch.zeros(1, 4, 2, 2)
    st = ItemState.create("a", z, z, seed=0)
    assert not st.record(math.nan, 0, torch.zeros(3, 2, 2), {"score": 0.0})  # the first iterate is not kept
    assert not st.has_result and st.failure == "non-finite loss"
    assert not st.record(1.0, 1, torch.zeros(3, 2, 2), {"score": math.nan}, rank=-math.nan)
    assert not st.has_result and st.failure == "non-finite score"
    assert st.record(2.0, 2, torch.ones(3, 2, 2), {"score": 0.5})
    assert not st.record(-math.inf, 3, torch.zeros(3, 2, 2), {"score": 0.9})  # lower, but not finite
    assert st.best_iteration == 2 and st.best_loss == 2.0 and torch.equal(st.best_image, torch.ones(3, 2, 2))
    # a checkpoint from before this rule, holding a non-finite first iterate as "best", loads as no result
    old = ItemState.create("b", z, z, seed=0).state_dict()
    old.update(best_loss=math.nan, best_iteration=0, best_image=torch.zeros(3, 2, 2), best_scores={"score": 0.0})
    del old["failure"], old["best_rank"]
    loaded = ItemState.create("b", z, z, seed=0)
    loaded.load_state_dict(old)
    assert not loaded.has_result and loaded.best_iteration == -1 and loaded.failure == "non-finite loss"


def test_summary_line():
    assert summary([("done", None)] * 6 + [("failed", "non-finite loss at every iteration")]) == (
        "doodl: 7 items: 6 done, 1 failed (non-finite loss at every iteration)")
    assert summary([("stopped_early", None), ("done", None), ("unfinished", None)]) == (
        "doodl: 3 items: 1 done, 1 stopped early, 1 unfinished")


def test_negative_guidance_scale_is_refused(pipeline):
    from doodl.app.module import DOODL
    from doodl.models import StableDiffusion

    model = StableDiffusion(str(pipeline))
    with pytest.raises(ValueError, match=r"model.guidance_scale must be >= 0, got -1.*steer away"):
        DOODL(model, MeanColorLoss(), guidance_scale=-1.0, num_steps=2, iterations=1, height=16, width=16)
    DOODL(model, MeanColorLoss(), guidance_scale=0.0, num_steps=2, iterations=1, height=16, width=16)  # 0: unguided
