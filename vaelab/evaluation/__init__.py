"""Evaluation: log-likelihood by importance sampling, ELBO, active units."""

from vaelab.evaluation.active_units import active_units
from vaelab.evaluation.loglik import ISEstimate, evaluate_log_likelihood, importance_sampled_log_likelihood

__all__ = ["ISEstimate", "active_units", "evaluate_log_likelihood", "importance_sampled_log_likelihood"]
