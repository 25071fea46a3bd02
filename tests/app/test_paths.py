"""run_dir: one folder per run, versioned by the logger or named uniquely, stable within a run."""

import os

import lightning as L
from lightning.pytorch.loggers import CSVLogger

from doodl.app.paths import run_dir


def trainer(root, logger):
    return L.Trainer(accelerator="cpu", default_root_dir=root, logger=logger, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False)


def test_csv_logger_runs_get_their_versioned_log_dir(tmp_path):
    first = trainer(tmp_path, CSVLogger(tmp_path))
    a = run_dir(first)
    (a / "marker").write_text("first run")  # the logger versions by the folders already there
    b = run_dir(trainer(tmp_path, CSVLogger(tmp_path)))
    assert a == tmp_path / "lightning_logs" / "version_0" and a.is_dir()
    assert b == tmp_path / "lightning_logs" / "version_1" and b.is_dir()
    assert run_dir(first) == a  # stable within a run


def test_without_logger_each_run_gets_a_new_folder(tmp_path, monkeypatch):
    monkeypatch.setattr("doodl.app.paths._timestamp", lambda: "20260101-000000")
    t1, t2, t3 = (trainer(tmp_path, False) for _ in range(3))
    dirs = [run_dir(t) for t in (t1, t2, t3)]  # same process, same second: still three folders
    assert len(set(dirs)) == 3
    assert all(d.parent == tmp_path / "runs" and d.is_dir() for d in dirs)
    assert dirs[0].name == f"20260101-000000-{os.getpid()}"
    assert dirs[1].name == dirs[0].name + "-1" and dirs[2].name == dirs[0].name + "-2"
    assert run_dir(t1) == dirs[0] and run_dir(t3) == dirs[2]
