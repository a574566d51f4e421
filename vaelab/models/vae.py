"""The VAE as a composition: encoder -> posterior family -> prior -> decoder -> likelihood.

Every estimator in vaelab works through three methods: `posterior(x)` (q(z|x)), `log_joint(x, z)`
(log p(x, z), differentiable in z and parameters) and `sample(n)`. Shapes: `x` `[B, *event]`, latent
samples `[*S, B, D]`, log-densities `[*S, B]`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from vaelab.likelihoods import Likelihood
from vaelab.posteriors import PosteriorFamily
from vaelab.priors import Prior


class VAE(nn.Module):
    """p(x, z) = p(z) p(x | z) with amortised q(z | x).

    Args:
        encoder: network `[B, prod(event)] -> [B, F]` (its body; the head belongs to `posterior`).
        posterior: family mapping `[B, F]` features to q(z | x).
        prior: p(z).
        decoder: network `[..., D] -> [..., likelihood.num_outputs]`.
        likelihood: p(x | z) given the decoder's outputs.
    """

    def __init__(
        self, encoder: nn.Module, posterior: PosteriorFamily, prior: Prior, decoder: nn.Module, likelihood: Likelihood
    ) -> None:
        super().__init__()
        self.encoder, self.posterior_family, self.prior = encoder, posterior, prior
        self.decoder, self.likelihood = decoder, likelihood
        self.event_shape = likelihood.event_shape
        self.latent_dim = prior.latent_dim

    # --- inference -------------------------------------------------------------------------------------
    def posterior(self, x: Tensor) -> Distribution:
        """q(z | x) for `x` `[B, *event]`: batch shape `[B]`, event shape `[D]`."""
        return self.posterior_family(self.encoder(x.flatten(1)))

    # --- generative model --------------------------------------------------------------------------------
    def decode(self, z: Tensor) -> Tensor:
        """Likelihood parameters `[*S, B, *param_shape]` for latents `[*S, B, D]`."""
        out = self.decoder(z)
        return out.reshape(*z.shape[:-1], *self.likelihood.param_shape)

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x | z) `[*S, B]`."""
        return self.likelihood.log_prob(x, self.decode(z))

    def log_joint(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x, z) = log p(x | z) + log p(z), `[*S, B]`."""
        return self.log_likelihood(x, z) + self.prior.log_prob(z)

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True) -> Tensor:
        """n draws `[n, *event]` from the model: z ~ p(z), then E[x|z] (mean=True) or x ~ p(x|z)."""
        params = self.decode(self.prior.sample(n))
        return self.likelihood.mean(params) if mean else self.likelihood.sample(params)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """E[x | z] at one sample z ~ q(z | x), `[B, *event]`."""
        return self.likelihood.mean(self.decode(self.posterior(x).sample()))

    @property
    def data_dim(self) -> int:
        return math.prod(self.event_shape)
