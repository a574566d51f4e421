"""Log-density of a mixture of diagonal Gaussians, evaluated with matmuls (no [N, K, D] intermediate).

    log p(z) = logsumexp_k [ log pi_k + log N(z; mu_k, diag sigma_k^2) ],
    sum_d (z_d - mu_kd)^2 / sigma_kd^2 = (z^2) . (1/sigma_k^2) - 2 z . (mu_k/sigma_k^2) + sum_d mu_kd^2/sigma_kd^2,

so N points against K components cost two [N, D] x [D, K] matmuls: VampPrior's K = 500 components
over thousands of importance samples fit in memory and run at matmul speed.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_LOG_2PI = math.log(2 * math.pi)


def diagonal_gaussian_components_log_prob(z: Tensor, loc: Tensor, log_var: Tensor) -> Tensor:
    """log N(z; loc_k, diag exp(log_var_k)) for every component: `z` `[*S, D]`, `loc`, `log_var` `[K, D]`
    -> `[*S, K]`."""
    precision = torch.exp(-log_var)  # [K, D]
    lead = z.shape[:-1]
    z2 = z.reshape(-1, z.shape[-1])
    quad = (z2 * z2) @ precision.T - 2 * z2 @ (loc * precision).T + (loc * loc * precision).sum(-1)
    norm = -0.5 * (log_var.sum(-1) + loc.shape[-1] * _LOG_2PI)  # [K]
    return (norm - 0.5 * quad).reshape(*lead, loc.shape[0])


def diagonal_gaussian_mixture_log_prob(
    z: Tensor, loc: Tensor, log_var: Tensor, log_weights: Tensor | None = None
) -> Tensor:
    """log sum_k pi_k N(z; loc_k, diag exp(log_var_k)), `[*S, D]` -> `[*S]`; uniform weights when
    `log_weights` (normalised, `[K]`) is None."""
    comp = diagonal_gaussian_components_log_prob(z, loc, log_var)
    if log_weights is None:
        return torch.logsumexp(comp, -1) - math.log(loc.shape[0])
    return torch.logsumexp(comp + log_weights, -1)
