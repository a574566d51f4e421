"""Summaries of per-point values over the points: the one place that computes a mean's standard error."""

from __future__ import annotations

import math

from torch import Tensor


def mean_se(t: Tensor) -> tuple[float, float]:
    """Mean of `t` (any shape, read as its N entries) and its standard error over them, std(t) / sqrt(N), with
    std the unbiased sample standard deviation; the se is nan for N < 2, where no spread is observed."""
    n = t.numel()
    return float(t.mean()), float(t.std() / math.sqrt(n)) if n > 1 else math.nan
