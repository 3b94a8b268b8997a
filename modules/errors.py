"""Errors meant for the person at the keyboard: the CLI prints their message alone, without a traceback."""


class UserFacingError(Exception):
    """A problem with the user's input or environment, with a message that says what to do."""


class PretrainedWeightsError(UserFacingError):
    """Pretrained weights were asked for but cannot be had (offline with no local file, missing file, ...)."""


class CheckpointError(UserFacingError):
    """A checkpoint file is missing, truncated, corrupt or of the wrong kind."""
