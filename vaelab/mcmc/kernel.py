"""The HMC transition kernel as two pure functions, in the style of blackjax: `init` makes a state, `step` maps a
state to a new state and an info record. Nothing is mutated and nothing is kept between calls; the step size is an
argument (adapt it between calls with `vaelab.mcmc.adaptation`), and randomness comes from torch's generator (or
the `generator` given). Chains and data points move together: z is `[C, B, D]`, log f maps it to `[C, B]`.

One transition (Neal 2011, "MCMC using Hamiltonian dynamics", sec. 3.2) draws p ~ N(0, I), integrates with
`vaelab.mcmc.integrator.leapfrog` and accepts (z', p') with probability min(1, exp(H(z, p) - H(z', p'))),
H(z, p) = -log f(z) + |p|^2 / 2; it leaves f invariant.

>>> import torch
>>> from vaelab.mcmc import kernel
>>> log_f = lambda z: -0.5 * z.pow(2).sum(-1)
>>> state = kernel.init(torch.zeros(4, 2, 3), log_f)
>>> new, info = kernel.step(state, log_f, step_size=0.5, n_steps=3)
>>> new.z.shape, info.accept_prob.shape, bool((state.z == 0).all())
(torch.Size([4, 2, 3]), torch.Size([4, 2]), True)
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from vaelab.errors import ConfigError
from vaelab.mcmc.integrator import LogDensity, grad_fn_of, leapfrog, value_and_grad


class HMCState(NamedTuple):
    """A position of every chain: `z` `[C, B, D]`, its `log_density` log f(z) `[C, B]` and `grad` `[C, B, D]`."""

    z: Tensor
    log_density: Tensor
    grad: Tensor


class HMCInfo(NamedTuple):
    """What one transition did: `accepted` `[C, B]` (bool), the Metropolis acceptance probability `accept_prob`
    `[C, B]` = min(1, exp(H(z, p) - H(z', p'))) (0 where the proposal is not finite) and the `step_size` used
    (after jitter; a float or `[C, B, 1]`)."""

    accepted: Tensor
    accept_prob: Tensor
    step_size: float | Tensor


def init(z: Tensor, log_density: LogDensity) -> HMCState:
    """The state at `z` `[C, B, D]`: z detached, with log f(z) and its gradient (one evaluation)."""
    z = z.detach()
    logp, grad = value_and_grad(log_density, z)
    return HMCState(z, logp, grad)


def step(
    state: HMCState,
    log_density: LogDensity,
    step_size: float | Tensor,
    n_steps: int = 10,
    jitter: float = 0.0,
    generator: torch.Generator | None = None,
    chunk: int | None = None,
) -> tuple[HMCState, HMCInfo]:
    """One HMC transition of every chain from `state` targeting f (module docstring). Returns the new state and
    an `HMCInfo`; `state` is not modified.

    `step_size` a float or broadcastable to `[C, B, 1]`; `n_steps` leapfrog steps; `jitter` in [0, 1): each chain's
    step size is multiplied by a fresh U(1 - jitter, 1 + jitter) draw (Neal 2011, sec. 4), which breaks the
    periodicity of leapfrog orbits and keeps f invariant, the draw being independent of the state. `chunk`: the
    gradients `chunk` chains at a time (`vaelab.mcmc.integrator.in_chunks`; the draws are the same).
    """
    if not 0 <= jitter < 1:
        raise ConfigError(f"step-size jitter must be in [0, 1), got {jitter}")
    z, logp, grad = state
    opts = {"dtype": z.dtype, "device": z.device, "generator": generator}
    if jitter:
        u = torch.rand(*z.shape[:-1], 1, **opts)
        step_size = step_size * (1 + jitter * (2 * u - 1))
    p0 = torch.randn(z.shape, **opts)
    z1, p1, logp1, grad1 = leapfrog(z, p0, grad_fn_of(log_density, chunk), step_size, n_steps, grad)
    log_ratio = (logp1 - 0.5 * p1.pow(2).sum(-1)) - (logp - 0.5 * p0.pow(2).sum(-1))  # -H' + H
    log_ratio = torch.where(torch.isfinite(log_ratio), log_ratio, torch.full_like(log_ratio, -torch.inf))
    accept_prob = torch.exp(log_ratio.clamp(max=0.0))
    accepted = torch.rand(accept_prob.shape, **opts) < accept_prob
    keep = accepted.unsqueeze(-1)
    new = HMCState(torch.where(keep, z1, z), torch.where(accepted, logp1, logp), torch.where(keep, grad1, grad))
    return new, HMCInfo(accepted, accept_prob, step_size)
