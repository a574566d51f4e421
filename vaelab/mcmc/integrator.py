"""The leapfrog integrator of Hamiltonian dynamics (Neal 2011, "MCMC using Hamiltonian dynamics", sec. 2.3).

With an identity mass matrix the Hamiltonian is H(z, p) = U(z) + |p|^2 / 2 with U(z) = -log f(z) (AIWAE,
Algorithm 1: U_t = -log f_t). The state z `[C, B, D]` holds all chains of all data points; a log-density maps it
to `[C, B]`. Everything returned is detached: no autograd graph outlives one gradient evaluation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from vaelab.errors import ConfigError

#: log f(z): `[C, B, D]` -> `[C, B]`, differentiable in z.
LogDensity = Callable[[Tensor], Tensor]
#: z `[C, B, D]` -> (log f(z) `[C, B]`, grad_z log f(z) `[C, B, D]`), both detached.
GradFn = Callable[[Tensor], tuple[Tensor, Tensor]]


def in_chunks(fn: Callable[[Tensor], tuple[Tensor, ...]], z: Tensor, chunk: int | None) -> tuple[Tensor, ...]:
    """`fn(z)` for z `[C, ...]` computed on chunks of `chunk` chains (z's first dimension) and concatenated along
    it: the same values (chains are independent) with a working set of one chunk, which on the CPU can stay in
    cache from a decoder's forward pass to its backward. `chunk` None (or >= C): one call."""
    if chunk is None or chunk >= z.shape[0]:
        return fn(z)
    parts = [fn(piece) for piece in z.split(chunk)]
    return tuple(torch.cat(ts) for ts in zip(*parts, strict=True))


def value_and_grad(log_density: LogDensity, z: Tensor, chunk: int | None = None) -> tuple[Tensor, Tensor]:
    """log f(z) `[C, B]` and its gradient grad_z log f(z) `[C, B, D]`, detached (`create_graph=False`); with
    `chunk`, `chunk` chains at a time (`in_chunks`).

    Chains and data points are independent, so the gradient of the sum is every chain's own gradient.
    Works inside `torch.no_grad()`; only z is differentiated (parameter gradients are not accumulated).
    """

    def one(z: Tensor) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            logp = log_density(z)
            (grad,) = torch.autograd.grad(logp.sum(), z)
        return logp.detach(), grad

    return in_chunks(one, z, chunk)  # type: ignore[return-value]


def grad_fn_of(log_density: LogDensity, chunk: int | None = None) -> GradFn:
    """The `GradFn` of a log-density (for `leapfrog`), `chunk` chains at a time (`value_and_grad`)."""
    return lambda z: value_and_grad(log_density, z, chunk)


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
