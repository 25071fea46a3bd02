"""Prompt sets from Hugging Face ``datasets``, made in the test (never the network): save_to_disk
folders, parquet / json / arrow files, a hub id from the cache, column mapping, splits, row limits,
and the errors, also through ``doodl fit``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from doodl.app.cli import console, main
from doodl.app.data import PromptDataModule
from doodl.app.prompt_datasets import absolute_source, is_dataset_source, parse_source
from doodl.app.prompts import read_items

from .test_fit import ROOT, args, pipeline  # noqa: F401 (the session fixture)

PROMPTS = ["a red square", "a blue circle", "a green field"]


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    """datasets prepares what it reads from data files under its cache: keep that in the test's folder."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_datasets_cache")
    return tmp_path / "hf_datasets_cache"


def parti_like():
    """PartiPrompts' layout: the prompt in 'Prompt', with columns doodl does not read."""
    import datasets

    return datasets.Dataset.from_dict({"Prompt": PROMPTS, "Category": ["Shapes", "Shapes", "Scenes"],
                                       "label": [3, 1, 4], "seed": [7, None, 9]})


@pytest.fixture
def saved(tmp_path):
    folder = tmp_path / "parti"
    parti_like().save_to_disk(str(folder))
    return folder


def prompts_of(items):
    return [it["prompt"] for it in items]


def test_save_to_disk_folder_with_columns_mapped_in_the_path_or_as_arguments(saved):
    assert is_dataset_source(saved) and is_dataset_source(f"{saved}?prompt=Prompt")
    items = read_items(f"{saved}?prompt=Prompt&target_class=label", seeds=[0, 5])
    # row 2's seed is an Arrow null: absent, so it takes the default seeds; 'Category' is not read
    assert [(it["row"], it["prompt"], it["seed"], it["target_class"]) for it in items] == [
        (1, PROMPTS[0], 7, 3), (2, PROMPTS[1], 0, 1), (2, PROMPTS[1], 5, 1), (3, PROMPTS[2], 9, 4)]
    assert all(set(it) == {"id", "row", "prompt", "seed", "target_class"} for it in items)
    assert items[0]["id"] == "00001-a-red-square-s7"
    same = read_items(saved, seeds=[0, 5], columns={"prompt": "Prompt", "target_class": "label"})
    assert same == items
    kept = read_items(f"{saved}?prompt=Prompt&Category=Category&rows=2")  # a column mapped to itself passes through
    assert [it["Category"] for it in kept] == ["Shapes", "Shapes"] and len(kept) == 2


def test_parquet_json_and_arrow_files_and_folders(saved, tmp_path, datasets_cache):
    ds = parti_like()
    ds.to_parquet(str(tmp_path / "p.parquet"))
    (tmp_path / "jsonl").mkdir()
    ds.to_json(str(tmp_path / "jsonl" / "train.jsonl"))
    ds.to_json(str(tmp_path / "one.json"))
    arrow = next(saved.glob("*.arrow"))
    expected = read_items(f"{saved}?prompt=Prompt")
    for source in (tmp_path / "p.parquet", tmp_path / "jsonl", arrow, f"hf:{tmp_path / 'one.json'}"):
        assert read_items(f"{source}?prompt=Prompt") == expected, source
    assert read_items(tmp_path / "p.parquet", columns={"prompt": "Prompt"}, rows=1) == expected[:1]
    assert any(datasets_cache.iterdir())  # datasets' own cache, here in the test's folder


def test_splits(tmp_path):
    import datasets

    ds = parti_like()
    datasets.DatasetDict({"train": ds, "test": ds.select([2])}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'dd'}: the dataset has splits train, test: choose one")):
        read_items(f"{tmp_path / 'dd'}?prompt=Prompt")
    assert prompts_of(read_items(f"{tmp_path / 'dd'}?prompt=Prompt&split=test")) == [PROMPTS[2]]
    assert prompts_of(read_items(tmp_path / "dd", columns={"prompt": "Prompt"}, split="train")) == PROMPTS
    with pytest.raises(ValueError, match=r"no split 'val'; the dataset's splits: train, test"):
        read_items(tmp_path / "dd", columns={"prompt": "Prompt"}, split="val")


def test_missing_columns_name_the_datasets_columns(saved):
    with pytest.raises(ValueError, match=re.escape(f"{saved}: no column 'Prompts' (for 'prompt'); the dataset's columns: "
                                                   "Prompt, Category, label, seed")):
        read_items(f"{saved}?prompt=Prompts")
    with pytest.raises(ValueError, match=r"no 'prompt' column; the dataset's columns: Prompt, .*\?prompt=Prompt"):
        read_items(saved)
    with pytest.raises(ValueError, match="two doodl fields read the same column"):
        read_items(saved, columns={"prompt": "Prompt", "id": "Prompt"})


def test_bad_rows_are_listed_with_the_source_and_row(tmp_path):
    import datasets

    folder = tmp_path / "bad"
    datasets.Dataset.from_dict({"text": ["ok", "", "fine", "x"], "target_class": [1, 2, -1, 3]}).save_to_disk(str(folder))
    with pytest.raises(ValueError) as e:
        read_items(f"{folder}?prompt=text")
    msg = str(e.value)
    assert "2 bad row(s)" in msg and f"{folder}:2: empty 'prompt'" in msg
    assert f"{folder}:3: 'target_class' must be an int >= 0, got -1" in msg and f"{folder}:1:" not in msg


def test_image_columns_are_refused(tmp_path):
    import datasets
    from PIL import Image

    ds = datasets.Dataset.from_dict({"prompt": ["a"], "image": [Image.new("RGB", (4, 4))]})
    assert type(ds.features["image"]).__name__ == "Image"
    ds.save_to_disk(str(tmp_path / "img"))
    with pytest.raises(ValueError, match="column 'image' holds Image data"):
        read_items(tmp_path / "img")


def test_hub_id_from_the_cache_and_offline_miss(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    snap = tmp_path / "hub" / "datasets--some-owner--parti" / "snapshots" / ("ab" * 20)
    snap.mkdir(parents=True)
    parti_like().to_parquet(str(snap / "train.parquet"))  # as `hf download --repo-type dataset` leaves it
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("ab" * 20)
    items = read_items("hf:some-owner/parti?prompt=Prompt&split=train")
    assert prompts_of(items) == PROMPTS
    start = time.monotonic()
    with pytest.raises(FileNotFoundError) as e:
        read_items("hf:nobody-owner/not-cached?prompt=Prompt")
    assert time.monotonic() - start < 5
    msg = str(e.value)
    assert "hub dataset 'nobody-owner/not-cached' is not in the local Hugging Face cache" in msg
    assert "HF_HUB_OFFLINE=1" in msg and "--repo-type dataset" in msg and "save_to_disk" in msg


def test_options_and_their_errors(saved, tmp_path):
    src = parse_source("hf:owner/name?split=test&rows=5&name=cfg&prompt=Prompt")
    assert (src.location, src.hub, src.split, src.rows, src.name, src.columns) == (
        "owner/name", True, "test", 5, "cfg", {"prompt": "Prompt"})
    assert src.label() == "hf:owner/name[test]"
    for bad, message in ((f"{saved}?rows=two", "rows must be an integer >= 1"), (f"{saved}?rows=0", "rows must be"),
                         (f"{saved}?prompt=", "option 'prompt' has no value"),
                         (f"{saved}?prompt=A&prompt=B", "option 'prompt' is given twice")):
        with pytest.raises(ValueError, match=message):
            read_items(bad)
    with pytest.raises(ValueError, match="split is given both in the path and as an argument"):
        read_items(f"{saved}?split=train", split="train")
    txt = tmp_path / "p.txt"
    txt.write_text("a cat\n")
    with pytest.raises(ValueError, match="columns apply to Hugging Face datasets sources, not to the prompt file"):
        read_items(txt, columns={"prompt": "Prompt"})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_items(f"{tmp_path / 'nowhere'}?prompt=Prompt")
    # a folder without data files is still "a directory", as before datasets
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=re.escape(f"prompt file {tmp_path / 'empty'} is a directory: give a .txt")):
        read_items(tmp_path / "empty")


def test_relative_sources_from_a_config_folder(tmp_path):
    (tmp_path / "sets" / "parti").mkdir(parents=True)
    assert absolute_source("sets/parti?prompt=Prompt", tmp_path) == f"{tmp_path / 'sets' / 'parti'}?prompt=Prompt"
    assert absolute_source("hf:./sets/parti", tmp_path) == f"hf:{tmp_path / 'sets' / 'parti'}"
    assert absolute_source("hf:owner/name?split=train", tmp_path) == "hf:owner/name?split=train"
    assert absolute_source("/abs/set?prompt=P", tmp_path) == "/abs/set?prompt=P"


def test_datamodule_reads_a_dataset_through_path(saved):
    dm = PromptDataModule(path=f"{saved}?prompt=Prompt&rows=2", seeds=[1])
    assert prompts_of(dm.items) == PROMPTS[:2] and [it["seed"] for it in dm.items] == [7, 1]


def test_fit_on_a_dataset_and_print_config(pipeline, saved, tmp_path, capsys):
    source = f"{saved}?prompt=Prompt&rows=2"
    with pytest.raises(SystemExit) as e:
        main(["fit", *args(pipeline, "/tmp/unused"), f"--data.path={source}", "--data.prompts=null", "--print_config"])
    assert e.value.code == 0
    assert f"path: {source}" in capsys.readouterr().out
    cli = main(["fit", *args(pipeline, tmp_path / "run"), f"--data.path={source}", "--data.prompts=null",
                "--model.iterations=1"])
    assert prompts_of(cli.trainer.datamodule.items) == PROMPTS[:2]
    assert len(list((Path(cli.trainer.log_dir) / "final").glob("*.png"))) == 2


def test_a_missing_column_fails_before_any_model_loads(saved, tmp_path, capsys):
    root = tmp_path / "root"
    status = console(["fit", *args("/nonexistent/pipeline", root), f"--data.path={saved}?prompt=Prompts",
                      "--data.prompts=null"])
    assert status == 2
    err = capsys.readouterr().err
    assert "no column 'Prompts' (for 'prompt'); the dataset's columns: Prompt, Category, label, seed" in err
    assert "/nonexistent/pipeline" not in err and not root.exists()


def test_doodl_fit_command_reads_a_dataset_folder_offline(pipeline, saved, tmp_path):
    """The installed command in a fresh process: datasets imported there, offline, its cache under the test."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", WANDB_MODE="offline", OMP_NUM_THREADS="1",
               HF_DATASETS_CACHE=str(tmp_path / "cache"))
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
    cmd = [sys.executable, "-m", "doodl", "fit", *args(pipeline, tmp_path / "run"), f"--data.path={saved}?prompt=Prompt",
           "--data.prompts=null", "--model.iterations=1"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    finals = list(Path(tmp_path / "run").rglob("final/*.png"))
    assert len(finals) == 3
