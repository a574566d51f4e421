"""Diagonal Gaussian N(loc, diag scale^2) over the last dimension, with closed-form KL divergences."""

from __future__ import annotations

import math

import torch
from torch import Size, Tensor
from torch.distributions import Distribution, Independent, Normal, constraints, register_kl

_LOG_2PI = math.log(2 * math.pi)


class DiagonalNormal(Independent):
    """N(loc, diag(scale^2)) over the last dimension: `Independent(Normal(loc, scale), 1)` with the methods
    the estimators call on every step written out directly (no per-call `Normal` bookkeeping).

    Behaves as that `Independent` (it is one: `base_dist` builds the `Normal` on demand): batch shape
    `loc.shape[:-1]`, event shape `[D]`; `rsample` draws the same noise as `Normal.rsample`. `log_scale`,
    when given, is log(scale) known exactly (e.g. half a predicted log-variance) and is used instead of
    `scale.log()`. Closed-form KL divergences to another `DiagonalNormal` or to `Independent(Normal, 1)`
    are registered with `torch.distributions.kl_divergence`.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.independent(constraints.real, 1)
    has_rsample = True

    def __init__(self, loc: Tensor, scale: Tensor, log_scale: Tensor | None = None) -> None:
        if loc.dim() < 1 or loc.shape != scale.shape:
            raise ValueError(f"loc and scale must have the same shape [..., D], got {loc.shape} and {scale.shape}")
        self.loc, self.scale, self._log_scale = loc, scale, log_scale
        self.reinterpreted_batch_ndims = 1
        Distribution.__init__(self, loc.shape[:-1], loc.shape[-1:], validate_args=False)

    @property
    def base_dist(self) -> Normal:
        return Normal(self.loc, self.scale, validate_args=False)

    @property
    def log_scale(self) -> Tensor:
        return self.scale.log() if self._log_scale is None else self._log_scale

    @property
    def mean(self) -> Tensor:
        return self.loc

    @property
    def mode(self) -> Tensor:
        return self.loc

    @property
    def stddev(self) -> Tensor:
        return self.scale

    @property
    def variance(self) -> Tensor:
        return self.scale.square()

    def expand(self, batch_shape, _instance=None) -> DiagonalNormal:
        shape = Size(batch_shape) + self.event_shape
        log_scale = None if self._log_scale is None else self._log_scale.expand(shape)
        return DiagonalNormal(self.loc.expand(shape), self.scale.expand(shape), log_scale)

    def rsample(self, sample_shape=Size()) -> Tensor:
        shape = self._extended_shape(sample_shape)
        eps = torch.empty(shape, dtype=self.loc.dtype, device=self.loc.device).normal_()  # as Normal.rsample
        return self.loc + eps * self.scale

    def sample(self, sample_shape=Size()) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        """log q(value) `[*S, *batch]` for `value` `[*S, *batch, D]`."""
        d = self.loc.shape[-1]
        return -0.5 * ((value - self.loc) / self.scale).square().sum(-1) - (self.log_scale.sum(-1) + 0.5 * d * _LOG_2PI)

    def entropy(self) -> Tensor:
        return self.log_scale.sum(-1) + 0.5 * self.loc.shape[-1] * (1 + _LOG_2PI)

    def __repr__(self) -> str:
        return f"DiagonalNormal(batch_shape={tuple(self.batch_shape)}, event_shape={tuple(self.event_shape)})"


def _kl_diagonal(q_loc: Tensor, q_scale: Tensor, q_log_scale: Tensor, p_loc, p_scale, p_log_scale) -> Tensor:
    """sum_d KL(N(q_loc, q_scale^2) || N(p_loc, p_scale^2)) over the last dimension."""
    var_ratio = (q_scale / p_scale).square()
    t = ((q_loc - p_loc) / p_scale).square()
    return (0.5 * (var_ratio + t - 1) + (p_log_scale - q_log_scale)).sum(-1)


@register_kl(DiagonalNormal, DiagonalNormal)
def _kl_diagonal_diagonal(q: DiagonalNormal, p: DiagonalNormal) -> Tensor:
    return _kl_diagonal(q.loc, q.scale, q.log_scale, p.loc, p.scale, p.log_scale)


@register_kl(DiagonalNormal, Independent)
def _kl_diagonal_independent(q: DiagonalNormal, p: Independent) -> Tensor:
    base = p.base_dist
    if type(base) is Normal and p.reinterpreted_batch_ndims == 1:
        return _kl_diagonal(q.loc, q.scale, q.log_scale, base.loc, base.scale, base.scale.log())
    return torch.distributions.kl_divergence(Independent(q.base_dist, 1), p)
