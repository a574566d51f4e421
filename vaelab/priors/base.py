"""The prior interface."""

from __future__ import annotations

from torch import Tensor, nn
from torch.distributions import Distribution, kl_divergence


class Prior(nn.Module):
    """p(z) over `[D]`: `log_prob(z [*S, D]) -> [*S]`, `sample(n) -> [n, D]`, optional analytic `kl(q)`.

    Subclasses whose prior is a `torch.distributions` object implement `distribution()`; `kl` then uses
    `torch.distributions.kl_divergence` when a closed form is registered, and returns None otherwise (the
    objectives fall back to a Monte Carlo estimate).

    >>> import torch, vaelab
    >>> from torch.distributions import Independent, Laplace
    >>> class LaplacePrior(vaelab.Prior):  # p(z) = prod_d Laplace(z_d; 0, 1)
    ...     def distribution(self):
    ...         return Independent(Laplace(torch.zeros(self.latent_dim), torch.ones(self.latent_dim)), 1)
    >>> p = LaplacePrior(2)
    >>> p.sample(4).shape, p.log_prob(torch.zeros(5, 3, 2)).shape  # z [*S, D] -> [*S]
    (torch.Size([4, 2]), torch.Size([5, 3]))
    """

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim

    def distribution(self) -> Distribution | None:
        return None

    def log_prob(self, z: Tensor) -> Tensor:
        return self.distribution().log_prob(z)

    def sample(self, n: int) -> Tensor:
        return self.distribution().sample((n,))

    def kl(self, q: Distribution) -> Tensor | None:
        """KL(q || p) `[B]` in closed form, or None when there is none."""
        p = self.distribution()
        if p is None:
            return None
        try:
            return kl_divergence(q, p)
        except NotImplementedError:
            return None
