"""User errors: printed by the ``doodl`` command as ``doodl: error: <message>`` with exit status 2,
the form of the parser's own errors (``DOODL_TRACEBACK=1`` prints the traceback as well).

A user error is a ``UserError`` wherever it is raised, or one of ``USER_ERROR_TYPES`` raised
before the run's first step (while the config is read, the models and items are built, the
trainer is set up or a checkpoint restored). Any other exception is a bug: its traceback is kept.
"""

from __future__ import annotations

USER_ERROR_TYPES: tuple[type[BaseException], ...] = (
    ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError,
)


class UserError(ValueError):
    """A bad input (an option, a file, an item) found at any time of a run, even during training."""


def mark_before_run(exc: BaseException) -> None:
    """Note on ``exc`` that it was raised before the run's first step (``is_user_error`` reads it)."""
    try:
        exc.doodl_before_run = True  # type: ignore[attr-defined]
    except AttributeError:  # pragma: no cover - exceptions with __slots__
        pass


def is_user_error(exc: BaseException) -> bool:
    """Whether the ``doodl`` command prints ``exc`` as one line (see the module docstring)."""
    if isinstance(exc, UserError):
        return True
    return isinstance(exc, USER_ERROR_TYPES) and bool(getattr(exc, "doodl_before_run", False))


def one_line(exc: BaseException) -> str:
    """``doodl: error: <message>``; a message spread over lines stays as it is (every bad row listed)."""
    text = str(exc).strip() or type(exc).__name__
    return f"doodl: error: {text}"
