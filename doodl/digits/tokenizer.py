"""A CLIP BPE tokenizer built offline from open_clip's bundled vocabulary, truncated to the
first ``num_merges`` merges so that the tiny text encoders' embedding tables stay small.

Ids follow CLIP's layout: 256 byte symbols, the same 256 with the end-of-word mark ``</w>``,
one token per merge in file order, then ``<|startoftext|>`` and ``<|endoftext|>`` last (the
end token has the largest id, so "argmax of the ids" finds it). Every token that the
truncated vocabulary keeps has the same id as in the full CLIP vocabulary, except the two
special tokens. (Private to doodl.digits: doodl.models offered no builder when this was written.)
"""

from __future__ import annotations

import gzip
from pathlib import Path

import open_clip
from transformers import CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
DEFAULT_NUM_MERGES = 3582  # 512 byte tokens + 3582 merges + 2 specials = 4096 ids


def bpe_path() -> Path:
    """Path of the BPE merge list shipped inside the installed open_clip package."""
    path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall open_clip_torch")
    return path


def _byte_symbols() -> list[str]:
    """One printable character per byte (byte-level BPE), in CLIP's vocabulary order: the bytes
    that are printable Latin-1 characters stand for themselves and come first, in byte order;
    the other bytes follow, in byte order, mapped to chr(256), chr(257), ..."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + k) for k in range(len(others))]


def build_vocab(num_merges: int = DEFAULT_NUM_MERGES) -> tuple[dict[str, int], list[str]]:
    """(vocab token -> id, merges "a b") from the first ``num_merges`` merges of open_clip's file."""
    with gzip.open(bpe_path(), "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [line for line in lines[1 : 1 + num_merges] if line]  # line 0 is the version header
    if len(merges) != num_merges:
        raise ValueError(f"the BPE file holds fewer than {num_merges} merges")
    tokens = _byte_symbols()
    tokens = tokens + [t + "</w>" for t in tokens] + ["".join(m.split(" ")) for m in merges] + [BOS, EOS]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError("duplicate tokens in the truncated vocabulary")
    return vocab, merges


def build_tokenizer(num_merges: int = DEFAULT_NUM_MERGES, model_max_length: int = 16) -> CLIPTokenizer:
    """A transformers CLIPTokenizer over the truncated vocabulary; pads with the end token (as SD)."""
    vocab, merges = build_vocab(num_merges)
    pairs = [tuple(m.split(" ")) for m in merges]
    return CLIPTokenizer(vocab=vocab, merges=pairs, model_max_length=model_max_length)
