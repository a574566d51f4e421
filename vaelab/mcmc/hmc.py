"""Batched Hamiltonian Monte Carlo (Neal 2011, "MCMC using Hamiltonian dynamics") over chains x data points.

All chains of all data points move at once: the state is one tensor `z` `[C, B, D]` and the target is a
function `log_density(z) -> [C, B]` (unnormalised log f(z), differentiable in z). With an identity mass
matrix the Hamiltonian is

    H(z, p) = U(z) + |p|^2 / 2,   U(z) = -log f(z)   (AIWAE, Algorithm 1: U_t = -log f_t),

integrated by leapfrog and corrected by a Metropolis test per chain. States, momenta and gradients are
detached: no autograd graph outlives one gradient evaluation, so memory does not grow with the number of
steps. The only Python loop is over leapfrog steps (and, in the callers, over iterations or temperatures).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from vaelab.errors import ConfigError

#: log f(z): `[C, B, D]` -> `[C, B]`, differentiable in z.
LogDensity = Callable[[Tensor], Tensor]
#: z `[C, B, D]` -> (log f(z) `[C, B]`, grad_z log f(z) `[C, B, D]`), both detached.
GradFn = Callable[[Tensor], tuple[Tensor, Tensor]]


def value_and_grad(log_density: LogDensity, z: Tensor) -> tuple[Tensor, Tensor]:
    """log f(z) `[C, B]` and its gradient grad_z log f(z) `[C, B, D]`, detached (`create_graph=False`).

    Chains and data points are independent, so the gradient of the sum is every chain's own gradient.
    Works inside `torch.no_grad()`; only z is differentiated (parameter gradients are not accumulated).
    """
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        logp = log_density(z)
        (grad,) = torch.autograd.grad(logp.sum(), z)
    return logp.detach(), grad


def grad_fn_of(log_density: LogDensity) -> GradFn:
    """The `GradFn` of a log-density (for `leapfrog`)."""
    return lambda z: value_and_grad(log_density, z)


def leapfrog(
    z: Tensor, p: Tensor, grad_fn: GradFn, step_size: float | Tensor, n_steps: int, grad: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """`n_steps` leapfrog steps of Hamiltonian dynamics for H = -log f(z) + |p|^2 / 2 (Neal 2011, eqs. 2.28-2.30):

        p <- p + (eps/2) grad log f(z);  z <- z + eps p;  p <- p + (eps/2) grad log f(z),

    with the inner half-steps of momentum merged. z, p: `[C, B, D]`; `step_size` a float or a tensor
    broadcastable to `[C, B, 1]` (per-chain eps); `grad` is grad log f at the start when already known.
    Returns (z, p, log f(z), grad log f(z)) at the end of the trajectory (so the caller need not re-evaluate).
    The map is reversible (negate p and integrate again to return) and volume-preserving.
    """
    if n_steps < 1:
        raise ConfigError(f"leapfrog needs n_steps >= 1, got {n_steps}")
    if grad is None:
        _, grad = grad_fn(z)
    p = p + 0.5 * step_size * grad
    for i in range(n_steps):
        z = z + step_size * p
        logp, grad = grad_fn(z)
        p = p + (step_size if i < n_steps - 1 else 0.5 * step_size) * grad
    return z, p, logp, grad


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
    """One HMC transition per chain, leaving f invariant (Neal 2011, sec. 3.2): draw p ~ N(0, I), run
    `leapfrog`, accept (z', p') with probability min(1, exp(-H(z', p') + H(z, p))), else stay.

    z `[C, B, D]`; `step_size` float or broadcastable to `[C, B, 1]`; `log_density_z`, `grad_z` are log f and
    its gradient at z when the caller has them (e.g. from the previous `HMCStep`), saving one evaluation.
    `jitter` in [0, 1): each chain's step size is multiplied by a fresh U(1 - jitter, 1 + jitter) draw (Neal
    2011, sec. 4), which breaks the periodicity of leapfrog orbits (a trajectory of nearly a half or whole
    period leaves some directions unmixed) and keeps f invariant, the draw being independent of the state.
    """
    if not 0 <= jitter < 1:
        raise ConfigError(f"step-size jitter must be in [0, 1), got {jitter}")
    z = z.detach()
    if log_density_z is None or grad_z is None:
        log_density_z, grad_z = value_and_grad(log_density, z)
    if jitter:
        u = torch.rand(*z.shape[:-1], 1, dtype=z.dtype, device=z.device)
        step_size = step_size * (1 + jitter * (2 * u - 1))
    p0 = torch.randn_like(z)
    z1, p1, logp1, grad1 = leapfrog(z, p0, grad_fn_of(log_density), step_size, n_steps, grad_z)
    log_ratio = (logp1 - 0.5 * p1.pow(2).sum(-1)) - (log_density_z - 0.5 * p0.pow(2).sum(-1))  # -H' + H
    log_ratio = torch.where(torch.isfinite(log_ratio), log_ratio, torch.full_like(log_ratio, -torch.inf))
    accept_prob = torch.exp(log_ratio.clamp(max=0.0))
    accepted = torch.rand_like(accept_prob) < accept_prob
    keep = accepted.unsqueeze(-1)
    return HMCStep(
        z=torch.where(keep, z1, z),
        log_density=torch.where(accepted, logp1, log_density_z),
        grad=torch.where(keep, grad1, grad_z),
        accepted=accepted,
        accept_prob=accept_prob,
    )


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
    adapt during warm-up and then freeze it for sampling (`hmc`); for AIS see `vaelab.mcmc.ais.anneal`.
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
        """New step sizes `[C, B, 1]` from the current ones `[C, B, 1]` and acceptance probabilities `[C, B]`."""
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
    (`hmc_step`). Reuses log f and its gradient from one transition to the next (L evaluations each)."""
    eps = initial_step_size(step_size, z)
    acceptance = torch.empty(iterations, dtype=z.dtype, device=z.device)
    logp, grad = value_and_grad(log_density, z)
    for i in range(iterations):
        step = hmc_step(z, log_density, eps, leapfrog_steps, logp, grad, jitter)
        z, logp, grad = step.z, step.log_density, step.grad
        acceptance[i] = step.accept_prob.mean()
        if adaptation is not None:
            eps = adaptation.update(eps, step.accept_prob)
    return HMCRun(z, logp, eps, acceptance)
