"""CP-VAE (Lavda et al.) as a VAE composition: a `categorical_gaussian` posterior q(z, c | x) = q(c | x) q(z | x, c)
with the `conditional` prior p(z, c) = (1/K) N(z; mu_c, diag sigma_c^2), and a decoder that reads

  * `z_and_c` (the default, `model.options.decoder_input`): p(x | z, c) of the paper's eq. (3), the decoder
    d(z, c) on the concatenation [z, one-hot c] (as the authors' code, models/cp_vae_z_xc.py, feeds [z, c~]):
    `CPVAE`. log p(x | z) and log p(x, z) are then not defined without c, so the estimators over z alone (the
    generic IS evaluator, AIS, HMC, the inference gaps) refuse it; log p(x) is estimated stratified over c
    (`vaelab.evaluation.cpvae`);
  * `z`: p(x | z) on z only, a plain `VAE`: summing c out makes q(z | x) and p(z) mixtures, so log p(x, z), the IS
    evaluator, HMC and AIS treat the model as any VAE.

This module holds what needs the two levels: the check that a model is this pair, the conditionals p(z | c) `[K]`,
the likelihood given c, q(c | x) over a dataset, the aggregated posterior q(c) (eq. 14), and generation given c.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaelab.distributions import DiagonalNormal
from vaelab.errors import ConfigError
from vaelab.models.vae import VAE
from vaelab.posteriors.conditional import CategoricalGaussian
from vaelab.priors.mixture_of_gaussians import MixtureOfGaussians
from vaelab.protocols import AmortizedModel, ReadsCategory

DECODER_INPUTS = ("z_and_c", "z")

NEEDS_C = (
    "this CP-VAE's decoder reads c (p(x | z, c); model.options.decoder_input: z_and_c), so log p(x | z) and "
    "log p(x, z) are not defined without c and estimators over z alone (IS over z, AIS, HMC, inference gaps) do "
    "not apply; `vaelab evaluate` estimates log p(x) stratified over c; for these, train with decoder_input: z"
)


def check_pair(family: nn.Module | None, prior: nn.Module | None, what: str = "this") -> None:
    """`ConfigError` naming `what` unless (`family`, `prior`) is CP-VAE's pair: a `categorical_gaussian` posterior
    with K categories and a uniform-weight mixture-of-Gaussians prior (`conditional`) with K components."""
    ok = isinstance(family, CategoricalGaussian) and isinstance(prior, MixtureOfGaussians)
    if ok and prior.logits is None and prior.loc.shape[0] == family.categories:
        return
    got = f"posterior {type(family).__name__} and prior {type(prior).__name__}"
    if ok:
        got = f"{family.categories} categories, a prior with {prior.loc.shape[0]} components"
        got += " and learned weights" if prior.logits is not None else ""
    raise ConfigError(
        f"{what} needs a CP-VAE: model.posterior {{type: categorical_gaussian, categories: K}} and model.prior "
        f"{{type: conditional}} (uniform p(c), one Gaussian p(z|c) per category); got {got}"
    )


def conditional_pair(model: nn.Module, what: str = "this") -> tuple[CategoricalGaussian, MixtureOfGaussians]:
    """The model's (posterior family, prior) if they are CP-VAE's pair (`check_pair`), else `ConfigError`."""
    family, prior = _family_and_prior(model)
    check_pair(family, prior, what)
    return family, prior


def _family_and_prior(model: nn.Module) -> tuple[nn.Module | None, nn.Module | None]:
    """(posterior family, prior) of an `AmortizedModel`, else (None, None)."""
    return (model.posterior_family, model.prior) if isinstance(model, AmortizedModel) else (None, None)


def is_pair(family: nn.Module | None, prior: nn.Module | None) -> bool:
    """Whether (`family`, `prior`) is CP-VAE's pair (`check_pair` passes)."""
    try:
        check_pair(family, prior)
    except ConfigError:
        return False
    return True


def is_cpvae(model: nn.Module) -> bool:
    return is_pair(*_family_and_prior(model))


def reads_category(model: nn.Module) -> bool:
    """Whether the model's decoder reads c (p(x | z, c), e.g. a `CPVAE`): `vaelab.protocols.ReadsCategory`."""
    return isinstance(model, ReadsCategory)


def one_hot(categories: Tensor, k: int, like: Tensor) -> Tensor:
    """One-hot vectors `[*shape, K]` of `categories` `[*shape]` (int64), in `like`'s dtype and device."""
    return F.one_hot(categories.to(like.device), k).to(like.dtype)


def every_category(k: int, like: Tensor) -> Tensor:
    """The K one-hot vectors as `[K, 1, K]`: with stratified draws z `[T, K, B, D]`, stratum k gets c = e_k."""
    return torch.eye(k, dtype=like.dtype, device=like.device).unsqueeze(1)


class CPVAE(VAE):
    """p(x, z, c) = p(c) p(z | c) p(x | z, c) (eq. 3) with the decoder on [z, one-hot c] (`in_features` D + K).

    `decode(z, c)` and `log_likelihood(x, z, c)` take z `[*S, B, D]` and c `[*S, B, K]` (one-hot, or a
    Gumbel-Softmax relaxation on the simplex; leading dimensions broadcast); without c they raise `ConfigError`
    (`NEEDS_C`), so does `log_joint(x, z)`. `sample` and `reconstruct` draw c themselves.
    """

    def __init__(self, encoder, posterior, prior, decoder, likelihood) -> None:
        super().__init__(encoder, posterior, prior, decoder, likelihood)
        check_pair(posterior, prior, "model.options.decoder_input: z_and_c")
        self.categories = posterior.categories

    def decode(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        """Likelihood parameters `[*S, B, *param_shape]` of p(x | z, c) from d([z, c])."""
        if c is None:
            raise ConfigError(NEEDS_C)
        lead = torch.broadcast_shapes(z.shape[:-1], c.shape[:-1])
        zc = torch.cat([z.expand(*lead, z.shape[-1]), c.to(z.dtype).expand(*lead, c.shape[-1])], -1)
        return self.decoder(zc).reshape(*lead, *self.likelihood.param_shape)

    def log_likelihood(self, x: Tensor, z: Tensor, c: Tensor | None = None) -> Tensor:
        """log p(x | z, c) `[*S, B]`."""
        return self.likelihood.log_prob(x, self.decode(z, c))

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True) -> Tensor:
        """n draws `[n, *event]`: c ~ p(c) = 1/K, z ~ p(z | c), then E[x | z, c] (`mean`) or x ~ p(x | z, c)."""
        return generate(self, torch.randint(self.categories, (n,)), mean)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """E[x | z, c] at one draw (c, z) ~ q(c | x) q(z | x, c), `[B, *event]`."""
        q = self.posterior(x)
        c = one_hot(torch.distributions.Categorical(logits=q.log_weights).sample(), self.categories, x)
        return self.likelihood.mean(self.decode(q.given(c).sample(), c))


def decode_given(model: nn.Module, z: Tensor, c: Tensor) -> Tensor:
    """Likelihood parameters of p(x | z, c) for z `[*S, B, D]`, c `[*S, B, K]`; a decoder on z alone ignores c."""
    return model.decode(z, c) if reads_category(model) else model.decode(z)


def log_likelihood_given(model: nn.Module, x: Tensor, z: Tensor, c: Tensor) -> Tensor:
    """log p(x | z, c) `[*S, B]` (eq. 3's conditional) for z `[*S, B, D]`, c `[*S, B, K]`; p(x | z) for a decoder
    on z alone."""
    return model.log_likelihood(x, z, c) if reads_category(model) else model.log_likelihood(x, z)


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
    """x `[n, *event]` for given categories `[n]`: z ~ p(z | c) (eq. 5), then E[x | z, c] (`mean`) or x ~ p(x | z, c)
    (p(x | z) for a decoder on z alone)."""
    family, prior = conditional_pair(model, "generation given a category")
    categories = categories.to(prior.loc.device)
    z = prior.sample_components(categories)
    params = decode_given(model, z, one_hot(categories, family.categories, z))
    return model.likelihood.mean(params) if mean else model.likelihood.sample(params)
