"""Resuming with --ckpt_path: more (or fewer) iterations honoured, every other changed setting
refused by name, a bad checkpoint file named; Ctrl-C saves like SIGTERM."""

from __future__ import annotations

import pytest
import torch

from doodl.app.cli import console, main
from doodl.app.resume import differences

from .test_fit import args, items_state, last_ckpt, pipeline, run_cli  # noqa: F401 (the session fixture)


def fit(pipeline, root, *extra):
    return main(["fit", *args(pipeline, root, "--data.batch_size=1", *extra)])


def test_more_iterations_continue_finished_items_exactly(pipeline, tmp_path):
    """A finished 2-iteration run resumed with 4 iterations equals a 4-iteration run."""
    ref = fit(pipeline, tmp_path / "ref", "--model.iterations=4")
    short = fit(pipeline, tmp_path / "cut", "--model.iterations=2")
    assert all(st.iterations == 2 for st in short.model.states.values())
    ckpt = last_ckpt(tmp_path / "cut")
    longer = fit(pipeline, tmp_path / "cut", "--model.iterations=4", f"--ckpt_path={ckpt}")
    assert sorted(longer.model.states) == sorted(ref.model.states)
    for k, st in ref.model.states.items():
        again = longer.model.states[k]
        assert again.iterations == 4 and again.best_iteration == st.best_iteration
        torch.testing.assert_close(again.x.detach(), st.x.detach(), rtol=0, atol=0)  # the same computation
    # fewer iterations: nothing runs beyond the new count
    fewer = fit(pipeline, tmp_path / "cut", "--model.iterations=1", f"--ckpt_path={ckpt}")
    assert all(st.iterations == 2 for st in fewer.model.states.values())


def test_other_changed_settings_are_refused_by_name(pipeline, tmp_path, capsys):
    fit(pipeline, tmp_path, "--model.iterations=1")
    ckpt = last_ckpt(tmp_path)
    with pytest.raises(ValueError) as e:
        fit(pipeline, tmp_path, "--model.num_steps=6", "--model.height=24", f"--ckpt_path={ckpt}")
    text = str(e.value)
    assert "model.num_steps: checkpoint 4, this run 6" in text and "model.height: checkpoint 16, this run 24" in text
    assert "start a new run without --ckpt_path" in text and "model.width" not in text
    # the console prints it as a user error
    assert console(["fit", *args(pipeline, tmp_path, "--model.cfg_scale=5.0", f"--ckpt_path={ckpt}")]) == 2
    assert "doodl: error: --ckpt_path" in capsys.readouterr().err


def test_differences_compare_nested_settings_and_skip_what_resume_honours():
    saved = {"iterations": 2, "mix": 0.93, "guidance": {"class_path": "A", "init_args": {"crop": 8}}, "old": 1}
    now = {"iterations": 5, "mix": 0.93, "guidance": {"class_path": "A", "init_args": {"crop": 4}}, "eval_dir": "x"}
    assert differences(saved, now) == [("guidance.init_args.crop", 8, 4)]


def test_a_bad_checkpoint_file_is_named(pipeline, tmp_path):
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=f"--ckpt_path {garbage} is not a readable checkpoint"):
        fit(pipeline, tmp_path, f"--ckpt_path={garbage}")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        fit(pipeline, tmp_path, f"--ckpt_path={tmp_path}")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fit(pipeline, tmp_path, f"--ckpt_path={tmp_path / 'nope.ckpt'}")


def test_ctrl_c_saves_like_sigterm_and_exits_130(pipeline, tmp_path):
    extra = ("--data.batch_size=1", "--model.iterations=5")
    proc = run_cli(pipeline, tmp_path, *extra, "--trainer.callbacks+=tests.app.fakes.KillAt",
                   "--trainer.callbacks.signal=SIGINT", "--trainer.callbacks.epoch=2", wait=False)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, out[-2000:]
    ckpt = last_ckpt(tmp_path)
    # as with SIGTERM: the step under way finishes, then last.ckpt (items 1-2 at 3 iterations, item 3 at 2)
    assert sorted(v["iterations"] for v in items_state(ckpt).values()) == [2, 3, 3]
    run_cli(pipeline, tmp_path, *extra, f"--ckpt_path={ckpt}")
    assert all(v["iterations"] == 5 for v in items_state(last_ckpt(tmp_path)).values())


def test_checkpoints_from_before_injected_updates_are_compared_with_the_update():
    """A checkpoint written when the update's settings were model keys (clip_grad_val, ...) resumes
    with the same update and is refused, naming the setting, with another."""
    from doodl.app.resume import legacy_update_differences

    paper = "doodl.core.update.DOODLOptimizer"
    saved = {"clip_grad_val": 0.3, "perturb": 0.001, "tied": True, "iterations": 3}
    same = {"update": {"class_path": paper, "init_args": {"clip_grad_val": 0.3, "perturb": 0.001}}}
    assert legacy_update_differences(saved, same) == []
    assert legacy_update_differences({"clip_grad_val": 1e-3, "perturb": 1e-4}, {}) == []  # unset: the published ones
    other = {"update": {"class_path": paper, "init_args": {"clip_grad_val": 0.01, "perturb": 0.001}}}
    assert legacy_update_differences(saved, other) == [("update.init_args.clip_grad_val", 0.3, 0.01)]
    adamw = {"update": {"class_path": "doodl.core.updates.AdamWUpdate", "init_args": {}}}
    (diff,) = legacy_update_differences(saved, adamw)
    assert diff[0] == "update" and "predates injected updates" in diff[1]
    assert legacy_update_differences({**saved, "update": None}, other) == []  # a new checkpoint: compared as usual
