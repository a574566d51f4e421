"""argparse `type=` functions shared by every `vaelab` command: a number out of range is refused while the
command line is read, as one line (`vaelab CMD: error: argument --n: ...`, exit status 2)."""

from __future__ import annotations

import argparse
import math


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
