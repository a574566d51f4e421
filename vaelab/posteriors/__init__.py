"""Amortised variational families q(z | x): encoder features `[B, F]` -> a distribution over `[B, D]`."""

from vaelab.posteriors.base import PosteriorFamily
from vaelab.posteriors.diagonal_gaussian import DiagonalGaussian

__all__ = ["DiagonalGaussian", "PosteriorFamily"]
