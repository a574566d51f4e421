"""Per-data-point variational families for the optimal q*(z | x) of Cremer et al. (2018, sec. 3.1, appendix
6.4): no encoder, one set of variational parameters per data point, stored as `[N, ...]` tensors (every
parameter's first dimension is the data point), so one optimiser fits N points at once.

- `ffg`: q = N(mu, diag sigma^2), parameters mu, log sigma `[N, D]`.
- `full_covariance`: q = N(mu, L L^T), parameters mu `[N, D]` and the raw Cholesky entries `[N, D(D+1)/2]`
  (`vaelab.posteriors.cholesky_factor`; Cremer et al. appendix 6.7).
- `flow`: the auxiliary flow (sec. 3.2) with q_0 = N(mu, diag sigma^2) and its own networks per data point
  (`AuxiliaryFlow` with N groups): "the same process is used to optimize all of its parameters" (6.4).

Each starts at the prior N(0, I) (6.4; the flow as the identity) or from the encoder's q(z | x)
(Krishnan et al. 2017): the same family copies it; another family matches its mean and covariance.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, MultivariateNormal

from vaelab.distributions import DiagonalNormal
from vaelab.distributions.auxiliary_flow import AuxiliaryFlow, AuxiliaryFlowDistribution
from vaelab.errors import ConfigError
from vaelab.posteriors.full_covariance import cholesky_factor, tril_size

_SOFTPLUS_INV_1 = math.log(math.e - 1)


class LocalFamily(nn.Module):
    """N data points' variational parameters (leading dimension N); `forward()` -> q, batch `[N]`, event `[D]`."""

    def __init__(self, n: int, latent_dim: int) -> None:
        super().__init__()
        self.n, self.latent_dim = n, latent_dim

    def forward(self) -> Distribution:
        raise NotImplementedError


class LocalDiagonalGaussian(LocalFamily):
    """q_i = N(loc_i, diag exp(2 log_scale_i)), `loc`, `log_scale` `[N, D]`."""

    def __init__(self, loc: Tensor, log_scale: Tensor) -> None:
        super().__init__(*loc.shape)
        self.loc, self.log_scale = nn.Parameter(loc.clone()), nn.Parameter(log_scale.clone())

    def forward(self) -> DiagonalNormal:
        return DiagonalNormal(self.loc, torch.exp(self.log_scale), self.log_scale)


def cholesky_raw(L: Tensor, min_scale: float = 1e-4) -> Tensor:
    """The inverse of `cholesky_factor`: raw entries `[..., D(D+1)/2]` with `cholesky_factor(raw) = L`."""
    D = L.shape[-1]
    diag = (torch.diagonal(L, dim1=-2, dim2=-1) - min_scale).clamp(min=1e-6)
    inv_softplus = diag + torch.log(-torch.expm1(-diag))  # softplus^-1
    M = L.tril(-1) + torch.diag_embed(inv_softplus - _SOFTPLUS_INV_1)
    rows, cols = torch.tril_indices(D, D, device=L.device)
    return M[..., rows, cols]


class LocalFullCovariance(LocalFamily):
    """q_i = N(loc_i, L_i L_i^T), L_i = `cholesky_factor(raw_i)`; `loc` `[N, D]`, `raw` `[N, D(D+1)/2]`."""

    def __init__(self, loc: Tensor, raw: Tensor, min_scale: float = 1e-4) -> None:
        super().__init__(*loc.shape)
        self.min_scale = min_scale
        self.loc, self.raw = nn.Parameter(loc.clone()), nn.Parameter(raw.clone())

    def forward(self) -> MultivariateNormal:
        L = cholesky_factor(self.raw, self.latent_dim, self.min_scale)
        return MultivariateNormal(self.loc, scale_tril=L, validate_args=False)


class LocalAuxiliaryFlow(LocalFamily):
    """The auxiliary flow with per-data-point q_0 (`loc`, `log_scale` `[N, D]`) and networks (`flow`, N groups)."""

    def __init__(self, loc: Tensor, log_scale: Tensor, flow: AuxiliaryFlow) -> None:
        super().__init__(*loc.shape)
        if flow.groups != self.n:
            raise ValueError(f"a local flow for {self.n} points needs {self.n} network groups, got {flow.groups}")
        self.loc, self.log_scale = nn.Parameter(loc.clone()), nn.Parameter(log_scale.clone())
        self.flow = flow

    def forward(self) -> AuxiliaryFlowDistribution:
        return AuxiliaryFlowDistribution(DiagonalNormal(self.loc, torch.exp(self.log_scale), self.log_scale), self.flow)


@torch.no_grad()
def moments(q: Distribution, samples: int = 2000) -> tuple[Tensor, Tensor]:
    """Mean `[N, D]` and covariance `[N, D, D]` of q (closed form for Gaussians, else from `samples` draws)."""
    if isinstance(q, DiagonalNormal):
        return q.loc, torch.diag_embed(q.variance)
    if isinstance(q, MultivariateNormal):
        return q.loc, q.covariance_matrix
    z = q.sample((samples,))  # [S, N, D]
    mean = z.mean(0)
    c = z - mean
    return mean, torch.einsum("snd,sne->nde", c, c) / (samples - 1)


def _build_ffg(n: int, latent_dim: int, init: Distribution | None, ref: Tensor, **_) -> LocalDiagonalGaussian:
    if init is None:
        return LocalDiagonalGaussian(ref.new_zeros(n, latent_dim), ref.new_zeros(n, latent_dim))
    if isinstance(init, DiagonalNormal):
        return LocalDiagonalGaussian(init.loc.detach(), init.log_scale.detach())
    mean, cov = moments(init)
    return LocalDiagonalGaussian(mean, 0.5 * torch.diagonal(cov, dim1=-2, dim2=-1).log())


def _build_full(n: int, latent_dim: int, init: Distribution | None, ref: Tensor, **_) -> LocalFullCovariance:
    if init is None:
        return LocalFullCovariance(ref.new_zeros(n, latent_dim), ref.new_zeros(n, tril_size(latent_dim)))
    mean, cov = moments(init)
    eye = torch.eye(latent_dim, dtype=cov.dtype, device=cov.device)
    L = torch.linalg.cholesky(cov + 1e-8 * eye)
    return LocalFullCovariance(mean, cholesky_raw(L))


def _build_flow(
    n: int,
    latent_dim: int,
    init: Distribution | None,
    ref: Tensor,
    flow_options: dict | None = None,
    template: AuxiliaryFlow | None = None,
    **_,
) -> LocalAuxiliaryFlow:
    if isinstance(init, AuxiliaryFlowDistribution):  # copy the amortised flow: its q_0 and its networks
        flow = copy.deepcopy(init.flow).regroup(n)
        base = init.base
        return LocalAuxiliaryFlow(base.loc.detach(), base.log_scale.detach(), flow.requires_grad_(True))
    if template is not None:  # the trained flow's architecture, freshly initialised
        flow = copy.deepcopy(template).regroup(n).reset_parameters().requires_grad_(True)
    else:
        flow = AuxiliaryFlow(latent_dim, groups=n, **(flow_options or {})).to(ref)
    base = _build_ffg(n, latent_dim, init, ref)
    return LocalAuxiliaryFlow(base.loc.detach(), base.log_scale.detach(), flow)


LOCAL_FAMILIES = {"ffg": _build_ffg, "full_covariance": _build_full, "flow": _build_flow}


def local_family(
    name: str,
    n: int,
    latent_dim: int,
    init: Distribution | None = None,
    flow_options: dict | None = None,
    like: Tensor | None = None,
    template: AuxiliaryFlow | None = None,
) -> LocalFamily:
    """A local family `name` ("ffg", "full_covariance", "flow") for `n` data points, started at the prior
    (`init=None`) or from `init` (the encoder's q(z | x), batch `[n]`). A new flow copies the architecture
    of `template` (an amortised flow's networks) or else takes `AuxiliaryFlow` options `flow_options`;
    `like` is a tensor whose dtype and device the parameters take."""
    if name not in LOCAL_FAMILIES:
        raise ConfigError(f"unknown local family {name!r}; choose from: {', '.join(LOCAL_FAMILIES)}")
    ref = like if like is not None else torch.zeros(())
    return LOCAL_FAMILIES[name](n, latent_dim, init, ref, flow_options=flow_options, template=template).to(ref)
