"""Distributions that `torch.distributions` lacks."""

from vaelab.distributions.detach import detach_parameters
from vaelab.distributions.diagonal_normal import DiagonalNormal
from vaelab.distributions.discretized_logistic import DiscretizedLogistic
from vaelab.distributions.mixture import ReparameterizedMixture

__all__ = ["DiagonalNormal", "DiscretizedLogistic", "ReparameterizedMixture", "detach_parameters"]
