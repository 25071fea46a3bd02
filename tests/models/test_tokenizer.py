"""The CLIPTokenizer built from open_clip's BPE file tokenizes exactly as open_clip does."""

import gzip

import pytest
import torch

from doodl.models.tokenizer import (
    BOS_TOKEN, EOS_TOKEN, bytes_to_unicode, clip_tokenizer_from_open_clip, clip_vocab_and_merges, open_clip_bpe_path,
)

SENTENCES = [
    "a photo of a cat",
    "A Brabancon Griffon, a type of dog",
    "An oil painting of the Eiffel tower at night, trending on artstation!!",
    "it's 3.14 o'clock; we'll see -- they've gone",
    "naïve café, Köln, 東京 and emoji 🙂",
    "",
]


@pytest.fixture(scope="module")
def open_clip_tokenizer():
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


@pytest.fixture(scope="module")
def hf_eos():
    return clip_tokenizer_from_open_clip(pad_token=EOS_TOKEN)


@pytest.fixture(scope="module")
def hf_bang():
    return clip_tokenizer_from_open_clip(pad_token="!")


def test_bytes_to_unicode_is_a_bijection_on_bytes():
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256))
    assert len(set(table.values())) == 256
    assert table[ord("a")] == "a" and table[ord(" ")] == chr(256 + 32)


def test_vocabulary_layout():
    vocab, merges = clip_vocab_and_merges()
    assert len(vocab) == 49408 and len(merges) == 49152 - 258
    assert vocab[BOS_TOKEN] == 49406 and vocab[EOS_TOKEN] == 49407
    assert vocab["!"] == 0 and vocab["a</w>"] == 256 + vocab["a"]
    assert vocab["".join(merges[0])] == 512


@pytest.mark.parametrize("text", SENTENCES)
def test_ids_equal_open_clip(open_clip_tokenizer, hf_eos, text):
    ours = hf_eos(text).input_ids
    theirs = [open_clip_tokenizer.sot_token_id, *open_clip_tokenizer.encode(text), open_clip_tokenizer.eot_token_id]
    assert ours == theirs
    assert len(ours) > 2 or text == ""


def test_padded_batch_equals_open_clip_tokenize(open_clip_tokenizer, hf_bang):
    """With '!' (id 0) padding the 77-token batch equals open_clip's, truncation included.

    (transformers treats a '!' pad token as special, so a '!' in the text would be split off
    one character at a time, as with the SD 2.x tokenizers on the hub: texts here have none.)"""
    texts = SENTENCES[:2] + ["An oil painting of the Eiffel tower at night, trending on artstation", "word " * 100]
    ours = hf_bang(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    theirs = open_clip_tokenizer(texts, context_length=77)
    assert ours.shape == (4, 77)
    assert torch.equal(ours[:3], theirs[:3])
    # the long text: both keep 75 words between start and end of text
    assert torch.equal(ours[3, :76], theirs[3, :76])
    assert ours[3, 76] == theirs[3, 76] == 49407


def test_eos_padding(hf_eos):
    ids = hf_eos(["a cat"], padding="max_length", max_length=77, return_tensors="pt").input_ids[0]
    assert ids[:4].tolist() == [49406, 320, 2368, 49407]
    assert (ids[4:] == 49407).all()
    assert hf_eos.model_max_length == 77


def test_save_and_reload(tmp_path, hf_eos):
    from transformers import CLIPTokenizer

    clip_tokenizer_from_open_clip(save_to=tmp_path / "tok")
    again = CLIPTokenizer.from_pretrained(tmp_path / "tok")
    assert again("a photo of a cat").input_ids == hf_eos("a photo of a cat").input_ids
    assert again.pad_token == EOS_TOKEN


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="pad_token"):
        clip_tokenizer_from_open_clip(pad_token="<pad>")
    with pytest.raises(ValueError, match="model_max_length"):
        clip_tokenizer_from_open_clip(model_max_length=1)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        clip_vocab_and_merges(tmp_path / "missing.txt.gz")
    bad = tmp_path / "bad.txt.gz"
    bad.write_bytes(gzip.compress(b"#version\na b c\n"))
    with pytest.raises(ValueError, match="not a CLIP BPE merges file"):
        clip_vocab_and_merges(bad)
    short = tmp_path / "short.txt.gz"
    short.write_bytes(gzip.compress(b"#version\na b\n"))
    with pytest.raises(ValueError, match="merges"):
        clip_vocab_and_merges(short)
    assert open_clip_bpe_path().name == "bpe_simple_vocab_16e6.txt.gz"
