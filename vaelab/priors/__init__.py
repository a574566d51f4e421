"""Priors p(z) over the latent vector."""

from vaelab.priors.base import Prior
from vaelab.priors.distribution import DistributionPrior
from vaelab.priors.mixture_of_gaussians import MixtureOfGaussians
from vaelab.priors.standard_normal import StandardNormal
from vaelab.priors.vampprior import VampPrior

__all__ = ["DistributionPrior", "MixtureOfGaussians", "Prior", "StandardNormal", "VampPrior"]
