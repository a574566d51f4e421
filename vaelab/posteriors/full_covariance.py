"""Full-covariance Gaussian q(z | x) = N(mu(x), L(x) L(x)^T) with a Cholesky factor L predicted by the
encoder (Kingma & Welling 2019, sec. 2.6.1; Cremer et al. 2018, Table 10; SIWAE mixture components)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import MultivariateNormal

from vaelab.posteriors.base import PosteriorFamily

_SOFTPLUS_INV_1 = math.log(math.e - 1)  # softplus(_SOFTPLUS_INV_1) = 1


def cholesky_factor(raw: Tensor, dim: int, min_scale: float = 1e-4) -> Tensor:
    """Lower-triangular L `[..., D, D]` from `raw` `[..., D(D+1)/2]` unconstrained entries (row-major lower
    triangle): the strictly lower part as given, the diagonal softplus(r + softplus^-1(1)) + `min_scale` > 0,
    so L L^T is positive definite and raw = 0 gives L ~ I."""
    rows, cols = torch.tril_indices(dim, dim, device=raw.device)
    L = raw.new_zeros(*raw.shape[:-1], dim, dim)
    L[..., rows, cols] = raw
    diag = F.softplus(torch.diagonal(L, dim1=-2, dim2=-1) + _SOFTPLUS_INV_1) + min_scale
    return L.tril(-1) + torch.diag_embed(diag)


def tril_size(dim: int) -> int:
    return dim * (dim + 1) // 2


class FullCovarianceGaussian(PosteriorFamily):
    """Linear heads for mu `[B, D]` and the D(D+1)/2 entries of L (see `cholesky_factor`)."""

    def __init__(self, in_features: int, latent_dim: int, min_scale: float = 1e-4) -> None:
        super().__init__(in_features, latent_dim)
        self.min_scale = min_scale
        self.head = nn.Linear(in_features, latent_dim + tril_size(latent_dim))

    def forward(self, h: Tensor) -> MultivariateNormal:
        out = self.head(h)
        loc, raw = out[..., : self.latent_dim], out[..., self.latent_dim :]
        scale_tril = cholesky_factor(raw, self.latent_dim, self.min_scale)
        return MultivariateNormal(loc, scale_tril=scale_tril, validate_args=False)
