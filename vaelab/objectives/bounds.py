"""ELBO and IWAE bounds, with the two warm-up weights used in the papers.

With beta (KL warm-up, VampPrior sec. 5.1; Bowman et al. 2015) and lambda (entropy annealing, Cremer et
al. 2018 sec. 5.3.1) the per-sample annealed log-weight is

    log w_(beta, lambda) = log p(x | z) + beta * (log p(z) - lambda * log q(z | x)),

which is the plain log-weight at beta = lambda = 1. The ELBO is its mean over samples z ~ q (Kingma &
Welling 2014, eq. 3) and the IWAE bound its log-mean-exp (Burda et al. 2016, eq. 8). KL warm-up is
lambda = 1, beta: 0 -> 1; entropy annealing is beta = 1, lambda: 0 -> 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from vaelab.protocols import AuxiliarySampler


def logmeanexp(t: Tensor, dim: int = 0) -> Tensor:
    """log (1/n) sum_i exp(t_i) along `dim`, stable."""
    return torch.logsumexp(t, dim) - math.log(t.shape[dim])


def delta_method_se(log_sum: Tensor, log_sum_sq: Tensor, n: int) -> Tensor:
    """Delta-method standard error of log (1/n) sum_i u_i from n iid terms u_i > 0, given log sum u and log sum u^2
    (any shape): se = sqrt(var^(u) / n) / mean^(u) = sqrt((n sum u^2 / (sum u)^2 - 1) / (n - 1)), var^ the unbiased
    sample variance; computed in log space. It is at most 1 (all weight on one term), so it cannot report a larger
    error however wrong the estimate is, and it rests on the sample variance of u: unreliable when few terms carry
    the sum (low ESS = (sum u)^2 / sum u^2). NaN for n < 2."""
    if n < 2:
        return torch.full_like(log_sum, math.nan)
    return torch.sqrt((n * torch.exp(log_sum_sq - 2 * log_sum) - 1).clamp(min=0) / (n - 1))


@dataclass
class LogWeights:
    """The three parts of log w for samples `[*S, B]`."""

    log_likelihood: Tensor
    log_prior: Tensor
    log_q: Tensor

    @property
    def log_w(self) -> Tensor:
        return self.log_likelihood + self.log_prior - self.log_q

    def annealed(self, beta: float = 1.0, entropy_weight: float = 1.0) -> Tensor:
        if beta == 1.0 and entropy_weight == 1.0:
            return self.log_w
        return self.log_likelihood + beta * (self.log_prior - entropy_weight * self.log_q)


def has_auxiliary_sampler(q: Distribution) -> bool:
    """Whether q is an auxiliary-variable family whose marginal log q(z | x) is intractable and which offers
    `rsample_and_log_prob(sample_shape) -> (z, log_q)` instead (the auxiliary flow, Cremer et al. 2018 eq. 14)."""
    return isinstance(q, AuxiliarySampler)


def rsample_and_log_prob(q: Distribution, samples: int) -> tuple[Tensor, Tensor]:
    """`samples` draws z `[S, B, D]` from q and the log_q `[S, B]` that makes log p(x, z) - log_q the log of an
    unbiased weight of p(x): log q(z | x), or for an auxiliary-variable family (`has_auxiliary_sampler`)
    log q(z, v | x) - log r(v | x, z) with its own auxiliary draw v (Cremer et al. 2018, eq. 14; since
    E_{q(v|z,x)}[r(v|x,z) / q(v|z,x)] = 1 the weight keeps mean p(x)). The draws are reparameterised; a family
    without `rsample` (a mixture) is sampled plainly, which is allowed only where no gradient is taken
    (evaluation): training it needs a stratified objective."""
    if has_auxiliary_sampler(q):
        return q.rsample_and_log_prob((samples,))
    z = q.rsample((samples,)) if q.has_rsample or torch.is_grad_enabled() else q.sample((samples,))
    return z, q.log_prob(z)


def sample_log_weights(model, x: Tensor, samples: int, q: Distribution | None = None) -> tuple[LogWeights, Tensor]:
    """Draw `samples` z ~ q(z | x) `[S, B, D]` and return their log-weight parts and z (`rsample_and_log_prob`:
    every estimator built on this handles auxiliary-variable families too)."""
    q = model.posterior(x) if q is None else q
    z, log_q = rsample_and_log_prob(q, samples)
    return LogWeights(model.log_likelihood(x, z), model.prior.log_prob(z), log_q), z


class Objective:
    """A bound to maximise: `objective(model, x, beta, entropy_weight)` -> per-data-point values `[B]`.

    The trainer calls the optional hooks below at fixed points; each has a no-op default, so an objective
    overrides only those it needs (AIWAE: `param_groups`, `epoch_metrics`, `state_dict`, `set_rank_mean`; CP-VAE:
    `set_epoch`).

    >>> import torch, vaelab
    >>> class Half(vaelab.Objective):
    ...     def __call__(self, model, x, beta=1.0, entropy_weight=1.0):
    ...         return 0.5 * vaelab.ELBO()(model, x, beta, entropy_weight)
    >>> Half().epoch_metrics(), Half().burn_in_epochs
    ({}, 0)
    """

    name: str = "objective"
    #: Epochs of SIWAE's burn-in (`vaelab.train.burn_in`) before training; 0: none.
    burn_in_epochs: int = 0

    def __call__(self, model, x: Tensor, beta: float = 1.0, entropy_weight: float = 1.0) -> Tensor:
        raise NotImplementedError

    def param_groups(self, model: nn.Module) -> list[dict] | None:
        """Optimiser parameter groups, each may carry an `lr_scale`; None (default): one group of all parameters."""
        return None

    def set_epoch(self, epoch: int) -> None:
        """Called before each training epoch (0-based), for an objective's own schedule."""

    def epoch_metrics(self) -> dict[str, float]:
        """Extra columns of the epoch's `metrics.jsonl` row."""
        return {}

    def state_dict(self) -> dict:
        """State to checkpoint (e.g. adapted step sizes); {} (default): stateless."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned."""

    def set_rank_mean(self, mean: Callable[[Tensor], Tensor]) -> None:
        """Called once under DDP with `mean`, which averages a tensor over the ranks (a collective: every rank must
        call it at the same point), for state that must stay the same on every rank (AIWAE's step sizes). Default:
        not needed."""


class ELBO(Objective):
    """E_q[log p(x|z)] - beta * KL(q || p), with KL in closed form when `analytic_kl` and one exists.

    With entropy annealing (lambda != 1) the cross-entropy E_q[log p(z)] is estimated by Monte Carlo and
    the entropy of q is taken in closed form when the family has one. An auxiliary-variable family (no
    density for q(z | x), hence no KL or entropy) always takes the Monte Carlo path of `sample_log_weights`.
    Registry name `elbo` (`vaelab.fit(model, "elbo", ...)`).

    >>> import torch, vaelab
    >>> from torch import nn
    >>> model = vaelab.VAE(nn.Flatten(), "diagonal_gaussian", "standard_normal", nn.Linear(2, 16), "bernoulli",
    ...                    latent_dim=2, event_shape=(1, 4, 4))
    >>> x = torch.bernoulli(torch.full((3, 1, 4, 4), 0.5))
    >>> vaelab.ELBO(samples=2)(model, x).shape  # per data point; training maximises the batch mean
    torch.Size([3])
    >>> from vaelab.config.build import build_objective  # what fit builds from a name or a section
    >>> build_objective({"type": "elbo", "samples": 2})
    ELBO(samples=2, analytic_kl=True)
    """

    name = "elbo"

    def __init__(self, samples: int = 1, analytic_kl: bool = True) -> None:
        self.samples, self.analytic_kl = samples, analytic_kl

    def __call__(self, model, x: Tensor, beta: float = 1.0, entropy_weight: float = 1.0) -> Tensor:
        q = model.posterior(x)
        if not self.analytic_kl or has_auxiliary_sampler(q):
            lw, _ = sample_log_weights(model, x, self.samples, q)
            return lw.annealed(beta, entropy_weight).mean(0)
        z = q.rsample((self.samples,))
        log_lik = model.log_likelihood(x, z).mean(0)
        kl = model.prior.kl(q) if entropy_weight == 1.0 else None
        if kl is not None:
            return log_lik - beta * kl
        try:
            entropy = q.entropy()
        except NotImplementedError:
            entropy = -q.log_prob(z).mean(0)
        return log_lik + beta * (model.prior.log_prob(z).mean(0) + entropy_weight * entropy)

    def __repr__(self) -> str:
        return f"ELBO(samples={self.samples}, analytic_kl={self.analytic_kl})"


class IWAE(Objective):
    """IWAE-k bound log (1/k) sum_i w_i, z_i ~ q(z | x) (Burda et al. 2016, eq. 8). Registry name `iwae`
    (`vaelab.fit(model, {"type": "iwae", "samples": 5}, ...)`).

    >>> import torch, vaelab
    >>> from torch import nn
    >>> model = vaelab.VAE(nn.Flatten(), "diagonal_gaussian", "standard_normal", nn.Linear(2, 16), "bernoulli",
    ...                    latent_dim=2, event_shape=(1, 4, 4))
    >>> x = torch.bernoulli(torch.full((3, 1, 4, 4), 0.5))
    >>> vaelab.IWAE(samples=5)(model, x).shape
    torch.Size([3])
    >>> _ = torch.manual_seed(0); iwae_1 = vaelab.IWAE(samples=1)(model, x)  # k = 1: the Monte Carlo ELBO
    >>> _ = torch.manual_seed(0); elbo_1 = vaelab.ELBO(samples=1, analytic_kl=False)(model, x)
    >>> torch.allclose(iwae_1, elbo_1)
    True
    """

    name = "iwae"

    def __init__(self, samples: int = 5) -> None:
        self.samples = samples

    def __call__(self, model, x: Tensor, beta: float = 1.0, entropy_weight: float = 1.0) -> Tensor:
        lw, _ = sample_log_weights(model, x, self.samples)
        return logmeanexp(lw.annealed(beta, entropy_weight), 0)

    def __repr__(self) -> str:
        return f"IWAE(samples={self.samples})"
