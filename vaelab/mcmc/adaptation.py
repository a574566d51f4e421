"""Step-size adaptation for HMC toward a target acceptance rate, kept apart from the kernel (`vaelab.mcmc.kernel`),
which takes the step size as an argument: adapting is the caller's choice, made between transitions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vaelab.errors import ConfigError


@dataclass
class StepSizeAdaptation:
    """Multiplicative step-size adaptation toward a target acceptance rate:

        log eps <- log eps + rate * (a - target),   then eps clamped to [min_step, max_step],

    where a is the Metropolis acceptance probability averaged over `per`: "chain" (each chain its own eps),
    "data" (over the chains of each data point) or "all". Its fixed point is E[a] = target (a Robbins-Monro
    recursion in log eps; with a fixed rate it hovers there). AIWAE (sec. 5.1) targets 0.6; Wu et al. (2017)
    and Cremer et al. (2018) 0.65, the default. Wu et al.'s rule, eps *= 1.02 or 0.98 by the sign of the
    chains' mean a - target, is the "data" variant with a sign in place of the difference.

    An adapted step size depends on the chain's own past, so the kernel is no longer exactly invariant:
    adapt during warm-up and then freeze it for sampling (`vaelab.mcmc.hmc.hmc`); for AIS see
    `vaelab.mcmc.ais.anneal`.
    """

    target: float = 0.65
    rate: float = 0.1
    min_step: float = 1e-4
    max_step: float = 1.0
    per: str = "chain"

    def __post_init__(self) -> None:
        if not 0 < self.target < 1:
            raise ConfigError(f"target acceptance must be in (0, 1), got {self.target}")
        if not 0 < self.min_step <= self.max_step:
            raise ConfigError(f"step-size range must satisfy 0 < min <= max, got [{self.min_step}, {self.max_step}]")
        if self.rate < 0:
            raise ConfigError(f"adaptation rate must be >= 0, got {self.rate}")
        if self.per not in ("chain", "data", "all"):
            raise ConfigError(f"step-size adaptation 'per' must be 'chain', 'data' or 'all', not {self.per!r}")

    def update(self, step_size: Tensor, accept_prob: Tensor) -> Tensor:
        """New step sizes `[C, B, 1]` from the current ones `[C, B, 1]` and acceptance probabilities `[C, B]`
        (a pure function: the arguments are not modified)."""
        a = accept_prob
        if self.per == "data":
            a = a.mean(0, keepdim=True)
        elif self.per == "all":
            a = a.mean()
        new = step_size * torch.exp(self.rate * (a - self.target)).unsqueeze(-1)
        return new.clamp(self.min_step, self.max_step)


def initial_step_size(step_size: float | Tensor, z: Tensor) -> Tensor:
    """A step-size tensor `[C, B, 1]` for chains `z` `[C, B, D]` from a float or any broadcastable tensor."""
    eps = torch.as_tensor(step_size, dtype=z.dtype, device=z.device)
    if eps.dim() == 0:
        eps = eps.reshape(1, 1, 1)
    return eps.expand(*z.shape[:-1], 1).clone()
