"""Errors that mean the user gave darklens something it cannot use (shown without traceback)."""


class DarklensError(Exception):
    """A user-facing error: the message names the file or option and the cause."""


class DataError(DarklensError):
    """Input data that cannot be read or used (bad file, shape, dtype, values)."""


class CheckpointError(DarklensError):
    """A run directory or checkpoint that cannot be loaded safely."""
