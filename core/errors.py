"""Errors meant for the person at the keyboard: the commands print their message alone, without a traceback."""

import sys
from collections.abc import Iterator
from contextlib import contextmanager


class UserFacingError(Exception):
    """A problem with the user's input or environment, with a message that says what to do."""


class PretrainedWeightsError(UserFacingError):
    """Pretrained weights were asked for but cannot be had (offline with no local file, missing file, ...)."""


class CheckpointError(UserFacingError):
    """A checkpoint file is missing, truncated, corrupt or of the wrong kind."""


class NonFiniteError(UserFacingError):
    """Training produced a NaN or infinite loss, gradient, weight or metric."""


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Around a command's work: a :class:`UserFacingError` is printed as ``error: ...`` and exits with status 2."""
    try:
        yield
    except UserFacingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
