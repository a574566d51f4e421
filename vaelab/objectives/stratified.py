"""Stratified bounds for mixture posteriors q(z|x) = sum_k alpha_k q_k(z|x) (Morningstar et al., "Automatic
Differentiation Variational Inference with Mixtures", SIWAE) and the baselines of its sec. 4.2.

Draws: T samples from every component, z_tk ~ q_k `[T, K, B, D]` (reparameterised); log-weights
log w_tk = log p(x, z_tk) - log q(z_tk | x) `[T, K, B]` with q the whole mixture density; log alpha `[K, B]`.

    SELBO   sum_k alpha_k (1/T) sum_t log w_tk                         (sec. 2, the SELBO display)
    SIWAE   log (1/T) sum_t sum_k alpha_k w_tk                         (eq. 2)
    C-IWAE  c SELBO + (1 - c) SIWAE on the same draws                  (Rainforth et al. 2018, sec. 4; SIWAE sec. 4.2)
    M-IWAE  (1/T) sum_t log sum_k alpha_k w_tk                         (Rainforth et al.; "SIWAE over K, SELBO over T")
    PPD     log sum_k alpha_k (1/T) sum_t p(x|z_tk) - KL^(q || r),     KL^ = sum_k alpha_k (1/T) sum_t log (q/r)(z_tk)

(PPD: sec. 4.2 writes log (1/TK) sum_{t,k} p(x|z), which for TK draws from q is the same estimate; for draws
stratified by component the unbiased weights are alpha_k / T, which equal 1/TK when the weights are uniform.)

With K = 1 SELBO is the Monte Carlo ELBO with T samples and SIWAE is IWAE-T: the same draws give the same
numbers. A posterior that is not a mixture is treated as K = 1 (its `rsample`), so these objectives train a
Gaussian q as well. Theorem A.2 (SIWAE-T >= IWAE-T with T draws from the mixture): conditionally on the draws,
the SIWAE estimate is the average over component labels k_t ~ alpha of (1/T) sum_t w_{t k_t}, whose pairs
(k_t, z_{t k_t}) are T iid draws from q; Jensen's inequality over the labels gives the bound.

Warm-up weights enter through the annealed log-weight (`LogWeights.annealed`): log p(x|z) + beta (log p(z) -
lambda log q(z)); the stratum weights alpha_k are kept (app. B.1 puts beta on "the KL divergence term (and
the equivalent term in the SIWAE objective)").

Gradient variants:
  stl   (Roeder et al. 2017) log q evaluated with detached variational parameters: the draws keep their
        path derivative and alpha_k keeps its gradient as the stratum weight. Unbiased for SELBO (the dropped
        term sum_k alpha_k E_qk[d log q / d phi] = E_q[score] = 0); biased for SIWAE/C-IWAE, as for IWAE.
  dreg  (Tucker et al. 2019, eq. 6) for siwae with K = 1 (IWAE): see `_doubly_reparameterize`. With K > 1 the
        score of the mixture density at a draw of another component has no reparameterised counterpart in
        that draw, so the estimator does not apply; asking for it there is a `ConfigError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Distribution

from vaelab.distributions import ReparameterizedMixture, detach_parameters
from vaelab.errors import ConfigError
from vaelab.models.cpvae import reads_category
from vaelab.objectives.bounds import LogWeights, Objective
from vaelab.objectives.cpvae import joint_log_weights
from vaelab.objectives.mixture_penalties import check_penalty_options, mixture_penalty


@dataclass
class StratifiedDraws:
    """Draws `z` `[T, K, B, D]`, stratum log-weights `log_alpha` `[K, B]` and log-weight parts `[T, K, B]`."""

    z: Tensor
    log_alpha: Tensor
    parts: LogWeights

    @property
    def samples(self) -> int:
        return self.z.shape[0]

    @property
    def components(self) -> int:
        return self.z.shape[1]


def stratified_rsample(q: Distribution, samples: int) -> tuple[Tensor, Tensor]:
    """T = `samples` reparameterised draws per component `[T, K, B, D]` and log alpha `[K, B]`; a posterior that
    is not a mixture counts as one component (`rsample`, log alpha = 0)."""
    if isinstance(q, ReparameterizedMixture):
        return q.stratified_rsample(samples), q.log_weights.movedim(-1, 0)
    z = q.rsample((samples,)).unsqueeze(1)
    return z, z.new_zeros(z.shape[1:-1])


def stratified_log_weights(model, x, samples: int, q: Distribution | None = None, stl: bool = False) -> StratifiedDraws:
    """Draw stratified samples from q(z | x) (default: `model.posterior(x)`) and evaluate their log-weight
    parts `[T, K, B]`; with `stl`, log q has detached parameters (gradient only along the draws). For a CP-VAE whose
    decoder reads c the components are the categories and the weights are joint, p(x, z, c) / q(z, c | x)
    (`vaelab.objectives.cpvae.joint_log_weights`): then SELBO is eq. (7) by Monte Carlo and SIWAE's estimate sums c
    out exactly (`vaelab.evaluation.cpvae`)."""
    q = model.posterior(x) if q is None else q
    z, log_alpha = stratified_rsample(q, samples)
    q_log = detach_parameters(q) if stl else q
    if reads_category(model):  # CP-VAE's p(x | z, c): stratum k is c = k, with the joint (z, c) weight
        return StratifiedDraws(z, log_alpha, joint_log_weights(model, x, z, q_log))
    log_q = q_log.stratified_log_prob(z) if isinstance(q_log, ReparameterizedMixture) else q_log.log_prob(z)
    parts = LogWeights(model.log_likelihood(x, z), model.prior.log_prob(z), log_q)
    return StratifiedDraws(z, log_alpha, parts)


# --- the bounds, as functions of log alpha [K, B] and log-weights [T, K, B] -> [B] --------------------------
def selbo(log_alpha: Tensor, log_w: Tensor) -> Tensor:
    """sum_k alpha_k (1/T) sum_t log w_tk."""
    return (log_alpha.exp() * log_w.mean(0)).sum(0)


def siwae(log_alpha: Tensor, log_w: Tensor) -> Tensor:
    """log (1/T) sum_t sum_k alpha_k w_tk (eq. 2)."""
    return torch.logsumexp((log_w + log_alpha).flatten(0, 1), 0) - math.log(log_w.shape[0])


def miwae(log_alpha: Tensor, log_w: Tensor) -> Tensor:
    """(1/T) sum_t log sum_k alpha_k w_tk: T single-draw SIWAE bounds, averaged."""
    return torch.logsumexp(log_w + log_alpha, 1).mean(0)


def _doubly_reparameterize(value: Tensor, draws: StratifiedDraws, log_w: Tensor, c: float) -> Tensor:
    """DReG for IWAE-T (K = 1; Tucker et al. 2019, eq. 6, with annealing): returns `value` (the bound) whose
    gradient is sum_t w~_t [(1 - c) + c w~_t] d log w_t / d z_t dz_t/dphi (path term; log q detached) plus
    sum_t w~_t d log w_t / d theta (the model's IWAE gradient), w~ = softmax_t log w, c = beta * lambda.

    Derivation: the direct term -c sum_t w~_t d log q(z_t) / d phi has, by E_q[f dlog q/dphi] = E[df/dz dz/dphi]
    applied to f = w~_t, the same expectation as -c sum_t w~_t (1 - w~_t) d log w_t / dz_t dz_t/dphi.
    The factor on the path is applied by a gradient hook on z (forward values are untouched)."""
    w = torch.softmax(log_w.detach(), 0)  # [T, 1, B]
    surrogate = (w * log_w).sum((0, 1))  # gradient: sum_t w~_t d log w_t (path and model parameters)
    if draws.z.requires_grad:
        scale = ((1 - c) + c * w).unsqueeze(-1)  # [T, 1, B, 1]
        draws.z.register_hook(lambda g: g * scale)
    return value.detach() + (surrogate - surrogate.detach())


class StratifiedObjective(Objective):
    """Base of the stratified objectives: draws T samples per component, evaluates `bound`, subtracts the
    app. D.2 mixture penalties when set, and carries the app. D.1 burn-in length for the trainer.

    Options (every stratified objective): `samples` T per component; `stl`; `entropy_penalty` (largest mass
    one component may hold, e.g. 0.95; null = off); `weight_floor` (e.g. 0.01; null = off); `burn_in_epochs`
    (epochs of burn-in against the prior before training, app. D.1; 0 = off). The value returned is the bound
    minus the penalties (eq. 7), so logged training and validation losses include them.
    """

    name = "stratified"

    def __init__(
        self,
        samples: int = 1,
        stl: bool = False,
        entropy_penalty: float | None = None,
        weight_floor: float | None = None,
        burn_in_epochs: int = 0,
    ) -> None:
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ConfigError(f"objective {self.name}: samples (per component) must be an integer >= 1, got {samples}")
        if burn_in_epochs < 0:
            raise ConfigError(f"objective {self.name}: burn_in_epochs must be >= 0, got {burn_in_epochs}")
        check_penalty_options(entropy_penalty, weight_floor)
        self.samples, self.stl = samples, stl
        self.entropy_penalty, self.weight_floor, self.burn_in_epochs = entropy_penalty, weight_floor, burn_in_epochs

    def bound(self, draws: StratifiedDraws, beta: float, entropy_weight: float) -> Tensor:
        raise NotImplementedError

    def __call__(self, model, x, beta: float = 1.0, entropy_weight: float = 1.0) -> Tensor:
        q = model.posterior(x)
        draws = stratified_log_weights(model, x, self.samples, q, stl=self.stl)
        value = self.bound(draws, beta, entropy_weight)
        return value - mixture_penalty(draws.log_alpha.movedim(0, -1), self.entropy_penalty, self.weight_floor)

    def __repr__(self) -> str:
        opts = {k: v for k, v in vars(self).items() if v not in (None, False, 0) or k == "samples"}
        return f"{type(self).__name__}({', '.join(f'{k}={v}' for k, v in opts.items())})"


class SELBO(StratifiedObjective):
    """Stratified ELBO: sum_k alpha_k (1/T) sum_t log w_tk (SIWAE sec. 2)."""

    name = "selbo"

    def bound(self, draws: StratifiedDraws, beta: float = 1.0, entropy_weight: float = 1.0) -> Tensor:
        return selbo(draws.log_alpha, draws.parts.annealed(beta, entropy_weight))


class SIWAE(StratifiedObjective):
    """Stratified IWAE: log (1/T) sum_t sum_k alpha_k w_tk (SIWAE eq. 2); `dreg` for K = 1 (see module doc).
    `samples` is T, the draws per component. Registry name `siwae` (`stl_siwae`: with `stl=True`).

    >>> import torch, vaelab
    >>> from torch import nn
    >>> model = vaelab.VAE(nn.Flatten(), {"type": "gaussian_mixture", "components": 3}, "standard_normal",
    ...                    nn.Linear(2, 16), "bernoulli", latent_dim=2, event_shape=(1, 4, 4))
    >>> x = torch.bernoulli(torch.full((4, 1, 4, 4), 0.5))
    >>> vaelab.SIWAE(samples=2)(model, x).shape  # T = 2 draws from each of K = 3 components, per data point
    torch.Size([4])
    >>> from vaelab.config.build import build_objective
    >>> build_objective({"type": "stl_siwae", "samples": 2})
    SIWAE(samples=2, stl=True)
    """

    name = "siwae"

    def __init__(self, samples: int = 1, stl: bool = False, dreg: bool = False, **options) -> None:
        super().__init__(samples, stl, **options)
        self.dreg = dreg

    def __call__(self, model, x, beta: float = 1.0, entropy_weight: float = 1.0) -> Tensor:
        if not self.dreg:
            return super().__call__(model, x, beta, entropy_weight)
        draws = stratified_log_weights(model, x, self.samples, stl=True)
        if draws.components != 1:
            raise ConfigError(
                f"dreg applies to single-component posteriors (K = 1), this one has K = {draws.components}: "
                "set the siwae option dreg to false (stl is the mixture variant)"
            )
        log_w = draws.parts.annealed(beta, entropy_weight)
        return _doubly_reparameterize(siwae(draws.log_alpha, log_w), draws, log_w, beta * entropy_weight)

    def bound(self, draws: StratifiedDraws, beta: float = 1.0, entropy_weight: float = 1.0) -> Tensor:
        return siwae(draws.log_alpha, draws.parts.annealed(beta, entropy_weight))


class CIWAE(StratifiedObjective):
    """C-IWAE for mixtures: c SELBO + (1 - c) SIWAE on the same draws, c = `elbo_weight` (Rainforth et al. 2018,
    sec. 4 uses beta for c; 0.5 here by default)."""

    name = "ciwae"

    def __init__(self, samples: int = 1, stl: bool = False, elbo_weight: float = 0.5, **options) -> None:
        super().__init__(samples, stl, **options)
        if not 0 <= elbo_weight <= 1:
            raise ConfigError(f"objective ciwae: elbo_weight must be in [0, 1], got {elbo_weight}")
        self.elbo_weight = elbo_weight

    def bound(self, draws: StratifiedDraws, beta: float = 1.0, entropy_weight: float = 1.0) -> Tensor:
        log_w, c = draws.parts.annealed(beta, entropy_weight), self.elbo_weight
        return c * selbo(draws.log_alpha, log_w) + (1 - c) * siwae(draws.log_alpha, log_w)


class MIWAE(StratifiedObjective):
    """M-IWAE for mixtures: (1/T) sum_t log sum_k alpha_k w_tk (T groups of one draw per component)."""

    name = "miwae"

    def bound(self, draws: StratifiedDraws, beta: float = 1.0, entropy_weight: float = 1.0) -> Tensor:
        return miwae(draws.log_alpha, draws.parts.annealed(beta, entropy_weight))


class PPD(StratifiedObjective):
    """Posterior predictive objective of SIWAE sec. 4.2: log E_q[p(x|z)] - beta KL(q || r), both estimated from
    the stratified draws (KL with lambda log q under entropy annealing)."""

    name = "ppd"

    def bound(self, draws: StratifiedDraws, beta: float = 1.0, entropy_weight: float = 1.0) -> Tensor:
        p = draws.parts
        log_ratio = beta * (p.log_prior - entropy_weight * p.log_q)  # -(annealed) log q/r
        return siwae(draws.log_alpha, p.log_likelihood) + selbo(draws.log_alpha, log_ratio)
