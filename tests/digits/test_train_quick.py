"""Smoke test of the digits training script (--quick) and unit checks of its pieces."""

import hashlib

import open_clip
import pytest
import torch

from doodl.digits import assets, data
from doodl.digits.tokenizer import build_tokenizer
from doodl.digits.train import main
from doodl.digits.train_generator import train_unet


# one thread, as the whole suite (tests/conftest.py): the script's default of 2 threads made each
# quick run 2-3x slower on a busy 2-core machine; determinism is checked at that fixed thread count
QUICK = ["--quick", "--threads", "1"]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    return out, main(["--out", str(out), *QUICK])


def test_quick_run_writes_every_listed_file(quick):
    out, manifest = quick
    assert manifest["quick"] is True and "--quick" in manifest["command"] and manifest["torch_threads"] == 1
    assert (out / "manifest.json").is_file()
    for name, info in manifest["files"].items():
        path = out / name
        assert path.is_file(), name
        assert path.stat().st_size == info["bytes"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == info["sha256"]
    for component in manifest["components"].values():
        assert component["path"] in manifest["files"] or (out / component["path"]).is_dir()
    for name in ("pipeline/model_index.json", "pipeline/unet/diffusion_pytorch_model.safetensors",
                 "pipeline/vae/diffusion_pytorch_model.safetensors", "pipeline/text_encoder/model.safetensors",
                 "pipeline/tokenizer/vocab.json", "pipeline/tokenizer/merges.txt",
                 "pipeline/scheduler/scheduler_config.json", "classifier.safetensors", "judge.safetensors",
                 "scorer.safetensors", "clip/doodl-digits-clip.json", "clip/doodl-digits-clip.safetensors"):
        assert name in manifest["files"], name
    scores = manifest["scores"]
    accuracies = {k: v for k, v in scores.items() if "accuracy" in k and isinstance(v, float)}
    accuracies.update({f"digit {d}": v for d, v in scores["generator_per_digit_judge_accuracy"].items()})
    assert len(accuracies) >= 15
    assert all(0.0 <= v <= 1.0 for v in accuracies.values()), accuracies


def test_quick_output_loads_through_assets(quick):
    out, _ = quick
    pipe = assets.load_pipeline(out)
    assert pipe.vae.config.scaling_factor > 0
    model, tokenizer = assets.load_clip(out)
    ids = tokenizer(["a handwritten digit three", ""])
    assert ids.shape == (2, 16)
    with torch.no_grad():
        assert model.encode_text(ids).shape == (2, 64)
    x, y = assets.test_set(out)
    assert assets.load_classifier(out)(x[:3]).shape == (3, 10)
    assert assets.load_judge(out)(x[:3]).shape == (3, 10)


def test_training_is_deterministic(quick, tmp_path):
    _, first = quick
    second = main(["--out", str(tmp_path), *QUICK])
    weights = [k for k in first["files"] if k.endswith(".safetensors")]
    assert weights and all(first["files"][k]["sha256"] == second["files"][k]["sha256"] for k in weights)


def test_split_is_disjoint_and_complete():
    split = data.split_indices()
    a, b, test = (set(split[k]) for k in ("A", "B", "test"))
    assert not (a & b) and not (a & test) and not (b & test)
    assert a | b | test == set(range(1797))


def test_generator_refuses_unseen_digits():
    with pytest.raises(ValueError, match="0-7"):
        train_unet(None, None, torch.zeros(2, 3, 16, 16), torch.tensor([3, 8]), steps=1, seed=0)


def test_truncated_tokenizer_keeps_clip_ids():
    """Tokens kept by the truncated vocabulary have their full-CLIP ids; specials end the vocabulary."""
    tok, full = build_tokenizer(), open_clip.SimpleTokenizer()
    for word in ("three", "one", "two", "four", "five", "number", "drawing", "the", "of", "a", ",", "3"):
        full_ids = full.encode(word)
        if len(full_ids) == 1 and full_ids[0] < len(tok) - 2:
            assert tok(word, add_special_tokens=False).input_ids == full_ids, word
    assert tok.eos_token_id == len(tok) - 1 and tok.bos_token_id == len(tok) - 2
    assert tok("three").input_ids == [tok.bos_token_id, 2097, tok.eos_token_id]


def test_captions_and_boldness():
    assert data.caption(3) == "a handwritten digit three"
    assert data.caption(9, 2, "thick") == "a thick digit nine"
    g = torch.Generator().manual_seed(0)
    caps = data.random_captions(torch.zeros(400, dtype=torch.long), g, drop=0.1)
    assert 20 <= caps.count("") <= 60 and all(c == "" or c.endswith("zero") for c in caps)
    assert data.boldness(torch.tensor([0.0, 0.5, 1.0]), 0.0, 1.0).tolist() == [1.0, 5.5, 10.0]
    assert data.boldness(torch.tensor([-1.0, 2.0]), 0.0, 1.0).tolist() == [1.0, 10.0]
