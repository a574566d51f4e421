"""The CP-VAE bound (Lavda et al., eq. 7) with its KL split and taken in closed form (eqs. 8-9):

    L(x) = A - beta (B1 + B2),           A  = E_{q(z, c | x)} log p(x | z),
    B1 = KL(q(c | x) || p(c)) = log K - H(q(c | x)),                                             (eq. 9)
    B2 = sum_k q(c = k | x) KL(q(z | x, c = k) || p(z | c = k))     (diagonal Gaussians, closed form).

The reconstruction term A is estimated by
  * `estimator: exact`: the sum over c, A = sum_k q(k | x) E_{q(z | x, k)} log p(x | z), with `samples` pathwise
    draws of z per category (K decoder passes per sample: for small K);
  * `estimator: gumbel`: a Gumbel-Softmax c~ (eq. 11) at temperature tau (annealed per epoch when anneal_rate > 0:
    tau_e = max(min_temperature, temperature * exp(-anneal_rate * e))) and z ~ q(z | x, c~) pathwise: one decoder
    pass per sample whatever K, biased for tau > 0.
Without gradients (validation, evaluation) the gumbel estimator draws c exactly (tau = 0, the Gumbel-max trick), so
its value is an unbiased estimate of L(x).

Warm-up weights as in `LogWeights.annealed`: beta multiplies the KL; entropy annealing (lambda) keeps the
cross-entropy and weights the entropy, -E log p(z, c) - lambda H(q(z, c | x)) = B1 + B2 + (1 - lambda) H(q(z, c | x)),
H(q(z, c | x)) = H(q(c | x)) + sum_k q(k | x) H(q(z | x, k)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import kl_divergence

from vaelab.distributions.gumbel_softmax import relaxed_one_hot
from vaelab.errors import ConfigError
from vaelab.models.cpvae import conditional_pair, prior_conditionals
from vaelab.objectives.bounds import Objective
from vaelab.posteriors.conditional import CategoricalGaussianPosterior
from vaelab.priors.mixture_of_gaussians import MixtureOfGaussians
from vaelab.registry import OBJECTIVES

ESTIMATORS = ("exact", "gumbel")


@dataclass
class CPVAETerms:
    """Per-data-point parts of the bound, each `[B]`: A, B1, B2 and the joint entropy H(q(z, c | x))."""

    reconstruction: Tensor
    kl_c: Tensor
    kl_z: Tensor
    entropy: Tensor

    @property
    def bound(self) -> Tensor:
        """L(x) = A - B1 - B2 (eq. 7)."""
        return self.reconstruction - self.kl_c - self.kl_z

    def annealed(self, beta: float = 1.0, entropy_weight: float = 1.0) -> Tensor:
        kl = self.kl_c + self.kl_z
        if entropy_weight != 1.0:
            kl = kl + (1.0 - entropy_weight) * self.entropy
        return self.reconstruction - beta * kl


def kl_terms(q: CategoricalGaussianPosterior, prior: MixtureOfGaussians) -> tuple[Tensor, Tensor, Tensor]:
    """(B1, B2, H(q(z, c | x))), each `[B]`, for a `CategoricalGaussianPosterior` `q` and the conditional prior."""
    log_pi = q.log_weights  # [B, K]
    pi = log_pi.exp()
    entropy_c = -(pi * log_pi).sum(-1)
    components = q.component_distribution  # q(z | x, k): batch [B, K]
    kl_z = (pi * kl_divergence(components, prior_conditionals(prior))).sum(-1)  # [B, K] against p(z | k) [K]
    entropy = entropy_c + (pi * components.entropy()).sum(-1)
    return math.log(log_pi.shape[-1]) - entropy_c, kl_z, entropy


def exact_reconstruction(model, x: Tensor, q: CategoricalGaussianPosterior, samples: int = 1) -> Tensor:
    """A = sum_k q(k | x) (1/T) sum_t log p(x | z_tk), z_tk ~ q(z | x, k) pathwise (`T = samples`): `[B]`."""
    z = q.stratified_rsample(samples)  # [T, K, B, D]
    log_lik = model.log_likelihood(x, z).mean(0)  # [K, B]
    return (q.log_weights.exp() * log_lik.T).sum(-1)


def gumbel_reconstruction(
    model,
    x: Tensor,
    q: CategoricalGaussianPosterior,
    samples: int = 1,
    temperature: float = 1.0,
    straight_through: bool = False,
) -> Tensor:
    """A ~ (1/S) sum_s log p(x | z_s), c~_s Gumbel-Softmax at `temperature` (0: exact one-hot draws), z_s ~
    q(z | x, c~_s) pathwise (eq. 11): `[B]`."""
    log_pi = q.log_weights
    c = relaxed_one_hot(log_pi.expand(samples, *log_pi.shape), temperature, straight_through)  # [S, B, K]
    z = q.given(c).rsample()  # [S, B, D]
    return model.log_likelihood(x, z).mean(0)


class CPVAEBound(Objective):
    """The CP-VAE bound (eq. 7) with an exact or Gumbel-Softmax estimate of its reconstruction term."""

    name = "cpvae"

    def __init__(
        self,
        estimator: str = "exact",
        samples: int = 1,
        temperature: float = 1.0,
        min_temperature: float = 0.5,
        anneal_rate: float = 0.0,
        straight_through: bool = False,
    ) -> None:
        if estimator not in ESTIMATORS:
            raise ConfigError(f"objective cpvae: estimator must be one of {', '.join(ESTIMATORS)}, not {estimator!r}")
        if samples < 1:
            raise ConfigError(f"objective cpvae: samples must be >= 1, got {samples}")
        if temperature <= 0 or anneal_rate < 0 or (anneal_rate > 0 and not 0 < min_temperature <= temperature):
            raise ConfigError(
                "objective cpvae: need temperature > 0, anneal_rate >= 0 and, when annealing, 0 < min_temperature "
                f"<= temperature; got temperature={temperature}, min_temperature={min_temperature}, "
                f"anneal_rate={anneal_rate}"
            )
        self.estimator, self.samples, self.straight_through = estimator, samples, straight_through
        self.initial_temperature, self.min_temperature, self.anneal_rate = temperature, min_temperature, anneal_rate
        self.temperature = temperature

    def set_epoch(self, epoch: int) -> None:
        """Set the Gumbel-Softmax temperature of epoch `epoch` (0-based; the trainer calls this each epoch)."""
        if self.anneal_rate > 0:
            decayed = self.initial_temperature * math.exp(-self.anneal_rate * epoch)
            self.temperature = max(self.min_temperature, decayed)

    def epoch_metrics(self) -> dict[str, float]:
        """What the trainer adds to the epoch's metrics line: the temperature used (gumbel)."""
        return {"temperature": self.temperature} if self.estimator == "gumbel" else {}

    def terms(self, model, x: Tensor) -> CPVAETerms:
        """A, B1, B2 and H(q(z, c | x)) for a batch `x` `[B, *event]`."""
        _, prior = conditional_pair(model, "objective cpvae")
        q = model.posterior(x)
        if self.estimator == "exact":
            rec = exact_reconstruction(model, x, q, self.samples)
        else:
            tau = self.temperature if torch.is_grad_enabled() else 0.0
            rec = gumbel_reconstruction(model, x, q, self.samples, tau, self.straight_through)
        return CPVAETerms(rec, *kl_terms(q, prior))

    def __call__(self, model, x: Tensor, beta: float = 1.0, entropy_weight: float = 1.0) -> Tensor:
        return self.terms(model, x).annealed(beta, entropy_weight)

    def __repr__(self) -> str:
        return (
            f"CPVAEBound(estimator={self.estimator!r}, samples={self.samples}, temperature={self.temperature:g}, "
            f"straight_through={self.straight_through})"
        )


OBJECTIVES.register("cpvae")(CPVAEBound)  # options: the constructor's arguments
