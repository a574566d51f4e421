"""Errors a user can cause and fix. The CLI prints these as one line, without a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input, files or configuration; the message says what and how to fix it."""


class ConfigError(UserError):
    """An unknown key, a bad value or a malformed YAML file."""


class DataError(UserError):
    """Data that is missing, corrupt, or does not suit the model (wrong shape, NaN, non-binary)."""


class DatasetNotFound(DataError):
    """No copy of a dataset was found in any place looked."""


class CorruptFile(DataError):
    """A dataset file exists but its checksum or contents are wrong (truncated download, other file)."""


class RunDirError(UserError):
    """A run directory that is missing, incomplete, or would be overwritten."""


class CorruptRunFile(RunDirError):
    """A run's weights or state file that fails its sha256, is truncated or cannot be parsed."""


class TrainingDiverged(RuntimeError):
    """Non-finite losses or gradients persisted; the last good checkpoint is kept."""
