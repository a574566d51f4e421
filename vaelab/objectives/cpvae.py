"""The CP-VAE bound (Lavda et al., eq. 7) with its KL split and taken in closed form (eqs. 8-9):

    L(x) = A - beta (B1 + B2),           A  = E_{q(z, c | x)} log p(x | z, c),
    B1 = KL(q(c | x) || p(c)) = log K - H(q(c | x)),                                             (eq. 9)
    B2 = sum_k q(c = k | x) KL(q(z | x, c = k) || p(z | c = k))     (diagonal Gaussians, closed form).

p(x | z, c) is the decoder on [z, one-hot c] (eq. 3; `CPVAE`), or p(x | z) for a decoder on z alone (c is then
ignored). The reconstruction term A is estimated by
  * `estimator: exact`: the sum over c, A = sum_k q(k | x) E_{q(z | x, k)} log p(x | z, k), with `samples` pathwise
    draws of z per category (K decoder passes per sample: for small K);
  * `estimator: gumbel`: a Gumbel-Softmax c~ (eq. 11) at temperature tau and z ~ q(z | x, c~) pathwise, the decoder
    fed [z, c~] (as the authors' code): one decoder pass per sample whatever K, biased for tau > 0.
Without gradients (validation, evaluation) the gumbel estimator draws c exactly (tau = 0, the Gumbel-max trick), so
its value is an unbiased estimate of L(x). With `relaxed_scoring: true` it keeps the relaxed c~ at the current tau
there too, as the authors' code scores validation and the test "lower bound" (utils/evaluation.py and
calculate_lower_bound, both through calculate_loss): that value is not a bound on log p(x) for tau > 0, since the
decoder can read c~'s continuous values, which B1 does not pay for. It exists to measure what their protocol selects
and reports (early stopping on it, `vaelab evaluate`'s `nvlb_relaxed`).

`kl_z: at_the_draw` (an ablation, not the bound) replaces B2 by the authors' code's sum_k q(k | x) KL(q(z | x, c~) ||
p(z | k)): the one Gaussian of the Gumbel draw c~ against every p(z | k) (`kl_z_at_the_draw`).
`decoder_draw: independent` (an ablation) feeds the decoder a second, independent Gumbel-Softmax draw c~' while z
comes from q(z | x, c~), as the authors' code does (models/cp_vae_z_xc.py: encoder() and forward() each call
their Gumbel sampler); only where c~ is relaxed (tau > 0): the hard draws of the bound's estimate stay shared.

The temperature of epoch e (0-based) when anneal_rate r > 0 (the paper gives no schedule):
  * `anneal: exponential`: tau_e = max(min_temperature, temperature * exp(-r e));
  * `anneal: compound` (the authors' code, utils/training.py: tau <- max(tau_min, tau * exp(-r n)) at the start of
    every 1-based epoch n, r = 3e-5): tau_e = max(min_temperature, temperature * exp(-r n (n + 1) / 2)), n = e + 1.

`joint_log_weights` gives the (z, c) importance weights of stratified draws, p(x | z, c) p(z | c) p(c) /
(q(c | x) q(z | x, c)), with which the stratified estimators (SIWAE's, `vaelab.objectives.stratified`) treat a
decoder that reads c: the strata are the categories.

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

from vaelab.distributions import DiagonalNormal
from vaelab.distributions.gumbel_softmax import relaxed_one_hot
from vaelab.errors import ConfigError
from vaelab.models.cpvae import conditional_pair, every_category, log_likelihood_given, prior_conditionals
from vaelab.objectives.bounds import LogWeights, Objective
from vaelab.posteriors.conditional import CategoricalGaussianPosterior
from vaelab.priors.mixture_of_gaussians import MixtureOfGaussians

ESTIMATORS = ("exact", "gumbel")
ANNEALING = ("exponential", "compound")
KL_Z = ("per_category", "at_the_draw")
DECODER_DRAWS = ("shared", "independent")


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
    """A = sum_k q(k | x) (1/T) sum_t log p(x | z_tk, k), z_tk ~ q(z | x, k) pathwise (`T = samples`): `[B]`."""
    z = q.stratified_rsample(samples)  # [T, K, B, D]
    log_lik = log_likelihood_given(model, x, z, every_category(z.shape[1], z)).mean(0)  # [K, B]
    return (q.log_weights.exp() * log_lik.T).sum(-1)


def gumbel_reconstruction(
    model,
    x: Tensor,
    q: CategoricalGaussianPosterior,
    samples: int = 1,
    temperature: float = 1.0,
    straight_through: bool = False,
) -> Tensor:
    """A ~ (1/S) sum_s log p(x | z_s, c~_s), c~_s Gumbel-Softmax at `temperature` (0: exact one-hot draws), z_s ~
    q(z | x, c~_s) pathwise (eq. 11): `[B]`."""
    return _gumbel_terms(model, x, q, samples, temperature, straight_through)[0]


def _gumbel_terms(
    model,
    x: Tensor,
    q: CategoricalGaussianPosterior,
    samples: int,
    temperature: float,
    straight_through: bool,
    independent_decoder_draw: bool = False,
) -> tuple[Tensor, DiagonalNormal]:
    """(A `[B]` as `gumbel_reconstruction`, q(z | x, c~_s) with batch `[S, B]`); `independent_decoder_draw` (for
    temperature > 0): the decoder reads a second draw c~'_s (see the module docstring)."""
    log_pi = q.log_weights.expand(samples, *q.log_weights.shape)
    c = relaxed_one_hot(log_pi, temperature, straight_through)  # [S, B, K]
    q_z = q.given(c)
    if independent_decoder_draw and temperature > 0:
        c = relaxed_one_hot(log_pi, temperature, straight_through)
    return log_likelihood_given(model, x, q_z.rsample(), c).mean(0), q_z


def kl_z_at_the_draw(q: CategoricalGaussianPosterior, q_z: DiagonalNormal, prior: MixtureOfGaussians) -> Tensor:
    """The authors' code's B2 (macio232/cp-vae models/cp_vae_z_xc.py): sum_k q(k | x) KL(q(z | x, c~) || p(z | k))
    with the one Gaussian q(z | x, c~) of the Gumbel draw c~ against every p(z | k), averaged over the S draws:
    `[B]`. Not eq. 8 (which has q(z | x, k) in term k), so not the bound; an ablation option."""
    at_draw = DiagonalNormal(q_z.loc.unsqueeze(-2), q_z.scale.unsqueeze(-2), q_z.log_scale.unsqueeze(-2))
    return (q.log_weights.exp() * kl_divergence(at_draw, prior_conditionals(prior))).sum(-1).mean(0)  # [S, B, K]


def joint_log_weights(model, x: Tensor, z: Tensor, q) -> LogWeights:
    """Log-weight parts `[T, K, B]` of stratified draws z `[T, K, B, D]`, z_tk ~ q(z | x, c = k), with the category
    of the stratum: log p(x | z_tk, k), log p(z_tk | k) + log p(k), log q(z_tk | x, k) + log q(k | x) (`q`: a
    mixture over the K categories, batch `[B]`), so that log_w = log p(x, z, c) - log q(z, c | x) (eqs. 3, 6)."""
    _, prior = conditional_pair(model, "the joint (z, c) weights")
    k = z.shape[1]
    per_category = z.movedim(1, -2)  # [T, B, K, D]: stratum k against the k-th component
    log_prior = prior_conditionals(prior).log_prob(per_category).movedim(-1, 1) - math.log(k)
    log_q = q.component_distribution.log_prob(per_category).movedim(-1, 1) + q.log_weights.T
    return LogWeights(log_likelihood_given(model, x, z, every_category(k, z)), log_prior, log_q)


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
        anneal: str = "exponential",
        straight_through: bool = False,
        relaxed_scoring: bool = False,
        kl_z: str = "per_category",
        decoder_draw: str = "shared",
    ) -> None:
        if anneal not in ANNEALING:
            raise ConfigError(f"objective cpvae: anneal must be one of {', '.join(ANNEALING)}, not {anneal!r}")
        if estimator not in ESTIMATORS:
            raise ConfigError(f"objective cpvae: estimator must be one of {', '.join(ESTIMATORS)}, not {estimator!r}")
        if samples < 1:
            raise ConfigError(f"objective cpvae: samples must be >= 1, got {samples}")
        if kl_z not in KL_Z:
            raise ConfigError(f"objective cpvae: kl_z must be one of {', '.join(KL_Z)}, not {kl_z!r}")
        if decoder_draw not in DECODER_DRAWS:
            raise ConfigError(
                f"objective cpvae: decoder_draw must be one of {', '.join(DECODER_DRAWS)}, not {decoder_draw!r}"
            )
        if decoder_draw == "independent" and estimator != "gumbel":
            raise ConfigError(
                "objective cpvae: decoder_draw independent is a second Gumbel-Softmax draw; it needs estimator: gumbel"
            )
        if kl_z == "at_the_draw" and estimator != "gumbel":
            raise ConfigError(
                "objective cpvae: kl_z at_the_draw uses the Gumbel-Softmax draw; it needs estimator: gumbel"
            )
        if relaxed_scoring and estimator != "gumbel":
            raise ConfigError(
                "objective cpvae: relaxed_scoring scores with the Gumbel-Softmax c~; it needs estimator: gumbel"
            )
        if temperature <= 0 or anneal_rate < 0 or (anneal_rate > 0 and not 0 < min_temperature <= temperature):
            raise ConfigError(
                "objective cpvae: need temperature > 0, anneal_rate >= 0 and, when annealing, 0 < min_temperature "
                f"<= temperature; got temperature={temperature}, min_temperature={min_temperature}, "
                f"anneal_rate={anneal_rate}"
            )
        self.estimator, self.samples, self.straight_through = estimator, samples, straight_through
        self.initial_temperature, self.min_temperature, self.anneal_rate = temperature, min_temperature, anneal_rate
        self.anneal, self.temperature, self.relaxed_scoring = anneal, temperature, relaxed_scoring
        self.kl_z, self.decoder_draw = kl_z, decoder_draw

    def set_epoch(self, epoch: int) -> None:
        """Set the Gumbel-Softmax temperature of epoch `epoch` (0-based; the trainer calls this each epoch): the
        `anneal` schedule of the module docstring."""
        if self.anneal_rate > 0:
            n = epoch + 1  # compound: the authors' 1-based epoch, annealed before it starts
            exponent = epoch if self.anneal == "exponential" else n * (n + 1) / 2
            decayed = self.initial_temperature * math.exp(-self.anneal_rate * exponent)
            self.temperature = max(self.min_temperature, decayed)

    def epoch_metrics(self) -> dict[str, float]:
        """What the trainer adds to the epoch's metrics line: the temperature used (gumbel)."""
        return {"temperature": self.temperature} if self.estimator == "gumbel" else {}

    def terms(self, model, x: Tensor) -> CPVAETerms:
        """A, B1, B2 and H(q(z, c | x)) for a batch `x` `[B, *event]`."""
        _, prior = conditional_pair(model, "objective cpvae")
        q = model.posterior(x)
        if self.estimator == "exact":
            return CPVAETerms(exact_reconstruction(model, x, q, self.samples), *kl_terms(q, prior))
        tau = self.temperature if torch.is_grad_enabled() or self.relaxed_scoring else 0.0
        independent = self.decoder_draw == "independent"
        rec, q_z = _gumbel_terms(model, x, q, self.samples, tau, self.straight_through, independent)
        kl_c, kl_z, entropy = kl_terms(q, prior)
        if self.kl_z == "at_the_draw":
            kl_z = kl_z_at_the_draw(q, q_z, prior)
        return CPVAETerms(rec, kl_c, kl_z, entropy)

    def __call__(self, model, x: Tensor, beta: float = 1.0, entropy_weight: float = 1.0) -> Tensor:
        return self.terms(model, x).annealed(beta, entropy_weight)

    def __repr__(self) -> str:
        return (
            f"CPVAEBound(estimator={self.estimator!r}, samples={self.samples}, temperature={self.temperature:g}, "
            f"straight_through={self.straight_through}, relaxed_scoring={self.relaxed_scoring}, kl_z={self.kl_z!r}, "
            f"decoder_draw={self.decoder_draw!r})"
        )
