"""Warnings that tell a doodl user nothing, silenced while a ``doodl`` run builds and runs (never
at import time: a library user of doodl keeps them). Each filter names its source."""

from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Iterator

# (message regex, what prints it and why it says nothing here)
NOISE: tuple[tuple[str, str], ...] = (
    # Lightning's fit loop: DOODL freezes its networks on purpose (nothing of theirs is trained)
    (r"Found \d+ module\(s\) in eval mode at the start of training", "lightning fit_loop"),
    # torch's pytree, called by Lightning itself: a deprecation inside Lightning, no doodl code to change
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", "torch.utils._pytree via lightning"),
)
# Lightning's info messages that advertise a product
LOG_NOISE = ("litlogger",)
RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _DropAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(word in str(record.msg) for word in LOG_NOISE)


@contextlib.contextmanager
def quiet_warnings() -> Iterator[None]:
    drop = _DropAdverts()
    loggers = [logging.getLogger(name) for name in RANK_ZERO_LOGGERS]
    with warnings.catch_warnings():
        for message, _source in NOISE:
            warnings.filterwarnings("ignore", message=message)
        for lg in loggers:
            lg.addFilter(drop)
        try:
            yield
        finally:
            for lg in loggers:
                lg.removeFilter(drop)
