"""CP-VAE (Lavda et al.) as a VAE composition: a `categorical_gaussian` posterior q(z, c | x) = q(c | x) q(z | x, c)
with the `conditional` prior p(z, c) = (1/K) N(z; mu_c, diag sigma_c^2), decoder p(x | z) on z.

Summing c out makes q(z | x) and p(z) mixtures, so log p(x, z), the IS evaluator, HMC and AIS treat the model as
any VAE; this module holds what needs the two levels: the check that a model is this pair, the conditionals
p(z | c) `[K]`, q(c | x) over a dataset, the aggregated posterior q(c) (eq. 14), and generation given c.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vaelab.distributions import DiagonalNormal
from vaelab.errors import ConfigError
from vaelab.posteriors.conditional import CategoricalGaussian
from vaelab.priors.mixture_of_gaussians import MixtureOfGaussians


def conditional_pair(model: nn.Module, what: str = "this") -> tuple[CategoricalGaussian, MixtureOfGaussians]:
    """The model's (posterior family, prior) if they are CP-VAE's pair: a `categorical_gaussian` posterior with K
    categories and a uniform-weight mixture-of-Gaussians prior (`conditional`) with K components; else `ConfigError`
    naming `what` needs it."""
    family, prior = getattr(model, "posterior_family", None), getattr(model, "prior", None)
    ok = isinstance(family, CategoricalGaussian) and isinstance(prior, MixtureOfGaussians)
    if ok and prior.logits is None and prior.loc.shape[0] == family.categories:
        return family, prior
    got = f"posterior {type(family).__name__} and prior {type(prior).__name__}"
    if ok:
        got = f"{family.categories} categories, a prior with {prior.loc.shape[0]} components"
        got += " and learned weights" if prior.logits is not None else ""
    raise ConfigError(
        f"{what} needs a CP-VAE: model.posterior {{type: categorical_gaussian, categories: K}} and model.prior "
        f"{{type: conditional}} (uniform p(c), one Gaussian p(z|c) per category); got {got}"
    )


def is_cpvae(model: nn.Module) -> bool:
    try:
        conditional_pair(model)
    except ConfigError:
        return False
    return True


def prior_conditionals(prior: MixtureOfGaussians) -> DiagonalNormal:
    """p(z | c = k) for every k: a `DiagonalNormal` with batch `[K]` (CP-VAE eq. 5)."""
    return DiagonalNormal(prior.loc, torch.exp(0.5 * prior.log_var), 0.5 * prior.log_var)


@torch.no_grad()
def category_probabilities(model: nn.Module, data: Tensor, batch_size: int = 500) -> Tensor:
    """q(c | x) `[N, K]` for every row of `data` `[N, *event]` (on the CPU), batch by batch."""
    conditional_pair(model, "q(c | x)")
    device = next(model.parameters()).device
    out = [
        model.posterior(data[s : s + batch_size].to(device)).log_weights.exp().cpu()
        for s in range(0, data.shape[0], batch_size)
    ]
    return torch.cat(out)


def aggregated_posterior(model: nn.Module, data: Tensor, batch_size: int = 500) -> Tensor:
    """q(c) = (1/n) sum_i q(c | x_i) `[K]` over `data` (CP-VAE eq. 14), in float64 so it sums to 1."""
    return category_probabilities(model, data, batch_size).double().mean(0)


def draw_categories(probs: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
    """n categories `[n]` (int64) drawn i.i.d. from `probs` `[K]`."""
    return torch.multinomial(probs.double().cpu(), n, replacement=True, generator=generator)


@torch.no_grad()
def generate(model: nn.Module, categories: Tensor, mean: bool = True) -> Tensor:
    """x `[n, *event]` for given categories `[n]`: z ~ p(z | c) (eq. 5), then E[x | z] (`mean`) or x ~ p(x | z)."""
    _, prior = conditional_pair(model, "generation given a category")
    params = model.decode(prior.sample_components(categories.to(prior.loc.device)))
    return model.likelihood.mean(params) if mean else model.likelihood.sample(params)
