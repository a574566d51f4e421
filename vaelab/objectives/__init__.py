"""Training objectives: short functions over log-weights log w = log p(x, z) - log q(z | x) (DESIGN.md)."""

from vaelab.objectives.aiwae import AIWAE
from vaelab.objectives.bounds import ELBO, IWAE, LogWeights, Objective, logmeanexp, sample_log_weights
from vaelab.objectives.cpvae import CPVAEBound
from vaelab.objectives.cross_entropy import CrossEntropy
from vaelab.objectives.schedules import linear_ramp
from vaelab.objectives.score_function import ScoreFunction
from vaelab.objectives.stratified import CIWAE, MIWAE, PPD, SELBO, SIWAE, StratifiedObjective, stratified_log_weights

__all__ = [
    "AIWAE",
    "CIWAE",
    "CPVAEBound",
    "CrossEntropy",
    "ELBO",
    "IWAE",
    "LogWeights",
    "MIWAE",
    "Objective",
    "PPD",
    "SELBO",
    "SIWAE",
    "ScoreFunction",
    "StratifiedObjective",
    "linear_ramp",
    "logmeanexp",
    "sample_log_weights",
    "stratified_log_weights",
]
