"""Full-covariance Gaussian q(z | x) = N(mu(x), L(x) L(x)^T) with a Cholesky factor L predicted by the
encoder (Kingma & Welling 2019, sec. 2.6.1; Cremer et al. 2018, Table 10 and appendix 6.7; SIWAE mixture
components)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, MultivariateNormal

from vaelab.posteriors.base import PosteriorFamily, moments

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


def cholesky_raw(L: Tensor, min_scale: float = 1e-4) -> Tensor:
    """The inverse of `cholesky_factor`: raw entries `[..., D(D+1)/2]` with `cholesky_factor(raw) = L`."""
    D = L.shape[-1]
    diag = (torch.diagonal(L, dim1=-2, dim2=-1) - min_scale).clamp(min=1e-6)
    inv_softplus = diag + torch.log(-torch.expm1(-diag))  # softplus^-1
    M = L.tril(-1) + torch.diag_embed(inv_softplus - _SOFTPLUS_INV_1)
    rows, cols = torch.tril_indices(D, D, device=L.device)
    return M[..., rows, cols]


def tril_size(dim: int) -> int:
    return dim * (dim + 1) // 2


class FullCovarianceGaussian(PosteriorFamily):
    """q = N(loc, L L^T), L = `cholesky_factor(raw)`; parameters `loc` `[D]` and `raw` `[D(D+1)/2]` per data
    point, from a linear encoder head (`in_features=None`: no head). Registry name `full_covariance_gaussian`.

    >>> import torch, vaelab
    >>> family = vaelab.FullCovarianceGaussian(in_features=8, latent_dim=3)
    >>> q = family(torch.zeros(2, 8))  # features h [2, 8]
    >>> family.param_shapes(), q.covariance_matrix.shape, q.rsample((5,)).shape
    ({'loc': (3,), 'raw': (6,)}, torch.Size([2, 3, 3]), torch.Size([5, 2, 3]))
    """

    def __init__(self, in_features: int | None, latent_dim: int, min_scale: float = 1e-4) -> None:
        super().__init__(in_features, latent_dim)
        self.min_scale = min_scale
        size = latent_dim + tril_size(latent_dim)
        self.head = nn.Linear(in_features, size) if in_features is not None else None

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"loc": (self.latent_dim,), "raw": (tril_size(self.latent_dim),)}

    def head_params(self, h: Tensor) -> dict[str, Tensor]:
        out = self.head(h)
        return {"loc": out[..., : self.latent_dim], "raw": out[..., self.latent_dim :]}

    def distribution(self, params: Mapping[str, Tensor]) -> MultivariateNormal:
        scale_tril = cholesky_factor(params["raw"], self.latent_dim, self.min_scale)
        return MultivariateNormal(params["loc"], scale_tril=scale_tril, validate_args=False)

    def initial_params(self, n: int, init: Distribution | None = None, like: Tensor | None = None) -> dict[str, Tensor]:
        """At N(0, I), else at `init`'s mean and covariance (Cholesky factor of cov + 1e-8 I)."""
        if init is None:
            return super().initial_params(n, None, like)
        mean, cov = moments(init)
        eye = torch.eye(self.latent_dim, dtype=cov.dtype, device=cov.device)
        return {"loc": mean, "raw": cholesky_raw(torch.linalg.cholesky(cov + 1e-8 * eye), self.min_scale)}
