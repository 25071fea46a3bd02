"""ImageWriter and ResultsTable driven by a real Trainer over a fake DOODL module (random images)."""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from doodl.run.result import ItemResult
from lightning.pytorch.loggers import CSVLogger

from doodl.app.callbacks import ImageWriter, ResultsTable
from doodl.app.callbacks.common import read_png
from doodl.app.callbacks.sheet import FAILED_FILL, LINE_H, PAD, enlargement
from doodl.app.data import PromptDataModule
from doodl.app.paths import run_dir

H, W = 8, 12


class FakeDOODL(L.LightningModule):
    """training_step returns what doodl.app.module.DOODL returns; final_outputs lists this rank's items.

    ``drop``: an id left out of final_outputs; ``stop``: an id that stops after its first iteration;
    ``fail``: an id reported as failed (no finite iterate: no image).
    """

    def __init__(self, drop: str | None = None, stop: str | None = None, fail: str | None = None):
        super().__init__()
        self.automatic_optimization = False
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.drop, self.stop, self.fail = drop, stop, fail
        self.best: dict[str, dict] = {}
        self.iterations: dict[str, int] = {}

    def configure_optimizers(self):
        return torch.optim.SGD([self.w], lr=0.1)

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        self.manual_backward((self.w - 1).square().sum())
        opt.step()
        opt.zero_grad()
        batch = [it for it in batch if not (it["id"] == self.stop and self.iterations.get(it["id"]))]
        if not batch:
            return None
        g = torch.Generator().manual_seed(1000 * self.current_epoch + batch_idx)
        images = torch.rand(len(batch), 3, H, W, generator=g)  # (B, 3, H, W)
        item_loss = torch.rand(len(batch), generator=g)
        item_loss[0] = math.inf if self.current_epoch == 0 else item_loss[0]  # a non-finite loss now and then
        scores = {"score": -item_loss, "loss": 2 * item_loss}  # "loss" clashes with a fixed column
        for k, it in enumerate(batch):
            self.iterations[it["id"]] = self.iterations.get(it["id"], 0) + 1
            best = self.best.get(it["id"])
            if best is None or item_loss[k] < best["loss"]:
                self.best[it["id"]] = {"item": it, "image": images[k].clone(), "loss": float(item_loss[k]),
                                       "scores": {n: float(v[k]) for n, v in scores.items()},
                                       "best_iteration": self.current_epoch}
        return {"ids": [it["id"] for it in batch], "images": images, "item_loss": item_loss, "scores": scores,
                "iteration": self.current_epoch}

    @property
    def final_outputs(self):
        outs = []
        for i, b in self.best.items():
            if i == self.drop:
                continue
            failed = i == self.fail
            outs.append(ItemResult(
                id=i, item=b["item"], method="doodl", image=None if failed else b["image"],
                loss=None if failed else b["loss"], scores={} if failed else b["scores"],
                best_iteration=-1 if failed else b["best_iteration"], iterations=self.iterations[i],
                stopped_early=i == self.stop, skipped_updates=int(b["best_iteration"] == 0),
                status="failed" if failed else "stopped_early" if i == self.stop else "done",
                failure="non-finite loss at every iteration" if failed else None))
        return outs


def grid_cell(grid, k, columns, h, w, captions=2):
    """Cell ``k`` of a grid.png of (h, w) cells with ``captions`` caption lines: (image part, caption part)."""
    r, c = divmod(k, columns)
    y, x = PAD + r * (h + captions * LINE_H + PAD), PAD + c * (w + PAD)
    return grid[:, y:y + h, x:x + w], grid[:, y + h:y + h + captions * LINE_H, x:x + w]


def fit(root, callbacks, logger=None, module=None, prompts=("a cat", "a dog", "a red car"), seeds=(0, 1),
        batch_size=2, max_epochs=3, **trainer_kwargs):
    dm = PromptDataModule(prompts=list(prompts), seeds=list(seeds), batch_size=batch_size)
    trainer = L.Trainer(max_epochs=max_epochs, accelerator="cpu", default_root_dir=root, enable_checkpointing=False,
                        logger=CSVLogger(root) if logger is None else logger, callbacks=callbacks,
                        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1, **trainer_kwargs)
    module = module or FakeDOODL()
    trainer.fit(module, datamodule=dm)
    return trainer, module, dm


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_image_writer_and_results_table(tmp_path):
    failed = "00003-a-red-car-s0"
    trainer, module, dm = fit(tmp_path, [ImageWriter(every_n_iterations=2, grid_columns=4), ResultsTable()],
                              module=FakeDOODL(stop="00002-a-dog-s1", fail=failed))
    root = run_dir(trainer)
    assert root == tmp_path / "lightning_logs" / "version_0"
    ids = [it["id"] for it in dm.items]
    for item in dm.items:
        folder = root / "images" / item["id"]
        stopped = item["id"] == "00002-a-dog-s1"
        assert sorted(p.name for p in folder.iterdir()) == (
            ["iter_0000.json", "iter_0000.png"] if stopped else
            ["iter_0000.json", "iter_0000.png", "iter_0002.json", "iter_0002.png"])
        meta = json.loads((folder / "iter_0000.json").read_text())
        assert {k: meta[k] for k in ("id", "row", "prompt", "seed", "iteration")} == {**item, "iteration": 0}
        assert set(meta["scores"]) == {"score", "loss"}

        out = module.best[item["id"]]
        final = json.loads((root / "final" / f"{item['id']}.json").read_text())
        if item["id"] == failed:  # no image, and its metadata says why
            assert not (root / "final" / f"{failed}.png").exists()
            assert final["status"] == "failed" and final["failure"] == "non-finite loss at every iteration"
            continue
        assert final["status"] == ("stopped_early" if stopped else "done")
        png = read_png(root / "final" / f"{item['id']}.png").float() / 255  # (3, H, W)
        assert png.shape == (3, H, W)
        assert (png - out["image"]).abs().max() <= 0.5 / 255 + 1e-6  # the best image, to 8-bit rounding
        assert final["prompt"] == item["prompt"] and final["seed"] == item["seed"]
        assert final["loss"] == pytest.approx(out["loss"]) and final["best_iteration"] == out["best_iteration"]
        assert final["iterations"] == (1 if stopped else 3) and final["stopped_early"] is stopped

    grid = read_png(root / "grid.png")
    k = enlargement(W, H, 96)  # 8x12 images: enlarged 12 times, to 96x144
    assert k == 12
    h, w = k * H, k * W
    assert grid.shape == (3, PAD + 2 * (h + 2 * LINE_H + PAD), PAD + 4 * (w + PAD))  # 6 items, 4 columns
    assert ids[4] == failed
    for n in range(6):  # in item order, 4 to a row
        image, caption = grid_cell(grid, n, 4, h, w)
        assert (caption < 128).any()  # a caption (id and score, or "failed") under every cell
        if n == 4:  # the failed item: a grey cell
            grey = (image.reshape(3, -1) == torch.tensor(FAILED_FILL, dtype=torch.uint8).view(3, 1)).all(0)
            assert grey.float().mean() > 0.9
            continue
        png = read_png(root / "final" / f"{ids[n]}.png")
        assert torch.equal(image, png.repeat_interleave(k, 1).repeat_interleave(k, 2))  # nearest neighbour

    rows = read_csv(root / "results.csv")
    assert [r["id"] for r in rows] == sorted(ids)
    assert list(rows[0]) == ["id", "prompt", "seed", "status", "loss", "scores.loss", "score", "best_iteration",
                             "iterations", "stopped_early", "skipped_updates", "failure", "image"]
    by_id = {r["id"]: r for r in rows}
    assert {k: by_id[failed][k] for k in ("status", "loss", "score", "image", "failure")} == {
        "status": "failed", "loss": "", "score": "", "image": "", "failure": "non-finite loss at every iteration"}
    assert by_id["00002-a-dog-s1"]["status"] == "stopped_early" and by_id[ids[0]]["status"] == "done"
    for i in ids:
        if i == failed:
            continue
        b = module.best[i]
        assert float(by_id[i]["loss"]) == pytest.approx(b["loss"])
        assert float(by_id[i]["score"]) == pytest.approx(b["scores"]["score"])
        assert by_id[i]["image"] == f"final/{i}.png" and (root / by_id[i]["image"]).is_file()
    lines = (root / "results.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == sorted(ids)
    assert json.loads(lines[0])["scores"].keys() == {"score", "loss"}


def test_second_run_does_not_overwrite_the_first(tmp_path):
    t1, _, _ = fit(tmp_path, [ImageWriter(), ResultsTable()], prompts=("a",), seeds=(0,), max_epochs=1)
    t2, _, _ = fit(tmp_path, [ImageWriter(), ResultsTable()], prompts=("b",), seeds=(0,), max_epochs=1)
    r1, r2 = run_dir(t1), run_dir(t2)
    assert r1 != r2
    assert [r["prompt"] for r in read_csv(r1 / "results.csv")] == ["a"]
    assert [r["prompt"] for r in read_csv(r2 / "results.csv")] == ["b"]
    assert (r1 / "grid.png").is_file() and (r2 / "grid.png").is_file()


def test_missing_result_raises_after_writing(tmp_path):
    with pytest.raises(RuntimeError, match=r"1 item\(s\) have no result: \['00002-b-s0'\]"):
        fit(tmp_path, [ResultsTable(filename="scores")], module=FakeDOODL(drop="00002-b-s0"), prompts=("a", "b"),
            seeds=(0,), max_epochs=1)
    rows = read_csv(tmp_path / "lightning_logs" / "version_0" / "scores.csv")
    assert [r["id"] for r in rows] == ["00001-a-s0"] and rows[0]["image"] == ""  # no ImageWriter: no path
    assert ResultsTable.check([{"id": "x"}, {"id": "x"}, {"id": "y"}], [{"id": "x"}]) == [
        "ids repeated (run on more than one rank?): ['x']", "ids not in the dataset: ['y']"]


def test_write_failure_raises(tmp_path):
    blocked = tmp_path / "lightning_logs" / "v"
    blocked.mkdir(parents=True)
    (blocked / "final").write_text("a file where the final folder should go")
    with pytest.raises((FileExistsError, NotADirectoryError)):
        fit(tmp_path, [ImageWriter()], logger=CSVLogger(tmp_path, version="v"), prompts=("a",), seeds=(0,),
            max_epochs=1)


def test_argument_errors():
    with pytest.raises(ValueError, match="every_n_iterations"):
        ImageWriter(every_n_iterations=-1)
    with pytest.raises(ValueError, match="grid_columns"):
        ImageWriter(grid_columns=0)
    with pytest.raises(ValueError, match="write_final=True, or grid=False"):
        ImageWriter(write_final=False)
    with pytest.raises(ValueError, match="plain file name"):
        ResultsTable(filename="a/b")


def test_tensorboard_logger(tmp_path):
    pytest.importorskip("tensorboard")
    from lightning.pytorch.loggers import TensorBoardLogger

    trainer, _, _ = fit(tmp_path, [ImageWriter(every_n_iterations=1), ResultsTable()],
                        logger=TensorBoardLogger(tmp_path), max_epochs=1)
    root = run_dir(trainer)
    assert (root / "grid.png").is_file() and list(root.glob("events.out.tfevents.*"))


def test_wandb_offline(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="doodl-test")
    try:
        trainer, _, dm = fit(tmp_path, [ImageWriter(every_n_iterations=1), ResultsTable()], logger=logger,
                             max_epochs=2)
        root = run_dir(trainer)
        assert root == tmp_path / "runs" / logger.version
        summary = logger.experiment.summary
        assert summary["results"]["_type"] == "table-file" and summary["results"]["nrows"] == len(dm.items)
        assert summary["final"]["count"] == len(dm.items)
        assert summary["grid"]["count"] == 1
        assert len(read_csv(root / "results.csv")) == len(dm.items)
    finally:
        wandb.finish()


def test_two_processes_write_every_item_once(tmp_path):
    """ddp_fork on CPU: each rank writes its own items, rank 0 gathers the table and builds the grid.
    Lightning's use_distributed_sampler stays on: ItemSampler is kept, so nothing is padded or repeated.
    A process that has run autograd cannot fork (torch refuses), so the test runs itself in a fresh
    pytest process: it passes whatever ran before it."""
    if os.environ.get("DOODL_FORK_CHILD") != "1":
        env = dict(os.environ, DOODL_FORK_CHILD="1", OMP_NUM_THREADS="1")
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp",
                               str(tmp_path / "child"), f"{__file__}::test_two_processes_write_every_item_once"],
                              cwd=Path(__file__).resolve().parents[2], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
        assert "1 passed" in done.stdout
        return
    dm = PromptDataModule(prompts=["a", "b", "c", "d", "e"], batch_size=2)
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=2, strategy="ddp_fork", default_root_dir=tmp_path,
                        logger=CSVLogger(tmp_path), enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[ImageWriter(every_n_iterations=1), ResultsTable()])
    trainer.fit(FakeDOODL(), datamodule=dm)
    root = tmp_path / "lightning_logs" / "version_0"
    ids = [it["id"] for it in dm.items]
    rows = read_csv(root / "results.csv")
    assert [r["id"] for r in rows] == sorted(ids)
    assert all(r["iterations"] == "2" for r in rows)  # each item ran on one rank only, once per epoch
    assert sorted(p.stem for p in (root / "final").glob("*.png")) == sorted(ids)
    assert all(sorted(p.name for p in (root / "images" / i).glob("*.png")) == ["iter_0000.png", "iter_0001.png"]
               for i in ids)
    grid = read_png(root / "grid.png")
    k = enlargement(W, H, 96)
    assert grid.shape == (3, PAD + 2 * (k * H + 2 * LINE_H + PAD), PAD + 3 * (k * W + PAD))  # 5 items, 3 columns
    for n, i in enumerate(ids):
        png = read_png(root / "final" / f"{i}.png")
        assert torch.equal(grid_cell(grid, n, 3, k * H, k * W)[0], png.repeat_interleave(k, 1).repeat_interleave(k, 2))


def test_captions_cut_to_the_cell_keep_the_start_or_the_end():
    """A long item id keeps its distinct end (the prompt's last words and the seed) on the grid."""
    from PIL import Image, ImageDraw

    from doodl.app.callbacks.sheet import fit as fit_text

    pen = ImageDraw.Draw(Image.new("RGB", (10, 10)))
    text = "00001-a-handwritten-digit-three-s0"
    start, end = fit_text(pen, text, 90), fit_text(pen, text, 90, keep_end=True)
    assert start.startswith("00001-a-") and start.endswith("...") and pen.textlength(start) <= 90
    assert end.startswith("...") and end.endswith("three-s0") and pen.textlength(end) <= 90
    assert fit_text(pen, "short", 90, keep_end=True) == "short"
