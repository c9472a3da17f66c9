"""Errors with messages that say what is wrong and what to do instead.

The command line prints these as one line and exits non-zero, without a traceback.
"""


class DynaplanError(Exception):
    """Base class of every error the command line reports as one line."""


class ConfigError(DynaplanError, ValueError):
    """A bad configuration value, unknown name or unknown env id."""


class TrainingDivergedError(DynaplanError, RuntimeError):
    """Training met a non-finite loss or non-finite data."""


class CheckpointError(DynaplanError, OSError):
    """A run folder or checkpoint that is missing, corrupt or would be overwritten."""
