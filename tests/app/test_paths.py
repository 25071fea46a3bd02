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


# ---- relative paths of a config file: against the file's folder ------------------------------------
def test_who_set_a_path_the_last_source_wins(tmp_path):
    from doodl.app.config_paths import who_set

    conf = tmp_path / "conf" / "c.yaml"
    conf.parent.mkdir()
    conf.write_text("data:\n  path: p.jsonl\n")
    assert who_set(["fit", "-c", str(conf)]) == {"data.path": conf.parent}
    assert who_set(["fit", "-c", str(conf), "--data.path", "q.jsonl"]) == {"data.path": None}
    assert who_set(["fit", "--data.path=q.jsonl", f"--config={conf}"]) == {"data.path": conf.parent}
    assert who_set(["fit", "--model.iterations=2"]) == {}


def test_shipped_configs_read_their_prompts_from_any_folder(tmp_path, monkeypatch):
    from pathlib import Path

    from doodl.app.config_paths import who_set
    from doodl.app.prompts import read_items

    import yaml

    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(tmp_path)
    for conf in sorted((root / "configs").glob("*.yaml")):
        path = (yaml.safe_load(conf.read_text()).get("data") or {}).get("path")
        if path is None:
            continue
        folder = who_set(["fit", "-c", str(conf)])["data.path"]
        assert read_items(folder / path), conf.name


def test_a_configs_data_path_is_relative_to_the_config(tmp_path, monkeypatch):
    import yaml

    from doodl.app.cli import main
    from doodl.models.tiny import save_tiny_pipeline

    from .test_fit import CONF

    pipe = tmp_path / "tiny-sd"
    save_tiny_pipeline(pipe)
    conf = yaml.safe_load(CONF.read_text())
    conf["data"] = {"path": "p.jsonl"}
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "c.yaml").write_text(yaml.safe_dump(conf))
    (folder / "p.jsonl").write_text('{"prompt": "from the config folder"}\n')
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "p.jsonl").write_text('{"prompt": "from the working folder"}\n')
    monkeypatch.chdir(tmp_path / "work")
    common = ["-c", str(folder / "c.yaml"), f"--model.model.init_args.pretrained={pipe}", "--model.iterations=1",
              f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path}"]
    cli = main(["fit", *common])
    assert [it["prompt"] for it in cli.datamodule.items] == ["from the config folder"]
    cli = main(["fit", *common, "--data.path=p.jsonl"])  # the command line: the working folder
    assert [it["prompt"] for it in cli.datamodule.items] == ["from the working folder"]


def test_wandb_logger_passes_no_unset_anonymous_setting(tmp_path):
    """wandb warns on every run when Lightning's anonymous=None reaches wandb.init; doodl's logger leaves it out."""
    from doodl.app.loggers import WandbLogger

    assert "anonymous" not in WandbLogger(save_dir=str(tmp_path), offline=True)._wandb_init
    assert WandbLogger(save_dir=str(tmp_path), offline=True, anonymous=True)._wandb_init["anonymous"] == "allow"
