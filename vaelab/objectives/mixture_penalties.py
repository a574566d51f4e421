"""Penalties on the mixture weights of q (Morningstar et al., SIWAE, app. D.2, eqs. 4-6).

    H(alpha)   = E_{k=1..K}[alpha_k log alpha_k] = (1/K) sum_k alpha_k log alpha_k      (eq. 4, negative entropy / K)
    L_H        = relu(H(alpha) - H0)                                                    (eq. 5)
    L_alpha    = sum_k relu(alpha_0 - log alpha_k),   alpha_0 = log(floor)              (eq. 6)

and the training loss is the negative bound plus L_H + L_alpha (eq. 7).

H0 is set from a maximum single-component mass m (the paper: 95%): H0 = H(m, (1-m)/(K-1), ..., (1-m)/(K-1)),
the least concentrated weights whose largest is m. H(m', uniform rest) grows with m', so every alpha with a
component above m is penalised ("prevents [any] single component from amassing more than 95%"). (No threshold
on H can also make the converse hold for all K: e.g. (0.94, 0.06, 0, 0) has a larger H than (0.95, 1/60 x 3).)
The floor (the paper: 1%) penalises every component with less mass than it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vaelab.errors import ConfigError


def entropy_threshold(components: int, max_mass: float) -> float:
    """H0 of eq. 5 for K = `components`: H at (m, (1-m)/(K-1), ...), m = `max_mass`."""
    m, K = max_mass, components
    rest = (1 - m) * math.log((1 - m) / (K - 1)) if m < 1 else 0.0
    return (m * math.log(m) + rest) / K


def entropy_penalty(log_alpha: Tensor, max_mass: float) -> Tensor:
    """relu(H(alpha) - H0) `[B]` for normalised log-weights `log_alpha` `[B, K]` (eqs. 4-5)."""
    K = log_alpha.shape[-1]
    H = (log_alpha.exp() * log_alpha).mean(-1)
    return torch.relu(H - entropy_threshold(K, max_mass))


def weight_floor_penalty(log_alpha: Tensor, floor: float) -> Tensor:
    """sum_k relu(log floor - log alpha_k) `[B]` (eq. 6)."""
    return torch.relu(math.log(floor) - log_alpha).sum(-1)


def check_penalty_options(max_mass: float | None, floor: float | None) -> None:
    if max_mass is not None and not 0 < max_mass < 1:
        raise ConfigError(f"entropy_penalty is the largest mass one component may hold, in (0, 1); got {max_mass}")
    if floor is not None and not 0 < floor < 1:
        raise ConfigError(f"weight_floor is the smallest mass a component should hold, in (0, 1); got {floor}")


def mixture_penalty(log_alpha: Tensor, max_mass: float | None, floor: float | None) -> Tensor | float:
    """L_H + L_alpha `[B]` (eq. 7) for `log_alpha` `[B, K]`; each term only when its option is set, and 0 for
    K = 1 (nothing to balance). A threshold that no weights can meet (m <= 1/K, floor >= 1/K): `ConfigError`."""
    K = log_alpha.shape[-1]
    if K == 1 or (max_mass is None and floor is None):
        return 0.0
    out = 0.0
    if max_mass is not None:
        if max_mass <= 1 / K:
            raise ConfigError(f"entropy_penalty {max_mass} is at most 1/{K}, so it penalises every weighting; use more")
        out = out + entropy_penalty(log_alpha, max_mass)
    if floor is not None:
        if floor >= 1 / K:
            raise ConfigError(f"weight_floor {floor} leaves no valid weights for {K} components; use less than 1/{K}")
        out = out + weight_floor_penalty(log_alpha, floor)
    return out
