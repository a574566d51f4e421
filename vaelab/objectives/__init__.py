"""Training objectives: short functions over log-weights log w = log p(x, z) - log q(z | x) (DESIGN.md)."""

from vaelab.objectives.bounds import ELBO, IWAE, LogWeights, Objective, logmeanexp, sample_log_weights
from vaelab.objectives.schedules import linear_ramp

__all__ = ["ELBO", "IWAE", "LogWeights", "Objective", "linear_ramp", "logmeanexp", "sample_log_weights"]
