"""Batched Hamiltonian Monte Carlo (Neal 2011, "MCMC using Hamiltonian dynamics") over chains x data points: the
sampling loop `hmc`, built from three parts kept in their own modules:

- `vaelab.mcmc.integrator`: `leapfrog` (and `value_and_grad`);
- `vaelab.mcmc.kernel`: the transition as pure `init` / `step` functions (state in, state out);
- `vaelab.mcmc.adaptation`: `StepSizeAdaptation` toward a target acceptance rate.

All chains of all data points move at once: the state is one tensor `z` `[C, B, D]` and the target is a
function `log_density(z) -> [C, B]` (unnormalised log f(z), differentiable in z). The only Python loop is over
leapfrog steps (and, in the callers, over iterations or temperatures). `hmc_step` and `HMCStep` are the
kernel's step in the form of one record, for callers that want it so.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vaelab.mcmc import kernel
from vaelab.mcmc.adaptation import StepSizeAdaptation, initial_step_size
from vaelab.mcmc.integrator import GradFn, LogDensity, grad_fn_of, leapfrog, value_and_grad

__all__ = [
    "GradFn",
    "HMCRun",
    "HMCStep",
    "LogDensity",
    "StepSizeAdaptation",
    "grad_fn_of",
    "hmc",
    "hmc_step",
    "initial_step_size",
    "leapfrog",
    "value_and_grad",
]


@dataclass
class HMCStep:
    """One HMC transition of every chain: new state `z` `[C, B, D]`, its `log_density` `[C, B]` and `grad`
    `[C, B, D]` (pass both to the next step), `accepted` `[C, B]` (bool) and the Metropolis acceptance
    probability `accept_prob` `[C, B]` = min(1, exp(H(z, p) - H(z', p'))) (0 where the proposal is not finite)."""

    z: Tensor
    log_density: Tensor
    grad: Tensor
    accepted: Tensor
    accept_prob: Tensor


def hmc_step(
    z: Tensor,
    log_density: LogDensity,
    step_size: float | Tensor,
    n_steps: int = 10,
    log_density_z: Tensor | None = None,
    grad_z: Tensor | None = None,
    jitter: float = 0.0,
) -> HMCStep:
    """One HMC transition per chain (`vaelab.mcmc.kernel.step`), from z `[C, B, D]`; `log_density_z`, `grad_z`
    are log f and its gradient at z when the caller has them (e.g. from the previous `HMCStep`)."""
    if log_density_z is None or grad_z is None:
        state = kernel.init(z, log_density)
    else:
        state = kernel.HMCState(z.detach(), log_density_z, grad_z)
    new, info = kernel.step(state, log_density, step_size, n_steps, jitter)
    return HMCStep(new.z, new.log_density, new.grad, info.accepted, info.accept_prob)


@dataclass
class HMCRun:
    """The result of `hmc`: final states `z` `[C, B, D]`, their `log_density` `[C, B]`, final per-chain
    `step_size` `[C, B, 1]`, and the acceptance probability averaged over all chains per iteration `[N]`."""

    z: Tensor
    log_density: Tensor
    step_size: Tensor
    acceptance: Tensor


@torch.no_grad()
def hmc(
    log_density: LogDensity,
    z: Tensor,
    iterations: int,
    step_size: float | Tensor = 0.1,
    leapfrog_steps: int = 10,
    adaptation: StepSizeAdaptation | None = None,
    jitter: float = 0.2,
) -> HMCRun:
    """`iterations` HMC transitions of all chains `z` `[C, B, D]` targeting f (log f: `[C, B, D]` -> `[C, B]`),
    adapting the step size after each when `adaptation` is given (adapt during warm-up only: a step size that
    depends on the chain's own past is not an exactly invariant kernel) and jittering it by `jitter`
    (`vaelab.mcmc.kernel.step`). Reuses log f and its gradient from one transition to the next."""
    eps = initial_step_size(step_size, z)
    acceptance = torch.empty(iterations, dtype=z.dtype, device=z.device)
    state = kernel.init(z, log_density)
    for i in range(iterations):
        state, info = kernel.step(state, log_density, eps, leapfrog_steps, jitter)
        acceptance[i] = info.accept_prob.mean()
        if adaptation is not None:
            eps = adaptation.update(eps, info.accept_prob)
    return HMCRun(state.z, state.log_density, eps, acceptance)
