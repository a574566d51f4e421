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

    Two ways to build one:

    * From your own networks, with `event_shape` (the data's shape per example): `encoder` maps x `[B, *event]`
      in its own shape (images included) to features `[B, F]`; `posterior` is a family name
      ("diagonal_gaussian", or a dict {"type": ..., options}), a family object, or any module mapping `[B, F]`
      to a torch Distribution with batch `[B]`, event `[D]` (`rsample`, `log_prob`; e.g. a zuko flow with
      `context=F`); `prior` a name, a `Prior`, a torch Distribution over `[D]` or a module returning one;
      `decoder` maps z `[N, D]` to likelihood parameters `[N, *param_shape]` or flat `[N, prod(param_shape)]`;
      `likelihood` a name ("bernoulli", "gaussian", ...) or an object. F and D are found by dry runs on zeros
      (`vaelab.config.parts`), so only `latent_dim` may be needed (a posterior or prior given by name).
    * From built vaelab parts, without `event_shape` (the form `vaelab.config.build` and the config files use): the
      encoder reads x flattened to `[B, prod(event)]` and the decoder any `[..., D]`; nothing is checked.

    `flatten` overrides whether the encoder reads x flattened.

    >>> import torch, vaelab
    >>> from torch import nn
    >>> enc = nn.Sequential(nn.Conv2d(1, 8, 4, 2, 1), nn.ReLU(), nn.Flatten())  # [B, 1, 28, 28] -> [B, 1568]
    >>> dec = nn.Sequential(nn.Linear(4, 784), nn.Unflatten(1, (1, 28, 28)))  # [N, 4] -> [N, 1, 28, 28]
    >>> model = vaelab.VAE(encoder=enc, posterior="diagonal_gaussian", prior="standard_normal", decoder=dec,
    ...                    likelihood="bernoulli", latent_dim=4, event_shape=(1, 28, 28))
    >>> x = torch.zeros(3, 1, 28, 28)
    >>> z = model.posterior(x).rsample((5,))  # [5, 3, 4]
    >>> model.log_joint(x, z).shape
    torch.Size([5, 3])
    """

    def __init__(
        self,
        encoder: nn.Module,
        posterior: PosteriorFamily | nn.Module | str | dict,
        prior: Prior | Distribution | nn.Module | str | dict,
        decoder: nn.Module,
        likelihood: Likelihood | str | dict,
        latent_dim: int | None = None,
        event_shape: tuple[int, ...] | None = None,
        flatten: bool | None = None,
    ) -> None:
        super().__init__()
        self.flatten = event_shape is None if flatten is None else flatten
        self._2d_decoder = event_shape is not None  # own decoders see z [N, D]; vaelab's take any [..., D]
        if event_shape is not None:
            from vaelab.config.parts import resolve_parts

            parts = resolve_parts(encoder, posterior, prior, decoder, likelihood, latent_dim, event_shape, self.flatten)
            encoder, posterior, prior, decoder, likelihood = parts
        elif any(isinstance(part, (str, dict)) for part in (posterior, prior, likelihood)):
            raise TypeError(
                "VAE(...) from names or your own modules needs event_shape (the data's shape per example, e.g. "
                "event_shape=(1, 28, 28)); without it the parts must be built vaelab objects"
            )
        self.encoder, self.posterior_family, self.prior = encoder, posterior, prior
        self.decoder, self.likelihood = decoder, likelihood
        self.event_shape = likelihood.event_shape
        self.latent_dim = prior.latent_dim

    # --- inference -------------------------------------------------------------------------------------
    def posterior(self, x: Tensor) -> Distribution:
        """q(z | x) for `x` `[B, *event]`: batch shape `[B]`, event shape `[D]`."""
        return self.posterior_family(self.encoder(x.flatten(1) if self.flatten else x))

    # --- generative model --------------------------------------------------------------------------------
    def decode(self, z: Tensor) -> Tensor:
        """Likelihood parameters `[*S, B, *param_shape]` for latents `[*S, B, D]`."""
        out = self.decoder(z.reshape(-1, z.shape[-1])) if self._2d_decoder else self.decoder(z)
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
