"""Amortised variational families q(z | x): encoder features `[B, F]` -> a distribution over `[B, D]`."""

from vaelab.posteriors.base import PosteriorFamily
from vaelab.posteriors.diagonal_gaussian import DiagonalGaussian
from vaelab.posteriors.full_covariance import FullCovarianceGaussian, cholesky_factor

__all__ = ["DiagonalGaussian", "FullCovarianceGaussian", "PosteriorFamily", "cholesky_factor"]
