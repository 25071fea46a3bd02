"""Several processes: batches composed alike on every rank count, and ranks without items finish."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys

import pytest
import torch

from doodl.app.data import ItemSampler, PromptDataModule, batches_for_rank, collate_items

from .test_fit import ROOT, args, final_latents, items_state, last_ckpt, pipeline  # noqa: F401 (fixture)


@pytest.mark.parametrize("batch_size", [1, 2, 3])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [0, 1, 3, 5, 8])
def test_batches_are_the_same_on_every_rank_count(n, batch_size, world_size):
    """The batches of all ranks together are the one-process batches (batch k on rank k % W),
    every rank runs as many steps, and each DataLoader cuts exactly its rank's batches."""
    one = batches_for_rank(n, batch_size, 0, 1)
    assert one == [list(range(s, min(s + batch_size, n))) for s in range(0, n, batch_size)]
    dm = PromptDataModule(prompts=[f"p{k}" for k in range(n)] or ["x"], batch_size=batch_size)
    dm.items = dm.items[:n]
    steps, dealt = set(), {}
    for rank in range(world_size):
        mine = batches_for_rank(n, batch_size, rank, world_size)
        dealt.update({k: b for k, b in zip(range(rank, len(one), world_size), mine)})
        sampler = ItemSampler(list(range(n)), world_size, rank, batch_size)
        chunks = [collate_items([None if i is None else {"i": i} for i in sampler.indices[s:s + batch_size]])
                  for s in range(0, len(sampler), batch_size)]
        assert [[it["i"] for it in c] for c in chunks if c] == mine
        steps.add(len(chunks))
        dm.trainer = type("T", (), {"global_rank": rank, "world_size": world_size})()
        assert [[it["id"] for it in b] for b in dm.train_dataloader() if b] == [
            [dm.items[i]["id"] for i in b] for b in mine]
        assert [it["id"] for it in dm.items_for_rank(rank, world_size)] == [dm.items[i]["id"] for b in mine for i in b]
    assert [dealt[k] for k in range(len(one))] == one
    assert len(steps) == 1  # Lightning's per-step collectives need as many steps on every rank


def run(pipeline, root, *extra, timeout=300, sig_after=None):
    """``doodl fit`` in a fresh process group with one thread per process; killed (and the test
    failed) if it runs past ``timeout`` seconds, so that a hang fails instead of blocking the suite."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", WANDB_MODE="offline", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "doodl", "fit", *args(pipeline, root, *extra)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"doodl fit {' '.join(extra)} did not finish in {timeout} s:\n{out[-3000:]}")
    return proc.returncode, out


def results(root):
    with open(next(root.rglob("results.csv")), newline="") as f:
        return list(csv.DictReader(f))


def test_two_processes_equal_one_with_batches_of_two(pipeline, tmp_path):
    """devices=2 (gloo) with batch_size 2 on 3 items: the same batches as one process ([0, 1] on
    rank 0, [2] on rank 1), so the same computation: bitwise the same latents, images, table.
    (Dealt item by item, rank 0 ran [0, 2] and rank 1 [1]: the second and third items then moved by ~7e-7.)"""
    one, two = tmp_path / "one", tmp_path / "two"
    for root, extra in ((one, ()), (two, ("--trainer.devices=2",))):
        rc, out = run(pipeline, root, "--data.batch_size=2", *extra)
        assert rc == 0, out[-3000:]
    a, b = final_latents(one), final_latents(two)
    assert sorted(a) == sorted(b) and len(a) == 3
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=0)
    sa, sb = items_state(last_ckpt(one)), items_state(last_ckpt(two))
    for k in a:
        torch.testing.assert_close(sb[k]["best_image"], sa[k]["best_image"], rtol=0, atol=0)
    assert results(one) == results(two)


def test_a_rank_without_items_finishes_and_sigterm_stops_every_rank(pipeline, tmp_path):
    """devices=2 with 1 item: rank 1 has none. SIGTERM to both ranks mid-run: they stop together,
    save last.ckpt and exit 143 (it used to deadlock); resumed on 2 processes the run ends once
    the item is done (it used to run epochs forever), equal to an uninterrupted single process."""
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    extra = ('--data.prompts=["a red square"]', "--model.iterations=5")
    rc, out = run(pipeline, ref, *extra)
    assert rc == 0, out[-3000:]
    rc, out = run(pipeline, cut, *extra, "--trainer.devices=2", "--trainer.callbacks+=tests.app.fakes.KillAt",
                  "--trainer.callbacks.signal=SIGTERM", "--trainer.callbacks.epoch=2", "--trainer.callbacks.batch=0",
                  timeout=300)
    assert rc == 143, out[-3000:]
    ckpt = last_ckpt(cut)
    assert 3 <= [v["iterations"] for v in items_state(ckpt).values()][0] < 5
    rc, out = run(pipeline, cut, *extra, "--trainer.devices=2", f"--ckpt_path={ckpt}", timeout=300)
    assert rc == 0, out[-3000:]
    a, b = items_state(last_ckpt(ref)), items_state(last_ckpt(cut))
    assert list(b) == list(a) and [v["iterations"] for v in b.values()] == [5]
    for k in a:
        torch.testing.assert_close(b[k]["x"], a[k]["x"], rtol=0, atol=0)
        torch.testing.assert_close(b[k]["best_image"], a[k]["best_image"], rtol=0, atol=0)
    rows = sorted(cut.rglob("results.csv"), key=lambda p: p.stat().st_mtime)[-1]
    with open(rows, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["status"] == "done" and rows[0]["iterations"] == "5"
