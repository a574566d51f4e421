"""Mixture-of-Gaussians prior p(z) = sum_k pi_k N(z; mu_k, diag sigma_k^2) with learned components
(VampPrior paper, Table 2 "MoG"; SIWAE's VIB classifiers use a trainable MoG prior)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vaelab.distributions.gaussian_mixture import diagonal_gaussian_mixture_log_prob
from vaelab.errors import ConfigError
from vaelab.priors.base import Prior


class MixtureOfGaussians(Prior):
    """K learned diagonal components; weights uniform or learned (softmax of free logits).

    Means start at N(0, init_scale^2) draws (seeded by the global RNG, like every parameter) so the
    components are distinct; log-variances start at 0. Registry name `mixture_of_gaussians`.

    >>> import torch, vaelab
    >>> p = vaelab.MixtureOfGaussians(2, components=5, learn_weights=True)
    >>> p.loc.shape, p.sample(4).shape, p.log_prob(torch.zeros(3, 2)).shape, p.log_weights.exp()
    (torch.Size([5, 2]), torch.Size([4, 2]), torch.Size([3]), tensor([0.2000, 0.2000, 0.2000, 0.2000, 0.2000], ...))
    >>> from torch import nn
    >>> model = vaelab.VAE(nn.Flatten(), "diagonal_gaussian", {"type": "mixture_of_gaussians", "components": 5},
    ...                    nn.Linear(2, 16), "bernoulli", latent_dim=2, event_shape=(1, 4, 4))
    >>> model.prior.loc.shape
    torch.Size([5, 2])
    """

    def __init__(self, latent_dim: int, components: int = 10, learn_weights: bool = False, init_scale: float = 1.0):
        super().__init__(latent_dim)
        if components < 1:
            raise ConfigError(f"a mixture-of-Gaussians prior needs components >= 1, got {components}")
        self.loc = nn.Parameter(init_scale * torch.randn(components, latent_dim))
        self.log_var = nn.Parameter(torch.zeros(components, latent_dim))
        self.logits = nn.Parameter(torch.zeros(components)) if learn_weights else None

    @property
    def log_weights(self) -> Tensor | None:
        return None if self.logits is None else torch.log_softmax(self.logits, 0)

    def log_prob(self, z: Tensor) -> Tensor:
        return diagonal_gaussian_mixture_log_prob(z, self.loc, self.log_var, self.log_weights)

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        k = self.loc.shape[0]
        probs = torch.ones(k, device=self.loc.device) if self.logits is None else torch.softmax(self.logits, 0)
        return self.sample_components(torch.multinomial(probs, n, replacement=True))

    @torch.no_grad()
    def sample_components(self, idx: Tensor) -> Tensor:
        """z ~ N(mu_k, diag sigma_k^2) for component indices `idx` `[n]` -> `[n, D]` (CP-VAE: p(z | c = k), eq. 5)."""
        eps = torch.randn(idx.shape[0], self.latent_dim, device=self.loc.device, dtype=self.loc.dtype)
        return self.loc[idx] + torch.exp(0.5 * self.log_var[idx]) * eps
