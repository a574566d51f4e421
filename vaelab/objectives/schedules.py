"""Schedules for the warm-up weights (beta for KL warm-up, lambda for entropy annealing)."""

from __future__ import annotations


def linear_ramp(epoch: int, epochs: int) -> float:
    """Weight in epoch `epoch` (0-based) of a linear 0 -> 1 ramp over `epochs` epochs, then 1.

    As VampPrior's code: beta = min(1, (epoch + 1) / epochs); `epochs = 0` means no ramp (always 1).
    """
    if epochs <= 0:
        return 1.0
    return min(1.0, (epoch + 1) / epochs)
