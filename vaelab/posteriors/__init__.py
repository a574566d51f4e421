"""Amortised variational families q(z | x): encoder features `[B, F]` -> a distribution over `[B, D]`."""

from vaelab.posteriors.base import PosteriorFamily
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
    "PosteriorFamily",
    "cholesky_factor",
]
