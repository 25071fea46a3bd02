"""The ``doodl`` command: its own help, user errors in one form and early, the run folder, logger
folders never shared, W&B under the run's root, the progress bar, ``doodl test``'s table."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from doodl.app.cli import console, main

from .test_fit import ROOT, args, pipeline  # noqa: F401 (the session fixture)


class Boom(L.Callback):
    """A bug during training: a ValueError that is not a UserError, raised at the first step."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        raise ValueError("a bug, not the user's")


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*") if p.is_file()) if Path(root).exists() else []


def test_help_is_doodls_own_without_importing_lightning():
    code = ("import sys; from doodl.app.cli import console; status = console(['--help']); "
            "print('lightning loaded' if 'lightning' in sys.modules else 'lightning not loaded', status)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert out.strip().endswith("lightning not loaded 0"), out
    for sub in ("fit", "predict", "test", "compare"):
        assert f"\n  {sub} " in out
    assert "validate" not in out


def test_bare_and_unknown_subcommands_answer_at_once(capsys):
    assert console([]) == 2
    assert "usage: doodl {fit,predict,test,compare}" in capsys.readouterr().err
    assert console(["validate"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("doodl: error: unknown subcommand 'validate'") and "fit, predict, test" in err


def test_validate_is_not_a_subcommand_of_the_parser(pipeline, capsys):
    with pytest.raises(SystemExit) as e:
        main(["validate", *args(pipeline, "/tmp/unused")])
    assert e.value.code == 2


@pytest.mark.parametrize("option,message", [
    ("--model.mix=1.5", "mix"),
    ("--model.grad_mode=foo", "grad_mode must be one of"),
    ("--model.height=13", "model.height=13, model.width=16: height and width must be multiples of 2"),
    ("--trainer.max_epochs=1", "trainer.max_epochs=1 is below model.iterations=3"),
    ("--model.model.init_args.pretrained=/nonexistent/tiny-sd", "/nonexistent/tiny-sd"),
])
def test_user_errors_print_one_line_and_exit_2(pipeline, tmp_path, capsys, monkeypatch, option, message):
    monkeypatch.delenv("DOODL_TRACEBACK", raising=False)
    assert console(["fit", *args(pipeline, tmp_path), option]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = [line for line in err.splitlines() if line.startswith("doodl: error: ")]
    assert len(last) == 1 and message in last[0], err[-3000:]
    monkeypatch.setenv("DOODL_TRACEBACK", "1")
    assert console(["fit", *args(pipeline, tmp_path), option]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "doodl: error: " in err


def test_main_keeps_raising_and_bugs_keep_their_traceback(pipeline, tmp_path):
    with pytest.raises(ValueError, match="grad_mode"):
        main(["fit", *args(pipeline, tmp_path), "--model.grad_mode=foo"])
    # a ValueError during training is a bug, not a user error: console lets it through
    with pytest.raises(ValueError, match="a bug, not the user's"):
        console(["fit", *args(pipeline, tmp_path), "--trainer.callbacks+=tests.app.test_cli.Boom"])


def test_prompt_file_errors_come_before_any_model_loads(tmp_path, capsys):
    """Every bad row is listed although the pipeline folder does not exist: the file is read first;
    and nothing is written (no run folder, no logger folder)."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"seed": 3}\n{"prompt": "x", "seed": -1}\n')
    root = tmp_path / "root"
    assert console(["fit", *args("/nonexistent/pipeline", root), f"--data.path={bad}", "--data.prompts=null"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2" in err and f"{bad}:3" in err and "/nonexistent/pipeline" not in err
    assert files_under(root) == [] and not root.exists()


def test_items_the_loss_cannot_run_leave_no_run_folder(pipeline, tmp_path, monkeypatch):
    """An item check that fails after the models are built still comes before the trainer: no run
    folder, no logger folder, no checkpoint."""
    from doodl.app.data import PromptDataModule

    def refuse(self, guidance):
        raise ValueError("p.jsonl:2: target_class 12 is not in [0, 10)")

    monkeypatch.setattr(PromptDataModule, "check_against", refuse)
    root = tmp_path / "root"
    with pytest.raises(ValueError, match="target_class 12"):
        main(["fit", *args(pipeline, root)])
    assert files_under(root) == []


def test_a_fixed_logger_version_never_takes_another_runs_folder(pipeline, tmp_path):
    fixed = ("--trainer.logger.init_args.version=mine", "--model.iterations=1")
    cli = main(["fit", *args(pipeline, tmp_path, *fixed)])
    metrics = Path(cli.trainer.log_dir) / "metrics.csv"
    before = metrics.read_bytes()
    with pytest.raises(FileExistsError, match="pick another version"):
        main(["fit", *args(pipeline, tmp_path, *fixed)])
    assert metrics.read_bytes() == before


def test_run_folder_progress_bar_and_test_table(pipeline, tmp_path, capsys):
    cli = main(["fit", *args(pipeline, tmp_path, "--model.iterations=2", "--trainer.enable_progress_bar=true")])
    run = Path(cli.trainer.log_dir)
    out = capsys.readouterr().out
    assert out.count(f"doodl: run folder: {run}") == 2  # at the start and at the end
    assert "doodl: 3 items: " in out  # the module's summary, printed after the bar closed, is not lost
    from doodl.app.progress import IterationBar

    bar = cli.trainer.progress_bar_callback
    assert isinstance(bar, IterationBar) and bar.train_progress_bar.desc.startswith("iteration 2/2")

    test = main(["test", *args(pipeline, tmp_path), f"--model.eval_dir={run / 'final'}"])
    table = Path(test.trainer.log_dir) / "test" / "results.csv"
    rows = list(csv.DictReader(table.open()))
    ids = sorted(it["id"] for it in cli.datamodule.items)
    assert [r["id"] for r in rows] == ids  # full ids, every item
    metrics = test.trainer.callback_metrics
    for r in rows:
        assert float(r["score"]) == pytest.approx(float(metrics[f"test/items/{r['id']}/score"]), rel=1e-6)
        assert r["prompt"] and r["seed"] == "0"


def default_logger_config(folder: Path) -> Path:
    """tests/conf/tiny.yaml with the default logger (doodl's WandbLogger; offline in the tests)."""
    import yaml

    conf = yaml.safe_load((ROOT / "tests" / "conf" / "tiny.yaml").read_text())
    del conf["trainer"]["logger"]
    (folder / "c.yaml").write_text(yaml.safe_dump(conf))
    return folder / "c.yaml"


def test_wandb_writes_under_the_runs_root(pipeline, tmp_path, monkeypatch):
    """The default logger saves under trainer.default_root_dir, not ./outputs."""
    conf = default_logger_config(tmp_path)
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "elsewhere"
    cli = main(["fit", "-c", str(conf), f"--model.model.init_args.pretrained={pipeline}",
                f"--trainer.default_root_dir={root}", "--model.iterations=1"])
    assert Path(cli.trainer.logger.save_dir) == root
    assert (root / "wandb").is_dir() and not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("option,error", [
    ("--model.guidance_scale=-1.0", ValueError),  # refused by the module: built before the trainer
    ("--model.model.init_args.pretrained=/nonexistent/pipe", FileNotFoundError),
])
def test_a_refused_run_leaves_no_folder_and_no_wandb_run(pipeline, tmp_path, monkeypatch, option, error):
    conf = default_logger_config(tmp_path)
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "root"
    with pytest.raises(error):
        main(["fit", "-c", str(conf), f"--model.model.init_args.pretrained={pipeline}",
              f"--trainer.default_root_dir={root}", option])
    assert not root.exists() and not (tmp_path / "outputs").exists()


def test_failed_items_make_the_status_1(pipeline, tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "ok"}\n{"prompt": "bad", "poison": true}\n')
    status = console(["fit", *args(pipeline, tmp_path, f"--data.path={prompts}", "--data.prompts=null",
                                   "--model.iterations=1")])
    assert status == 1
    assert "doodl: 1 of 2 items failed (see results.csv)" in capsys.readouterr().err


class ThreadProbe(L.Callback):
    """Notes torch's thread count and OMP_NUM_THREADS when training starts."""

    seen: list = []

    def on_train_start(self, trainer, pl_module):
        ThreadProbe.seen.append((torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")))


def test_threads_option_sets_torch_threads_for_the_run_only(pipeline, tmp_path, monkeypatch):
    """``--threads N`` is torch's thread count during the run; the caller's is back afterwards."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    ThreadProbe.seen = []
    try:
        main(["fit", *args(pipeline, tmp_path, "--model.iterations=1", "--threads=1",
                           "--trainer.callbacks+=tests.app.test_cli.ThreadProbe")])
        assert ThreadProbe.seen == [(1, "1")]
        assert (torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")) == (2, None)  # restored
        main(["fit", *args(pipeline, tmp_path / "b", "--model.iterations=1",
                           "--trainer.callbacks+=tests.app.test_cli.ThreadProbe")])
        assert ThreadProbe.seen[1] == (2, None)  # no --threads: the caller's count
    finally:
        torch.set_num_threads(before)
    with pytest.raises(SystemExit):  # the parser's own error: not a positive int
        main(args(pipeline, tmp_path / "c", "--threads=0"), run=False)


def test_an_old_cutouts_number_gets_the_new_form(tmp_path, capsys):
    """A config from before Cutouts objects (``cutouts: 16``) is refused with the form to write, once."""
    import yaml

    from doodl.app.cli import main

    root = Path(__file__).resolve().parents[2]
    cfg = yaml.safe_load((root / "configs" / "digits.yaml").read_text())
    cfg["model"]["guidance"]["init_args"]["cutouts"] = 16
    cfg["data"]["path"] = str(root / "configs" / "prompts" / "digits.jsonl")
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit):
        main(["fit", "-c", str(path), "--print_config"])
    err = capsys.readouterr().err
    assert err.count("cutouts is a Cutouts object now") == 1 and "class_path: doodl.guidance.cutouts.Cutouts" in err
