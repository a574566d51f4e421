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


class OutOfTime(RuntimeError):
    """A resumable evaluation stopped before a batch that would not have finished within its time limit
    (`--stop-after`): `saved` batches are kept in `directory`, `left` are still to compute, each expected to take
    `expected` seconds. Running the same command again continues it."""

    def __init__(self, directory: str, saved: int, left: int, expected: float) -> None:
        each = f"{expected / 60:.0f} min" if expected >= 90 else f"{expected:.0f} s"
        each = f" (about {each} each)" if expected > 0 else ""
        batches = f"{left} batch{'es' * (left != 1)}"
        super().__init__(
            f"stopped within its time limit: {batches} left{each}, {saved} saved in {directory}; run the same "
            "command again to continue"
        )
        self.directory, self.saved, self.left, self.expected = directory, saved, left, expected

    def __reduce__(self):  # pickled (to another rank) with its fields, not its message
        return type(self), (self.directory, self.saved, self.left, self.expected)
