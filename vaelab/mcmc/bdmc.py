"""Bidirectional Monte Carlo (Grosse, Ghahramani & Adams 2015; used by Wu et al. 2017 to validate AIS).

On data simulated from the model, z* ~ p(z), x ~ p(x | z*), the latent z* is an exact sample of p(z | x).
Forward AIS from the initial distribution to p(x, z) gives a stochastic lower bound of log p(x); reverse
AIS, started at z* and run down the same schedule to the initial distribution, gives a stochastic upper
bound (its weights have mean 1 / p(x)). The gap between the two bounds the
error of forward AIS with that schedule on data like x.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Distribution

from vaelab.mcmc.ais import AISResult, ais, reverse_ais


@torch.no_grad()
def simulate(model, n: int) -> tuple[Tensor, Tensor]:
    """n draws from the model: z* ~ p(z) `[n, D]` and x ~ p(x | z*) `[n, *event]` (a sample, not the mean)."""
    z = model.prior.sample(n)
    return model.likelihood.sample(model.decode(z)), z


@dataclass
class BDMCResult:
    """Forward and reverse AIS on the same data; `lower`, `upper`, `gap` are `[B]`."""

    forward: AISResult
    reverse: AISResult

    @property
    def lower(self) -> Tensor:
        """log (1/C) sum_c w_c of forward AIS: E[lower] <= log p(x)."""
        return self.forward.log_likelihood

    @property
    def upper(self) -> Tensor:
        """-log (1/C) sum_c w_c of reverse AIS: E[upper] >= log p(x)."""
        return self.reverse.log_likelihood

    @property
    def gap(self) -> Tensor:
        """upper - lower `[B]`: bounds the (expected) error of either estimate."""
        return self.upper - self.lower

    @property
    def per_chain_gap(self) -> Tensor:
        """The gap between the single-chain bounds `[B]` (`AISResult.per_chain_bound`; Grosse et al. 2015):
        looser than `gap` but with much less noise relative to it; O(1/T)."""
        return self.reverse.per_chain_bound - self.forward.per_chain_bound

    def summary(self) -> dict[str, float]:
        return {
            "n": self.lower.numel(),
            "lower": float(self.lower.mean()),
            "upper": float(self.upper.mean()),
            "gap": float(self.gap.mean()),
            "per_chain_gap": float(self.per_chain_gap.mean()),
        }


@torch.no_grad()
def bdmc(
    model,
    x: Tensor,
    z_star: Tensor,
    chains: int = 16,
    schedule: int | Sequence[float] | Tensor = 1000,
    leapfrog_steps: int = 10,
    init: str | Distribution = "prior",
    step_size: float = 0.1,
    target_acceptance: float = 0.65,
    adapt: str | None = "data",
    adapt_rate: float = 0.1,
    step_size_range: tuple[float, float] = (1e-4, 1.0),
    jitter: float = 0.2,
    pilot_chains: int = 0,
    batch_size: int | None = None,
    progress: bool = True,
) -> BDMCResult:
    """Sandwich log p(x) for simulated data `x` `[B, *event]` with its generating latents `z_star` (`[B, D]`
    from `simulate`, or `[C, B, D]` exact posterior samples). Forward AIS runs first; the reverse chains start
    from z* with the forward run's final step sizes (averaged over its chains), which suit p(z | x), unless
    `pilot_chains` tunes a schedule for each direction. Options as `vaelab.mcmc.ais`.
    """
    options = dict(
        chains=chains,
        schedule=schedule,
        leapfrog_steps=leapfrog_steps,
        init=init,
        target_acceptance=target_acceptance,
        adapt=adapt,
        adapt_rate=adapt_rate,
        step_size_range=step_size_range,
        jitter=jitter,
        pilot_chains=pilot_chains,
        batch_size=batch_size,
        progress=progress,
    )
    forward = ais(model, x, step_size=step_size, **options)
    reverse = reverse_ais(model, x, z_star, step_size=forward.step_size.mean(0, keepdim=True), **options)
    return BDMCResult(forward, reverse)
