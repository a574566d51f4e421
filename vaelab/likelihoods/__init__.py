"""Observation models p(x | z): turn decoder outputs into a distribution over the data."""

from vaelab.likelihoods.base import Likelihood
from vaelab.likelihoods.bernoulli import Bernoulli
from vaelab.likelihoods.categorical import Categorical
from vaelab.likelihoods.discretized_logistic import DiscretizedLogisticLikelihood
from vaelab.likelihoods.gaussian import Gaussian

__all__ = ["Bernoulli", "Categorical", "DiscretizedLogisticLikelihood", "Gaussian", "Likelihood"]
