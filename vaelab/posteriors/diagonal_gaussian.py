"""Fully factorised Gaussian q(z | x) = N(mu(x), diag sigma^2(x)) (Kingma & Welling 2014)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from vaelab.distributions import DiagonalNormal
from vaelab.posteriors.base import PosteriorFamily, moments


def half_log_var(log_var: Tensor, min_log_var: float | None = None, max_log_var: float | None = None) -> Tensor:
    """log sigma = log_var / 2, log_var first clamped to `[min_log_var, max_log_var]` when either is set
    (VampPrior's code uses a hardtanh to [-6, 2])."""
    if min_log_var is not None or max_log_var is not None:
        log_var = log_var.clamp(min_log_var, max_log_var)
    return 0.5 * log_var


def normal_from_log_scale(loc: Tensor, log_scale: Tensor) -> DiagonalNormal:
    """N(loc, diag exp(2 log_scale)) for `loc`, `log_scale` `[..., D]`."""
    return DiagonalNormal(loc, torch.exp(log_scale), log_scale)


def diagonal_normal(
    mu: Tensor, log_var: Tensor, min_log_var: float | None = None, max_log_var: float | None = None
) -> DiagonalNormal:
    """N(mu, diag exp(log_var)) for `mu`, `log_var` `[..., D]`, log_var clamped as in `half_log_var`."""
    return normal_from_log_scale(mu, half_log_var(log_var, min_log_var, max_log_var))


class DiagonalGaussian(PosteriorFamily):
    """q = N(loc, diag exp(2 log_scale)); parameters `loc`, `log_scale` `[D]` per data point. The encoder head is
    linear, for mu and log sigma^2 (log sigma = log sigma^2 / 2, log sigma^2 optionally clamped to
    `[min_log_var, max_log_var]`: VampPrior's code uses a hardtanh to [-6, 2]). `in_features=None`: no head.
    Registry name `diagonal_gaussian`.

    >>> import torch, vaelab
    >>> from torch import nn
    >>> q = vaelab.DiagonalGaussian(in_features=8, latent_dim=2)(torch.zeros(3, 8))  # features h [3, 8]
    >>> q.rsample((5,)).shape, q.log_prob(q.rsample()).shape
    (torch.Size([5, 3, 2]), torch.Size([3]))
    >>> local = vaelab.DiagonalGaussian(None, 2).per_point(4)  # free q_i for 4 points, started at N(0, I)
    >>> local().batch_shape, local().stddev[0].tolist()
    (torch.Size([4]), [1.0, 1.0])
    >>> model = vaelab.VAE(nn.Flatten(), "diagonal_gaussian", "standard_normal", nn.Linear(2, 16), "bernoulli",
    ...                    latent_dim=2, event_shape=(1, 4, 4))
    >>> type(model.posterior_family).__name__, model.posterior_family.head
    ('DiagonalGaussian', Linear(in_features=16, out_features=4, bias=True))
    """

    def __init__(
        self,
        in_features: int | None,
        latent_dim: int,
        min_log_var: float | None = None,
        max_log_var: float | None = None,
    ) -> None:
        super().__init__(in_features, latent_dim)
        self.head = nn.Linear(in_features, 2 * latent_dim) if in_features is not None else None
        self.min_log_var, self.max_log_var = min_log_var, max_log_var

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"loc": (self.latent_dim,), "log_scale": (self.latent_dim,)}

    def head_params(self, h: Tensor) -> dict[str, Tensor]:
        mu, log_var = self.head(h).chunk(2, dim=-1)
        return {"loc": mu, "log_scale": half_log_var(log_var, self.min_log_var, self.max_log_var)}

    def distribution(self, params: Mapping[str, Tensor]) -> DiagonalNormal:
        return normal_from_log_scale(params["loc"], params["log_scale"])

    def initial_params(self, n: int, init: Distribution | None = None, like: Tensor | None = None) -> dict[str, Tensor]:
        """At N(0, I), at `init` itself when it is a diagonal Gaussian, else at `init`'s mean and variances."""
        if init is None:
            return super().initial_params(n, None, like)
        if isinstance(init, DiagonalNormal):
            return {"loc": init.loc.detach(), "log_scale": init.log_scale.detach()}
        mean, cov = moments(init)
        return {"loc": mean, "log_scale": 0.5 * torch.diagonal(cov, dim1=-2, dim2=-1).log()}
