"""Bidirectional Monte Carlo (Grosse, Ghahramani & Adams 2015; used by Wu et al. 2017 to validate AIS).

On data simulated from the model, z* ~ p(z), x ~ p(x | z*), the latent z* is an exact sample of p(z | x).
Forward AIS from the initial distribution to p(x, z) gives a stochastic lower bound of log p(x); reverse
AIS, started at z* and run down the same schedule to the initial distribution, gives a stochastic upper
bound (its weights have mean 1 / p(x)). The gap between the two bounds the
error of forward AIS with that schedule on data like x.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from vaelab.errors import ConfigError
from vaelab.mcmc.ais import AISResult, ais, reverse_ais
from vaelab.mcmc.options import AISOptions, resolve


@runtime_checkable
class Simulator(Protocol):
    """A model that draws its own joint samples: `simulate(n)` -> (x `[n, *event]`, z* `[n, D]`), z* ~ p(z) and
    x ~ p(x | z*) (e.g. `vaelab.adapters.pythae.PythaeModel`)."""

    def simulate(self, n: int) -> tuple[Tensor, Tensor]: ...


@torch.no_grad()
def simulate(model: Any, n: int) -> tuple[Tensor, Tensor]:
    """n draws from the model: x ~ p(x | z*) `[n, *event]` (a sample, not the mean) and z* ~ p(z) `[n, D]`; a
    `Simulator` draws its own, any other model through `prior.sample`, `decode` and `likelihood.sample`."""
    if isinstance(model, Simulator):
        return model.simulate(n)
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
    model: Any,
    x: Tensor,
    z_star: Tensor,
    options: AISOptions | str | None = None,
    *,
    progress: bool = True,
    **settings: Any,
) -> BDMCResult:
    """Sandwich log p(x) for simulated data `x` `[B, *event]` with its generating latents `z_star` (`[B, D]`
    from `simulate`, or `[C, B, D]` exact posterior samples). Forward AIS runs first; the reverse chains start
    from z* with the forward run's final step sizes (averaged over its chains), which suit p(z | x), unless
    `pilot_chains` tunes a schedule for each direction. `options` and `settings` as `vaelab.mcmc.ais`; with a
    `seed`, the reverse run uses `seed + 1`.
    """
    o = resolve(options, settings)
    if o.replicates != 1:
        raise ConfigError("BDMC runs one forward and one reverse AIS per point: drop replicates (the gap bounds it)")
    forward = ais(model, x, o, progress=progress)
    back = dataclasses.replace(
        o, step_size=forward.step_size.mean(0, keepdim=True), seed=None if o.seed is None else o.seed + 1
    )
    reverse = reverse_ais(model, x, z_star, back, progress=progress)
    return BDMCResult(forward, reverse)
