"""Prompt files checked before a run: columns nothing reads, repeated rows, what the loss needs of
each item (every bad row at once, as file:line), images that decode, and files that name themselves."""

import re
import warnings
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from doodl.app.data import PromptDataModule, read_items
from doodl.app.item_checks import ItemWarning, check_items
from doodl.run.start import load_image
from doodl.guidance import CallableLoss, ClassifierLoss, CompositeLoss

from ..guidance.conftest import TinyNet
from .fakes import MeanColorLoss
from .test_data import jsonl, png, write
from .test_fit import args, pipeline  # noqa: F401 (the tiny pipeline fixture)

ROOT = Path(__file__).resolve().parents[2]


def mean_loss(images, items):
    return images.mean((1, 2, 3))


@contextmanager
def no_item_warnings():
    """A block in which an ItemWarning fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", ItemWarning)
        yield


def classifier(**kwargs):
    torch.manual_seed(0)
    return ClassifierLoss(TinyNet(10), input_size=8, **kwargs)  # 10 classes, read from one forward


# ---- columns that nothing reads ------------------------------------------------------------------
def test_misspelt_column_warns_once_with_lines_and_nearest_field(tmp_path):
    p = jsonl(tmp_path, [{"prompt": "a", "weigth": 5.0}, {"prompt": "b"}, {"prompt": "c", "weigth": 2.0, "colour": 1}])
    dm = PromptDataModule(path=str(p))
    with pytest.warns(ItemWarning) as record:
        dm.check_against(MeanColorLoss())
    messages = [str(w.message) for w in record if issubclass(w.category, ItemWarning)]
    assert len(messages) == 2, messages  # one per unknown column, not one per row
    weigth = next(m for m in messages if "'weigth'" in m)
    assert weigth.startswith(f"{p}:1, 3: column 'weigth' is read by neither doodl nor the guidance loss")
    assert "did you mean 'weight'?" in weigth and "--data.strict true" in weigth
    colour = next(m for m in messages if "'colour'" in m)
    assert colour.startswith(f"{p}:3: column 'colour'") and "did you mean" not in colour
    assert "doodl reads prompt, seed, seeds, id, image, weight; MeanColorLoss reads 'poison'" in colour


def test_strict_makes_unknown_columns_one_error_listing_every_row(tmp_path):
    p = jsonl(tmp_path, [{"prompt": "a", "weigth": 5.0}, {"prompt": "b"}, {"prompt": "c", "weigth": 2.0}])
    dm = PromptDataModule(path=str(p), strict=True)
    assert dm.hparams.strict is True
    with pytest.raises(ValueError) as e:
        dm.check_against(MeanColorLoss())
    msg = str(e.value)
    assert "2 problem(s) with the items for the guidance loss MeanColorLoss" in msg
    assert f"{p}:1: column 'weigth'" in msg and f"{p}:3: column 'weigth'" in msg and f"{p}:2:" not in msg
    with pytest.raises(ValueError, match="strict must be true or false"):
        PromptDataModule(path=str(p), strict="yes")


def test_columns_a_loss_reads_are_known_and_a_fixed_target_makes_its_column_unread(tmp_path):
    p = jsonl(tmp_path, [{"prompt": "a", "style": "oil", "target_class": 3, "weight": 2.0, "seed": 4}])
    items = read_items(p)
    with no_item_warnings():
        check_items(items, CallableLoss(mean_loss, item_keys=["style", "target_class"]), str(p))  # declared keys
        check_items(items, CompositeLoss([classifier(), CallableLoss(mean_loss, item_keys=["style"])]), str(p))
    # a fixed target_class replaces the column: the user's per-row classes would be ignored silently
    with pytest.warns(ItemWarning, match=re.escape(f"{p}:1: column 'target_class'") + ".*does not read it"):
        check_items(items, CompositeLoss([classifier(target_class=1), CallableLoss(mean_loss, item_keys=["style"])]),
                    str(p))
    with pytest.warns(ItemWarning, match=r"column 'style' .*CallableLoss reads 'target_class' \("):
        check_items(items, CallableLoss(mean_loss, item_keys=["target_class"]), str(p))


# ---- repeated rows ---------------------------------------------------------------------------------
def test_repeated_rows_warn_naming_both_lines_and_strict_refuses(tmp_path):
    rows = [{"prompt": "a", "seed": 1}, {"prompt": "a", "seed": 2}, {"prompt": "a", "seed": 1},
            {"prompt": "a", "seed": 1, "target_class": 4}]  # another target: another item, not a repeat
    p = jsonl(tmp_path, rows)
    with pytest.warns(ItemWarning) as record:
        dm = PromptDataModule(path=str(p))
    messages = [str(w.message) for w in record if issubclass(w.category, ItemWarning)]
    assert messages == [f"{p}:3: the same prompt, seed 1 and fields as {p}:1: it would run twice; remove one of "
                        "the rows (--data.strict true makes this an error)"]
    assert len(dm.items) == 4  # warned, not dropped
    with pytest.raises(ValueError, match=re.escape(f"1 repeated row(s) (--data.strict is on)") + r"(.|\n)*"
                       + re.escape(f"{p}:3: the same prompt")):
        PromptDataModule(path=str(p), strict=True)
    with no_item_warnings():
        PromptDataModule(path=str(write(tmp_path, "q.txt", "a\nb\n")), seeds=[0, 1])
    with pytest.warns(ItemWarning, match=re.escape("prompts[2]: the same prompt, seed 0 and fields as prompts[0]")):
        PromptDataModule(prompts=["x", "y", "x"])


# ---- items against the loss: every bad row in one error ------------------------------------------------
def test_classifier_items_checked_against_its_class_count(tmp_path):
    p = jsonl(tmp_path, [{"prompt": "ok", "target_class": 9}, {"prompt": "none"}, {"prompt": "big", "target_class": 12},
                         {"prompt": "also", "target_class": 10, "weigth": 1}])
    dm = PromptDataModule(path=str(p))
    loss = classifier()
    with pytest.raises(ValueError) as e:
        dm.check_against(loss)
    msg = str(e.value)
    assert "3 problem(s) with the items for the guidance loss ClassifierLoss" in msg
    assert f"{p}:3: target_class 12 is out of range for a 10-class classifier (0-9)" in msg
    assert f"{p}:4: target_class 10 is out of range for a 10-class classifier (0-9)" in msg
    assert f"{p}:2: no 'target_class': give the item a 'target_class', or set a fixed target_class on the loss" in msg
    assert f"{p}:1:" not in msg and "weigth" not in msg  # without strict, unknown columns only warn
    with pytest.raises(ValueError, match="4 problem"):
        PromptDataModule(path=str(p), strict=True).check_against(loss)  # ... and with strict, they are listed too
    # a fixed class: the rows need none, and their own classes (12 included) are not read: said, not refused
    with pytest.warns(ItemWarning) as record:
        dm.check_against(classifier(target_class=2))
    messages = sorted(str(w.message) for w in record if issubclass(w.category, ItemWarning))
    assert len(messages) == 2 and "does not read it" in messages[0], messages
    assert messages[0].startswith(f"{p}:1, 3, 4: column 'target_class'") and "'weigth'" in messages[1]


def test_txt_file_under_a_classifier_is_one_error_with_the_fix(tmp_path):
    p = write(tmp_path, "p.txt", "a cat\na dog\n\na bird\n")
    with pytest.raises(ValueError) as e:
        PromptDataModule(path=str(p)).check_against(classifier())
    msg = str(e.value)
    assert msg.count("\n") == 0 and msg.count("target_class") >= 3, msg
    assert msg.startswith(f"{p}: a .txt prompt file gives each item only a prompt, but the guidance loss ClassifierLoss"
                          " needs 'target_class'")
    assert "use a .jsonl or .csv prompt file with a 'target_class' column, or set a fixed one on the loss " \
           "(model.guidance.init_args.target_class)" in msg
    PromptDataModule(path=str(p)).check_against(classifier(target_class=0))


def test_composite_checks_every_part_and_setup_checks_when_nobody_did(tmp_path):
    p = jsonl(tmp_path, [{"prompt": "a", "target_class": 11}, {"prompt": "b", "target_class": 1, "style": "x"}])
    both = CompositeLoss({"cls": classifier(), "fn": CallableLoss(mean_loss, item_keys=["style"])})
    assert both.item_keys == ("target_class", "style")
    dm = PromptDataModule(path=str(p))
    dm.trainer = SimpleNamespace(lightning_module=SimpleNamespace(guidance=both))
    with pytest.raises(ValueError) as e:
        dm.setup("fit")
    msg = str(e.value)
    assert f"{p}:1: cls: target_class 11 is out of range for a 10-class classifier (0-9)" in msg
    assert f"{p}:1: fn: no 'style': the callable loss 'mean_loss' reads it from every item" in msg
    assert f"{p}:2:" not in msg


# ---- images and prompt files read before anything loads ------------------------------------------------
def test_images_that_do_not_decode_are_bad_rows(tmp_path):
    good = png(tmp_path / "good.png", size=16)
    data = good.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])  # truncated: the header opens, the pixels do not
    (tmp_path / "junk.png").write_bytes(b"not an image\n" * 3)
    (tmp_path / "folder.png").mkdir()
    p = jsonl(tmp_path, [{"prompt": "a", "image": "good.png"}, {"prompt": "b", "image": "cut.png"},
                         {"prompt": "c", "reference_images": ["good.png", "junk.png"]},
                         {"prompt": "d", "image": "folder.png"}])
    with pytest.raises(ValueError) as e:
        read_items(p)
    msg = str(e.value)
    assert "3 bad row(s)" in msg and f"{p}:1:" not in msg
    assert re.search(re.escape(f"{p}:2: image {tmp_path / 'cut.png'} does not decode (") + r"OSError: .*truncated", msg)
    assert f"{p}:3: reference image {tmp_path / 'junk.png'} does not decode (UnidentifiedImageError" in msg
    assert f"{p}:4: image {tmp_path / 'folder.png'} is a directory" in msg
    with pytest.raises(ValueError, match=re.escape(f"cannot read image {tmp_path / 'cut.png'}: it does not decode")):
        load_image(tmp_path / "cut.png", 16, 16)


def test_a_directory_is_called_a_directory(tmp_path):
    with pytest.raises(ValueError, match=re.escape(f"prompt file {tmp_path} is a directory: give a .txt, .jsonl or .csv")):
        PromptDataModule(path=str(tmp_path))


# ---- trust: what loads tensors loads tensors only --------------------------------------------------------
def test_every_torch_load_is_weights_only_and_code_loaders_say_so():
    calls, programs = [], []
    for path in sorted((ROOT / "doodl").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"torch\.load\((.*)\)", text):
            calls.append((path.name, "weights_only=True" in m.group(1)))
        if re.search(r"torch\.(jit|export)\.load\(", text):
            programs.append((path.name, "only use files you trust" in text))
    assert calls and all(ok for _, ok in calls), calls
    assert programs and all(ok for _, ok in programs), programs


@pytest.mark.parametrize("sub, name", [("unet", "diffusion_pytorch_model.safetensors"), ("text_encoder", "model.safetensors")])
def test_pipeline_with_a_corrupt_weights_file_names_it(tmp_path, sub, name):
    from doodl.models import StableDiffusion
    from doodl.models.tiny import save_tiny_pipeline

    folder = save_tiny_pipeline(tmp_path / "pipe")
    (folder / sub / name).write_bytes(b"garbage" * 20)
    with pytest.raises(ValueError, match=re.escape(f"could not load {sub}/ of {folder} (variant=None) from {name}: ")
                       + r"(SafetensorError|OSError): .*[^.]\. A weights file may be truncated or corrupt"):
        StableDiffusion(folder, device="cpu")


def test_cli_strict_refuses_a_misspelt_column_before_the_run_starts(pipeline, tmp_path):
    from doodl.app.cli import main

    p = jsonl(tmp_path, [{"prompt": "a red square", "weigth": 5.0}])
    root = tmp_path / "root"
    with pytest.raises(ValueError, match=re.escape(f"{p}:1: column 'weigth'") + ".*did you mean 'weight'"):
        main(["fit", *args(pipeline, root, f"--data.path={p}", "--data.prompts=null", "--data.strict", "true",
                           "--model.iterations=1")])
    assert not root.exists() or not any(f.is_file() for f in root.rglob("*"))  # no run folder, logger or checkpoint
