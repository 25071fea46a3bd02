"""The digits world's flow-matching generator as a configurable backend (``configs/digits_flow.yaml``):
the project's tiny SD3 (``python -m doodl.digits.train_flow``, trained on digits 0-7 only) loaded
through exactly the code of a real SD3 checkpoint (``doodl.models.SD3``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from doodl.models import SD3

from .assets import WEIGHTS
from .train_flow import FLOW_FOLDER, MAX_SEQUENCE_LENGTH


def flow_path(root: str | Path | None = None) -> Path:
    """The shipped SD3 pipeline folder (model_index.json, transformer/, vae/, text_encoder{,_2}/, ...)."""
    folder = (Path(root) if root is not None else WEIGHTS) / FLOW_FOLDER
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(f"{folder} holds no SD3 pipeline: run `python -m doodl.digits.train_flow`")
    return folder


class DigitsSD3(SD3):
    """The tiny digits SD3 (no T5). ``max_sequence_length`` defaults to the one position of zeros
    it was trained with (``train_flow.MAX_SEQUENCE_LENGTH``): the transformer attends to those
    tokens, so another length changes its output. ``pretrained`` defaults to the shipped folder."""

    def __init__(self, pretrained: str | None = None, dtype: str = "float32", device: str = "cpu",
                 max_sequence_length: int | None = None, **kwargs: Any):
        length = MAX_SEQUENCE_LENGTH if max_sequence_length is None else max_sequence_length
        super().__init__(str(pretrained or flow_path()), dtype=dtype, device=device, t5=False,
                         max_sequence_length=length, **kwargs)
