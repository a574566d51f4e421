"""Distributions that `torch.distributions` lacks."""

from vaelab.distributions.discretized_logistic import DiscretizedLogistic

__all__ = ["DiscretizedLogistic"]
