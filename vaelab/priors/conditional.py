"""CP-VAE's conditional prior p(z, c) = p(c) p(z | c) with p(c) = 1/K and learned p(z | c = k) = N(mu_k, diag
sigma_k^2) (Lavda et al., eqs. 4-5). Summing c out leaves p(z) = (1/K) sum_k N(z; mu_k, diag sigma_k^2): exactly the
mixture-of-Gaussians prior with uniform weights, which is what this builder returns (no second class).
`MixtureOfGaussians.sample_components(k)` draws from p(z | c = k).

The means start at N(0, init_scale^2) draws with init_scale = 0.1 (not the MoG prior's 1.0): with 40 latents,
N(0, 1) means put the K conditionals tens of nats apart, the closed-form B2 = sum_k q(k|x) KL_k then pushes every x to
the same nearest category before the encoder adapts, and q(c|x) saturates there (measured on MNIST and on the 1-D toy:
q(c) perplexity 1.0 of K, KL(c) = log K); with 0.1 the categories stay in use.
"""

from __future__ import annotations

from vaelab.errors import ConfigError
from vaelab.priors.mixture_of_gaussians import MixtureOfGaussians
from vaelab.registry import PRIORS


@PRIORS.register("conditional")
def _conditional(
    latent_dim: int, posterior=None, categories: int | None = None, init_scale: float = 0.1
) -> MixtureOfGaussians:
    """K = `categories`, or by default the categorical_gaussian posterior's number of categories."""
    family = getattr(posterior, "family", None)
    k = categories if categories is not None else getattr(family, "categories", None)
    if k is None:
        raise ConfigError(
            "prior conditional needs categories: K, or a posterior {type: categorical_gaussian} to take K from"
        )
    return MixtureOfGaussians(latent_dim, k, learn_weights=False, init_scale=init_scale)
