"""A transformers ``CLIPTokenizer`` built offline from the BPE file that open_clip ships.

CLIP's byte-level BPE vocabulary is defined by its merges file (``bpe_simple_vocab_16e6.txt.gz``):
    1. a base alphabet of 256 symbols, one per byte (``bytes_to_unicode``): first the 188
       printable bytes, each its own character, then the other 68 bytes in byte order, mapped
       to the characters 256, 257, ...; ids follow that order;
    2. the same 256 symbols with the end-of-word marker '</w>' appended;
    3. one token per merge, the concatenation of its two parts, for the first
       49152 - 256 - 2 merge lines after the header line;
    4. '<|startoftext|>' and '<|endoftext|>' last (ids 49406 and 49407).
Ids are positions in that list. ``vocab.json`` holds token -> id and ``merges.txt`` the merges,
which is what ``CLIPTokenizer.from_pretrained`` reads.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import tempfile
from pathlib import Path

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
CLIP_CONTEXT_LENGTH = 77  # the text length every CLIP text encoder was trained with
_NUM_MERGES = 49152 - 256 - 2  # merges CLIP keeps (vocabulary of 49408 with the 2 specials)
_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"


def bytes_to_unicode() -> dict[int, str]:
    """The reversible byte -> symbol table of byte-level BPE, in vocabulary order (step 1)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def open_clip_bpe_path() -> Path:
    """Path of the BPE merges file inside the installed open_clip package (not imported)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "open_clip is not installed, so its BPE vocabulary is unavailable: install "
            "open_clip_torch, or give the pipeline folder a tokenizer/ subfolder"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _BPE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"open_clip's BPE file {path} is missing: reinstall open_clip_torch")
    return path


def clip_vocab_and_merges(bpe_path: str | os.PathLike | None = None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(token -> id, merges) of CLIP's tokenizer from a gzipped BPE merges file."""
    path = Path(bpe_path) if bpe_path is not None else open_clip_bpe_path()
    if not path.is_file():
        raise FileNotFoundError(f"BPE merges file {path} does not exist")
    lines = gzip.open(path).read().decode("utf-8").split("\n")[1 : _NUM_MERGES + 1]
    merges = []
    for line in lines:
        parts = tuple(line.split())
        if len(parts) != 2:
            raise ValueError(f"{path} is not a CLIP BPE merges file: bad line {line!r}")
        merges.append(parts)
    if len(merges) != _NUM_MERGES:
        raise ValueError(f"{path} holds {len(merges)} merges, CLIP needs {_NUM_MERGES}")
    base = list(bytes_to_unicode().values())
    tokens = base + [s + "</w>" for s in base] + ["".join(m) for m in merges] + [BOS_TOKEN, EOS_TOKEN]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError(f"{path} defines duplicate tokens: not a CLIP BPE merges file")
    return vocab, merges


def write_clip_tokenizer_files(folder: str | os.PathLike, bpe_path: str | os.PathLike | None = None) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` (CLIP's vocabulary) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_vocab_and_merges(bpe_path)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    body = "\n".join(f"{a} {b}" for a, b in merges)
    (folder / "merges.txt").write_text(f"#version: 0.2\n{body}\n", encoding="utf-8")
    return folder


def clip_tokenizer_from_open_clip(
    pad_token: str = EOS_TOKEN,
    model_max_length: int = CLIP_CONTEXT_LENGTH,
    bpe_path: str | os.PathLike | None = None,
    save_to: str | os.PathLike | None = None,
):
    """A ``transformers.CLIPTokenizer`` with CLIP's vocabulary, built without any network.

    Args:
        pad_token: the padding token. Stable Diffusion 1.x (OpenAI CLIP) pads with
            '<|endoftext|>'; SD 2.x and SDXL's second encoder (OpenCLIP) pad with '!' (id 0,
            what open_clip's own tokenizer pads with). transformers splits special tokens off
            the text, so with '!' padding a run like "!!" becomes one '!' token per character,
            exactly as with the SD 2.x tokenizer folders on the hub.
        model_max_length: padded/truncated length (77 for every CLIP text encoder).
        bpe_path: the gzipped merges file; default: the one inside the open_clip package.
        save_to: also keep the tokenizer folder here (``save_pretrained`` format).
    """
    from transformers import CLIPTokenizer

    if not isinstance(model_max_length, int) or model_max_length < 2:
        raise ValueError(f"model_max_length must be an int >= 2 (77 for CLIP), got {model_max_length!r}")
    vocab, _ = clip_vocab_and_merges(bpe_path)
    if pad_token not in vocab:
        raise ValueError(f"pad_token {pad_token!r} is not in CLIP's vocabulary: use {EOS_TOKEN!r} or '!'")
    with tempfile.TemporaryDirectory() as tmp:
        write_clip_tokenizer_files(tmp, bpe_path)
        tok = CLIPTokenizer.from_pretrained(
            tmp, pad_token=pad_token, model_max_length=model_max_length,
            bos_token=BOS_TOKEN, eos_token=EOS_TOKEN, unk_token=EOS_TOKEN,
        )
    if save_to is not None:
        tok.save_pretrained(save_to)
    return tok
