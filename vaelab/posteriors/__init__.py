"""Variational families: amortised, q(z | x) from encoder features `[B, F]` -> a distribution over `[B, D]`,
and per data point (`PerPoint`: free parameters for each of N points, the q* of the inference-gap analysis)."""

from vaelab.posteriors.base import PerPoint, PosteriorFamily
from vaelab.posteriors.conditional import CategoricalGaussian, CategoricalGaussianPosterior
from vaelab.posteriors.diagonal_gaussian import DiagonalGaussian
from vaelab.posteriors.flow import AuxiliaryFlowPosterior
from vaelab.posteriors.full_covariance import FullCovarianceGaussian, cholesky_factor
from vaelab.posteriors.mixture import GaussianMixture

__all__ = [
    "AuxiliaryFlowPosterior",
    "CategoricalGaussian",
    "CategoricalGaussianPosterior",
    "DiagonalGaussian",
    "FullCovarianceGaussian",
    "GaussianMixture",
    "PerPoint",
    "PosteriorFamily",
    "cholesky_factor",
]
