"""Log-density of a mixture of diagonal Gaussians, evaluated with one matmul (no [N, K, D] intermediate).

    log pi_k + log N(z; mu_k, diag sigma_k^2) = [z^2, z] . [-1/(2 sigma_k^2), mu_k/sigma_k^2] + b_k,
    b_k = log pi_k - 1/2 sum_d (mu_kd^2/sigma_kd^2 + log sigma_kd^2) - D/2 log 2 pi,

(the square of (z_d - mu_kd)/sigma_kd expanded), so N points against K components cost one
`[N, 2D] x [2D, K]` matmul that writes the `[N, K]` component log-densities directly (bias b_k added by the
matmul, no further `[N, K]` passes before the log-sum-exp): VampPrior's K = 500 components over thousands
of importance samples fit in memory and run at matmul speed. The log-sum-exp floors its terms where their
exp would underflow (`logsumexp_floored`): torch's CPU exp is 10-30x slower there, and in a trained model
most of the N x K terms are that far below the largest.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_LOG_2PI = math.log(2 * math.pi)


def logsumexp_floored(t: Tensor) -> Tensor:
    """log sum_k exp(t_k) over the last dimension, `[..., K]` -> `[...]`, as `torch.logsumexp`, except that each
    shifted term t_k - max_j t_j is raised to at least log(tiny) + 1 (tiny: the dtype's smallest normal
    number) before the exp. exp below that is subnormal or 0 and takes a 10-30x slower path in torch's CPU
    exp; raised, each such term adds less than 3.2e-38 (float32; 6.1e-308 in float64) to a sum that is at
    least 1 (the largest term is exactly 1): no change beyond round-off, and none in its gradient (the
    raised terms get 0 instead of their < 3.2e-38 share). Rows whose maximum is not finite give that maximum
    (-inf, inf) or NaN, as `torch.logsumexp`."""
    m = t.amax(-1, keepdim=True).detach()
    finite = m.isfinite()
    shift = torch.where(finite, m, 0.0)
    floor = math.log(torch.finfo(t.dtype).tiny) + 1
    out = (t - shift).clamp_min(floor).exp().sum(-1).log() + shift.squeeze(-1)
    return torch.where(finite.squeeze(-1), out, m.squeeze(-1))


def _weighted_components_log_prob(z: Tensor, loc: Tensor, log_var: Tensor, log_weights: Tensor | None) -> Tensor:
    """log pi_k + log N(z; loc_k, diag exp(log_var_k)) (pi_k = 1 when `log_weights` is None): `z` `[*S, D]`,
    `loc`, `log_var` `[K, D]`, `log_weights` `[K]` -> `[*S, K]`, by the single matmul of the module docstring."""
    precision = torch.exp(-log_var)  # [K, D]
    weight = torch.cat([-0.5 * precision, loc * precision], -1)  # [K, 2D]
    bias = -0.5 * ((loc * loc * precision + log_var).sum(-1) + loc.shape[-1] * _LOG_2PI)  # [K]
    if log_weights is not None:
        bias = bias + log_weights
    flat = z.reshape(-1, z.shape[-1])
    features = torch.cat([flat * flat, flat], -1)  # [N, 2D]
    return torch.addmm(bias, features, weight.T).reshape(*z.shape[:-1], loc.shape[0])


def diagonal_gaussian_components_log_prob(z: Tensor, loc: Tensor, log_var: Tensor) -> Tensor:
    """log N(z; loc_k, diag exp(log_var_k)) for every component: `z` `[*S, D]`, `loc`, `log_var` `[K, D]`
    -> `[*S, K]`."""
    return _weighted_components_log_prob(z, loc, log_var, None)


def diagonal_gaussian_mixture_log_prob(
    z: Tensor, loc: Tensor, log_var: Tensor, log_weights: Tensor | None = None
) -> Tensor:
    """log sum_k pi_k N(z; loc_k, diag exp(log_var_k)), `[*S, D]` -> `[*S]`; uniform weights when
    `log_weights` (normalised, `[K]`) is None (the log-weights are folded into the matmul's bias)."""
    comp = _weighted_components_log_prob(z, loc, log_var, log_weights)
    if log_weights is None:
        return logsumexp_floored(comp) - math.log(loc.shape[0])
    return logsumexp_floored(comp)
