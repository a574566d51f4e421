"""argparse `type=` functions shared by every `vaelab` command: a number out of range is refused while the
command line is read, as one line (`vaelab CMD: error: argument --n: ...`, exit status 2)."""

from __future__ import annotations

import argparse
import math
import re


def _number(text: str, kind: type, least: float, strict: bool, what: str) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if not math.isfinite(value) or value < least or (strict and value == least):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (a count: samples, examples, points, threads)."""
    return _number(text, int, 1, False, "a positive integer")


def nonnegative_int(text: str) -> int:
    """An integer >= 0 (an index, or a count where 0 means none)."""
    return _number(text, int, 0, False, "an integer >= 0")


def positive_float(text: str) -> float:
    """A finite number > 0 (a learning rate)."""
    return _number(text, float, 0.0, True, "a number > 0")


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?")


def duration(text: str) -> float:
    """A time span in seconds, written as hours, minutes and seconds (`2h30m`, `90m`, `1.5h`, `45s`) or as a
    number of seconds (`5400`); > 0."""
    match = _DURATION.fullmatch(text.strip())
    if not text.strip() or match is None:
        raise argparse.ArgumentTypeError(f"must be a duration such as 2h30m, 90m or 5400 (seconds), got {text!r}")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    total = 3600 * hours + 60 * minutes + seconds
    if total <= 0:
        raise argparse.ArgumentTypeError(f"must be a duration > 0, got {text!r}")
    return total


def deadline(args: argparse.Namespace) -> float | None:
    """A command's `--stop-after` (`duration`) as a `time.monotonic()` reading, counted from `args.started` (set
    where the command starts); None without it."""
    return None if args.stop_after is None else args.started + args.stop_after
