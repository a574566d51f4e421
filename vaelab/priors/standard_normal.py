"""Standard normal prior p(z) = N(0, I)."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Independent, Normal

from vaelab.priors.base import Prior

_LOG_2PI = math.log(2 * math.pi)


class StandardNormal(Prior):
    """p(z) = N(0, I) over `[D]`: log p(z) = -(|z|^2 + D log 2 pi) / 2; KL(q || p) in closed form for Gaussian q.
    Registry name `standard_normal`.

    >>> import torch, vaelab
    >>> p = vaelab.StandardNormal(2)
    >>> p.sample(4).shape, p.log_prob(torch.zeros(3, 2))  # -log 2 pi at z = 0
    (torch.Size([4, 2]), tensor([-1.8379, -1.8379, -1.8379]))
    >>> p.kl(vaelab.DiagonalGaussian(None, 2).per_point(3)())  # q_i = N(0, I): KL = 0
    tensor([0., 0., 0.], grad_fn=<...>)
    """

    def __init__(self, latent_dim: int) -> None:
        super().__init__(latent_dim)
        self.register_buffer("_zero", torch.zeros(latent_dim), persistent=False)

    def distribution(self) -> Independent:
        return Independent(Normal(self._zero, torch.ones_like(self._zero), validate_args=False), 1)

    def log_prob(self, z: Tensor) -> Tensor:
        return -0.5 * (z.pow(2).sum(-1) + self.latent_dim * _LOG_2PI)

    def sample(self, n: int) -> Tensor:
        return torch.randn(n, self.latent_dim, device=self._zero.device, dtype=self._zero.dtype)
