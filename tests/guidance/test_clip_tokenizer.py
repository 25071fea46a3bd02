"""OpenCLIP's ``tokenizer`` argument: the model's own by default, a callable, a tokenizer folder or
another model's name; and a clear error when a tokenizer does not fit the text model."""

import open_clip
import pytest
import torch
import torch.nn.functional as F

from doodl.digits import assets
from doodl.digits.nets import CLIP_NAME
from doodl.guidance import OpenCLIP


@pytest.fixture(scope="module")
def digits_clip_files():
    """(checkpoint, tokenizer folder) of the shipped tiny CLIP, its open_clip config registered."""
    info = assets.manifest()["components"]["clip"]
    if CLIP_NAME not in open_clip.list_models():
        open_clip.add_model_config(assets.WEIGHTS / info["config"])
    return str(assets.WEIGHTS / info["path"]), str(assets.WEIGHTS / info["tokenizer"])


def test_default_is_the_models_own_tokenizer(clip, tiny_clip_name):
    prompts = ["a cat", "a photo of a dog"]
    assert torch.equal(clip.tokenizer(prompts), open_clip.get_tokenizer(tiny_clip_name)(prompts))


def test_callable_tokenizer_is_used(tiny_clip_name, tiny_clip_ckpt, clip):
    base = open_clip.get_tokenizer(tiny_clip_name)
    seen = []

    def tokenize(prompts):
        seen.append(list(prompts))
        return base(prompts)

    wrapped = OpenCLIP(tiny_clip_name, tiny_clip_ckpt, tokenizer=tokenize)
    assert wrapped.tokenizer is tokenize
    torch.testing.assert_close(wrapped.embed_text(["a red square"]), clip.embed_text(["a red square"]))
    assert ["a red square"] in seen


def test_another_models_name_gives_its_tokenizer(tiny_clip_name, tiny_clip_ckpt):
    wrapped = OpenCLIP(tiny_clip_name, tiny_clip_ckpt, tokenizer="ViT-B-32")
    assert torch.equal(wrapped.tokenizer(["a cat"]), open_clip.get_tokenizer("ViT-B-32")(["a cat"]))


def test_tiny_digits_clip_with_its_tokenizer_folder_matches_the_loader(digits_clip_files):
    ckpt, folder = digits_clip_files
    adapter = OpenCLIP(CLIP_NAME, ckpt, tokenizer=folder)
    model, tokenizer = assets.load_clip()
    prompts = ["a handwritten digit eight", "a thick digit two"]
    assert torch.equal(adapter.tokenizer(prompts), tokenizer(prompts))
    with torch.no_grad():
        want = F.normalize(model.encode_text(tokenizer(prompts)), dim=-1)
    torch.testing.assert_close(adapter.embed_text(prompts), want)
    assert adapter.vocab_size == 4096 and adapter.image_size == (16, 16)
    # a tokenizer.json file names its folder just as well
    same = OpenCLIP(CLIP_NAME, ckpt, tokenizer=f"{folder}/tokenizer.json")
    assert torch.equal(same.tokenizer(prompts), tokenizer(prompts))


def test_full_vocabulary_tokenizer_on_the_tiny_clip_says_what_to_pass(digits_clip_files):
    ckpt, _ = digits_clip_files
    with pytest.raises(ValueError, match=r"token id 49407.*only 4096 ids.*tokenizer="):
        OpenCLIP(CLIP_NAME, ckpt)


def test_overflowing_ids_at_embed_time_are_an_error(digits_clip_files):
    ckpt, folder = digits_clip_files
    _, tokenizer = assets.load_clip()

    def tokenize(prompts):  # fits for most prompts, overflows for one
        ids = tokenizer(prompts)
        ids[[i for i, p in enumerate(prompts) if "zebra" in p], 1] = 5000
        return ids

    adapter = OpenCLIP(CLIP_NAME, ckpt, tokenizer=tokenize)
    adapter.embed_text(["a digit one"])
    with pytest.raises(ValueError, match="token id 5000.*4096"):
        adapter.embed_text(["a digit one", "a zebra"])


def test_wrong_context_length_is_an_error(digits_clip_files):
    ckpt, folder = digits_clip_files
    long = open_clip.tokenizer.HFTokenizer(folder, context_length=77)
    with pytest.raises(ValueError, match="77 tokens.*context_length=16"):
        OpenCLIP(CLIP_NAME, ckpt, tokenizer=long)


@pytest.mark.parametrize("bad, match", [("no-such-tokenizer", "neither an existing tokenizer"),
                                        (3, "tokenizer must be")])
def test_bad_tokenizer_argument(tiny_clip_name, tiny_clip_ckpt, bad, match):
    with pytest.raises(ValueError, match=match):
        OpenCLIP(tiny_clip_name, tiny_clip_ckpt, tokenizer=bad)
