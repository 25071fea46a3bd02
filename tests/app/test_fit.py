"""``doodl fit`` end to end on tiny random models: outputs, per-item independence, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from doodl.app.cli import main

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "tests" / "conf" / "tiny.yaml"


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory):
    from doodl.models.tiny import save_tiny_pipeline

    folder = tmp_path_factory.mktemp("pipe") / "tiny-sd"
    save_tiny_pipeline(folder)
    return folder


def args(pipeline, root, *extra):
    return ["-c", str(CONF), f"--model.model.init_args.pretrained={pipeline}", f"--trainer.default_root_dir={root}",
            f"--trainer.logger.init_args.save_dir={root}", *extra]


def fit(pipeline, root, *extra):
    cli = main(["fit", *args(pipeline, root, *extra)])
    return cli.trainer, cli.model


def items_state(ckpt):
    return torch.load(ckpt, map_location="cpu", weights_only=False)["doodl_items"]


def last_ckpt(root):
    found = sorted(Path(root).rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)
    assert found, f"no last.ckpt under {root}"
    return found[-1]


def test_fit_writes_every_output_and_lowers_the_loss(pipeline, tmp_path):
    trainer, model = fit(pipeline, tmp_path)
    outs = model.final_outputs
    assert sorted(o.id for o in outs) == sorted(it["id"] for it in trainer.datamodule.items)
    assert all(o.iterations == 3 for o in outs)
    run = Path(trainer.log_dir)
    assert (run / "config.yaml").is_file()
    assert len(list((run / "final").glob("*.png"))) == 3
    rows = [json.loads(l) for l in (run / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    # the loss of the iterates goes down for each item (the guidance pushes toward red)
    state = items_state(last_ckpt(tmp_path))
    assert set(state) == {o.id for o in outs}
    for o in outs:
        assert o.best_iteration >= 1, "DOODL did not improve on the starting noise"


def test_second_run_does_not_overwrite(pipeline, tmp_path):
    t1, _ = fit(pipeline, tmp_path, "--model.iterations=1")
    t2, _ = fit(pipeline, tmp_path, "--model.iterations=1")
    assert Path(t1.log_dir) != Path(t2.log_dir)
    assert (Path(t1.log_dir) / "config.yaml").is_file() and (Path(t2.log_dir) / "config.yaml").is_file()


def test_non_finite_item_is_skipped_others_go_on(pipeline, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "ok one"}\n{"prompt": "bad", "poison": true}\n{"prompt": "ok two"}\n')
    trainer, model = fit(pipeline, tmp_path, f"--data.path={prompts}", "--data.prompts=null")
    by_prompt = {model.states[i].id: model.states[i] for i in model.states}
    bad = [s for s in by_prompt.values() if "bad" in s.id]
    good = [s for s in by_prompt.values() if "bad" not in s.id]
    assert bad[0].skipped_updates == 3 and all(s.skipped_updates == 0 for s in good)
    z = model.context.start({"id": bad[0].id, "seed": 0})[0]
    torch.testing.assert_close(bad[0].x.detach(), z, rtol=0, atol=0)  # last good latents kept
    assert all(s.best_iteration >= 1 for s in good)


def test_print_config(pipeline, capsys):
    with pytest.raises(SystemExit) as e:
        main(["fit", *args(pipeline, "/tmp/unused"), "--print_config"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "MeanColorLoss" in out and "iterations: 3" in out


def test_predict_plain_and_onestep(pipeline, tmp_path):
    for method in ("plain", "onestep"):
        cli = main(["predict", *args(pipeline, tmp_path), f"--model.predict_method={method}"])
        folder = Path(cli.trainer.log_dir) / "predict" / method
        assert len(list(folder.glob("*.png"))) == 3


def run_cli(pipeline, root, *extra, wait=True):
    # one thread per process everywhere: DDP on CPU would otherwise split the cores, and another
    # thread count changes the order of float reductions (results then differ by rounding only)
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", WANDB_MODE="offline", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "doodl", "fit", *args(pipeline, root, *extra)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if wait:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out[-3000:]
    return proc


def final_latents(root):
    return {k: v["x"] for k, v in items_state(last_ckpt(root)).items()}


# Two processes equal one: tests/app/test_ranks.py (batch_size 2 on 3 items: rank 1 runs a batch of one).


@pytest.fixture(scope="module")
def uninterrupted(pipeline, tmp_path_factory):
    """The uninterrupted 5-iteration run per ``best_by``, shared by the kill/resume cases."""
    roots: dict[str, Path] = {}

    def get(best_by: str) -> Path:
        if best_by not in roots:
            roots[best_by] = tmp_path_factory.mktemp(f"ref-{best_by}")
            run_cli(pipeline, roots[best_by], *kill_extra(best_by))
        return roots[best_by]

    return get


def kill_extra(best_by: str) -> tuple[str, ...]:
    return ("--data.batch_size=1", "--model.iterations=5", f"--model.best_by={best_by}")


@pytest.mark.parametrize("sig,best_by", [("SIGTERM", "loss"), ("SIGKILL", "loss"), ("SIGTERM", "score")])
def test_kill_and_resume_equals_uninterrupted(pipeline, tmp_path, uninterrupted, sig, best_by):
    """Killed mid-epoch (SIGTERM: saves last.ckpt then exits; SIGKILL: dies, last.ckpt is from
    the epoch before), resumed with --ckpt_path: every item finishes with the same latents, crop
    streams and best iterate as an uninterrupted run, none lost or repeated."""
    ref, cut = uninterrupted(best_by), tmp_path / "cut"
    extra = kill_extra(best_by)
    proc = run_cli(pipeline, cut, *extra, "--trainer.callbacks+=tests.app.fakes.KillAt",
                   f"--trainer.callbacks.signal={sig}", "--trainer.callbacks.epoch=2", wait=False)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == (143 if sig == "SIGTERM" else -9), out[-2000:]
    ckpt = last_ckpt(cut)
    done = {k: v["iterations"] for k, v in items_state(ckpt).items()}
    # SIGTERM lands after item 2 of epoch 2: items 1-2 have run 3 iterations, item 3 only 2
    assert sorted(done.values()) == ([2, 3, 3] if sig == "SIGTERM" else [2, 2, 2]), done
    run_cli(pipeline, cut, *extra, f"--ckpt_path={ckpt}")
    a, b = final_latents(ref), final_latents(cut)
    assert sorted(a) == sorted(b) and len(a) == 3
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=0)
    sa, sb = items_state(last_ckpt(ref)), items_state(last_ckpt(cut))
    for k in a:
        assert sb[k]["best_iteration"] == sa[k]["best_iteration"] and sb[k]["best_rank"] == sa[k]["best_rank"]
        torch.testing.assert_close(sb[k]["best_image"], sa[k]["best_image"], rtol=0, atol=0)
        assert torch.equal(sb[k]["crop_generator"], sa[k]["crop_generator"])
    assert all(v["iterations"] == 5 for v in sb.values())
    results = sorted(cut.rglob("results.jsonl"), key=lambda p: p.stat().st_mtime)[-1]
    assert sorted(json.loads(l)["id"] for l in results.read_text().splitlines()) == sorted(a)


def test_early_stop_at_target_score(pipeline, tmp_path):
    """An item whose score reaches target_score stops; a never-reachable target stops nothing."""
    _, model = fit(pipeline, tmp_path / "a", "--model.target_score=-100.0")
    assert all(s.stopped_early and s.iterations == 1 for s in model.states.values())
    _, model = fit(pipeline, tmp_path / "b", "--model.target_score=100.0")
    assert all(not s.stopped_early and s.iterations == 3 for s in model.states.values())


def test_test_subcommand_scores_saved_images(pipeline, tmp_path):
    trainer, model = fit(pipeline, tmp_path)
    final = Path(trainer.log_dir) / "final"
    cli = main(["test", *args(pipeline, tmp_path), f"--model.eval_dir={final}"])
    metrics = cli.trainer.callback_metrics
    assert "test/score" in metrics
    # the saved images are DOODL's best iterates as scored: their score is the recorded best score
    # (float32 rounding only: the run scored the very 8-bit image it saved)
    best = torch.tensor([s.best_scores["score"] for s in model.states.values()]).mean()
    assert abs(float(metrics["test/score"]) - float(best)) < 1e-5
    with pytest.raises(FileNotFoundError, match="eval_dir"):
        main(["test", *args(pipeline, tmp_path), f"--model.eval_dir={tmp_path / 'nope'}"])


def test_best_iterate_by_score_or_by_loss(pipeline):
    """best_by="score": the result is the iterate with the best score, even when another has a lower
    (crop-noisy) loss; old checkpoints without best_rank load with rank = loss."""
    from doodl.run.items import ItemState
    from doodl.app.module import DOODL
    from doodl.models import StableDiffusion

    from .fakes import MeanColorLoss

    z = torch.zeros(1, 4, 2, 2)
    st = ItemState.create("a", z, z, seed=0)
    for k, (loss, score) in enumerate([(1.0, 0.1), (0.5, 0.05), (2.0, 0.9), (0.7, 0.2)]):
        st.record(loss, k, torch.full((3, 2, 2), float(k)), {"score": score}, rank=-score)
    assert st.best_iteration == 2 and st.best_loss == 2.0 and st.best_scores == {"score": 0.9}
    assert torch.equal(st.best_image, torch.full((3, 2, 2), 2.0))
    by_loss = ItemState.create("b", z, z, seed=0)
    for k, loss in enumerate([1.0, 0.5, 2.0]):
        by_loss.record(loss, k, torch.zeros(3, 2, 2), {"score": 0.0})
    assert by_loss.best_iteration == 1
    state = st.state_dict()
    del state["best_rank"]
    by_loss.load_state_dict(state)
    assert by_loss.best_rank == by_loss.best_loss == 2.0

    model = StableDiffusion(str(pipeline))
    kw = dict(num_steps=2, iterations=1, height=4, width=4)  # 2x2 latents, as the states above
    # a checkpoint restored into a run with best_by="score" is re-ranked by score, not by loss
    resumed = DOODL(model, MeanColorLoss(), best_by="score", **kw)
    resumed.runner.load_state_dict({"a": state})
    assert resumed.runner.state({"id": "a", "seed": 0, "prompt": "p"}).best_rank == -0.9
    assert DOODL(model, MeanColorLoss(), best_by="score", **kw).runner.rank(0.3, {"score": 0.7}) == -0.7
    assert DOODL(model, MeanColorLoss(), **kw).runner.rank(0.3, {"score": 0.7}) == 0.3
    with pytest.raises(ValueError, match="best_by must be 'loss' or 'score'"):
        DOODL(model, MeanColorLoss(), best_by="last", **kw)

    # the direction comes from the loss; a clash or a missing one is an error
    class LowerIsBetter(MeanColorLoss):
        score_direction = "min"

    class NoDirection(MeanColorLoss):
        score_direction = None

    assert DOODL(model, LowerIsBetter(), best_by="score", **kw).runner.rank(0.3, {"score": 0.7}) == 0.7
    assert DOODL(model, NoDirection(), best_by="score", score_direction="min", **kw).runner.rank(0.3, {"score": 0.7}) == 0.7
    with pytest.raises(ValueError, match="improves toward 'max': drop model.score_direction"):
        DOODL(model, MeanColorLoss(), score_direction="min", **kw)
    with pytest.raises(ValueError, match="no better direction"):
        DOODL(model, NoDirection(), best_by="score", **kw)
    with pytest.raises(ValueError, match="no better direction"):
        DOODL(model, NoDirection(), target_score=0.5, **kw)
    DOODL(model, NoDirection(), **kw)  # neither early stop nor best_by score: no direction needed


def test_console_script_exits_zero(pipeline, tmp_path):
    """The installed ``doodl`` command ends a good run with status 0 (not 1 from sys.exit(<CLI>))."""
    script = Path(sys.executable).with_name("doodl")
    if not script.is_file():
        pytest.skip("the doodl console script is not installed next to this interpreter")
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", WANDB_MODE="offline", OMP_NUM_THREADS="1")
    done = subprocess.run([str(script), "fit", *args(pipeline, tmp_path, "--model.iterations=1")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "DOODLCLI object" not in done.stdout + done.stderr
