"""Evaluation: log-likelihood by importance sampling (plain, and stratified for mixtures: SIWAE), ELBO, active
units, accuracy and calibration."""

from vaelab.evaluation.active_units import active_units
from vaelab.evaluation.calibration import (
    Predictions,
    accuracy,
    expected_calibration_error,
    posterior_predictive,
    predict,
    true_class_calibration_error,
)
from vaelab.evaluation.loglik import ISEstimate, evaluate_log_likelihood, importance_sampled_log_likelihood
from vaelab.evaluation.stratified import (
    evaluate_stratified_log_likelihood,
    stratified_log_likelihood,
    stratified_summary,
)

__all__ = [
    "ISEstimate",
    "Predictions",
    "accuracy",
    "active_units",
    "evaluate_log_likelihood",
    "evaluate_stratified_log_likelihood",
    "expected_calibration_error",
    "importance_sampled_log_likelihood",
    "posterior_predictive",
    "predict",
    "stratified_log_likelihood",
    "stratified_summary",
    "true_class_calibration_error",
]
