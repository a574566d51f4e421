"""Fully factorised Gaussian q(z | x) = N(mu(x), diag sigma^2(x)) (Kingma & Welling 2014)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vaelab.distributions import DiagonalNormal
from vaelab.posteriors.base import PosteriorFamily


def diagonal_normal(
    mu: Tensor, log_var: Tensor, min_log_var: float | None = None, max_log_var: float | None = None
) -> DiagonalNormal:
    """N(mu, diag exp(log_var)) for `mu`, `log_var` `[..., D]`, log_var first clamped to `[min_log_var,
    max_log_var]` when either is set (VampPrior's code uses a hardtanh to [-6, 2])."""
    if min_log_var is not None or max_log_var is not None:
        log_var = log_var.clamp(min_log_var, max_log_var)
    log_scale = 0.5 * log_var
    return DiagonalNormal(mu, torch.exp(log_scale), log_scale)


class DiagonalGaussian(PosteriorFamily):
    """Linear heads for mu and log sigma^2; log sigma^2 optionally clamped to `[min_log_var, max_log_var]`
    (VampPrior's code uses a hardtanh to [-6, 2])."""

    def __init__(
        self, in_features: int, latent_dim: int, min_log_var: float | None = None, max_log_var: float | None = None
    ) -> None:
        super().__init__(in_features, latent_dim)
        self.head = nn.Linear(in_features, 2 * latent_dim)
        self.min_log_var, self.max_log_var = min_log_var, max_log_var

    def forward(self, h: Tensor) -> DiagonalNormal:
        mu, log_var = self.head(h).chunk(2, dim=-1)
        return diagonal_normal(mu, log_var, self.min_log_var, self.max_log_var)
