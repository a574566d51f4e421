"""Score-function (REINFORCE) estimator of the ELBO gradient, the baseline of SIWAE's toy problem (sec. 4.1).

With S plain draws z_s ~ q(z | x) (no reparameterisation, so any q that can `sample` and `log_prob`, mixtures
included) and the annealed log-weight f_s = log p(x|z_s) + beta (log p(z_s) - lambda log q(z_s)):

    ELBO^ = (1/S) sum_s f_s,
    grad  = (1/S) sum_s [ d f_s / d theta + (f_s - b_s) d log q(z_s | x) / d phi ]       (Williams 1992)

(the direct term -beta lambda d log q / d phi has zero mean and is left out). The objective's value is ELBO^;
its gradient is the one above, through the surrogate f_s + (f_s - b_s) (log q - stop_grad(log q)), which is
f_s in value. Baselines b_s: `none` (b = 0, the plain estimator) or `leave_one_out` (the mean of the other
S - 1 values of f, Kool et al. 2019; needs S >= 2).
"""

from __future__ import annotations

from torch import Tensor

from vaelab.errors import ConfigError
from vaelab.objectives.bounds import LogWeights, Objective

BASELINES = ("none", "leave_one_out")


class ScoreFunction(Objective):
    """Score-function ELBO estimator with `samples` draws per point `[S, B]` -> `[B]`."""

    name = "score_function"

    def __init__(self, samples: int = 100, baseline: str = "none") -> None:
        if baseline not in BASELINES:
            raise ConfigError(f"score_function baseline must be one of {', '.join(BASELINES)}, not {baseline!r}")
        if samples < 1 or (baseline == "leave_one_out" and samples < 2):
            raise ConfigError(f"score_function needs samples >= 1 (>= 2 with a leave_one_out baseline), got {samples}")
        self.samples, self.baseline = samples, baseline

    def __call__(self, model, x, beta: float = 1.0, entropy_weight: float = 1.0) -> Tensor:
        q = model.posterior(x)
        z = q.sample((self.samples,))  # [S, B, D], no gradient path through the draws
        log_q = q.log_prob(z)  # [S, B], the score's source
        f = LogWeights(model.log_likelihood(x, z), model.prior.log_prob(z), log_q.detach()).annealed(
            beta, entropy_weight
        )
        advantage = f.detach()
        if self.baseline == "leave_one_out":
            advantage = advantage - (advantage.sum(0) - advantage) / (self.samples - 1)
        return (f + advantage * (log_q - log_q.detach())).mean(0)

    def __repr__(self) -> str:
        return f"ScoreFunction(samples={self.samples}, baseline={self.baseline!r})"
