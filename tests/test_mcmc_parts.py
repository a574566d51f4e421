"""The split HMC (integrator, pure kernel, adaptation) and the one `AISOptions` that ais, reverse_ais and bdmc take.

The kernel is checked against an exact Gaussian target: draws that start distributed as the target stay so, every
moment within 4 se (p < 1e-4 per check for a correct kernel); and it is pure (its inputs come out unchanged).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import linear_gaussian, one_thread  # noqa: F401 (one_thread: a module-wide fixture)

from vaelab.config import GapsConfig
from vaelab.errors import ConfigError
from vaelab.evaluation.gaps import ais_options
from vaelab.mcmc import PRESETS, AISOptions, StepSizeAdaptation, ais, bdmc, kernel, parse_ais_options, resolve, simulate
from vaelab.mcmc.options import ALIASES


def _gaussian_target():
    """A correlated 4-D Gaussian per data point (B = 2): the exact posterior of a linear-Gaussian model."""
    model = linear_gaussian(x_dim=6, latent_dim=4, sigma=0.7, seed=5)
    x = model.marginal().sample((2,))
    return (lambda z: model.log_joint(x, z)), model.exact_posterior(x)


def _moments_within(z, target, sigmas=4.0) -> None:
    C = z.shape[0]
    m, S = target.mean, target.covariance_matrix
    d = torch.diagonal(S, dim1=-2, dim2=-1)
    mean = z.mean(0)
    c = z - mean
    cov = torch.einsum("cbi,cbj->bij", c, c) / (C - 1)
    assert ((mean - m).abs() < sigmas * torch.sqrt(d / C)).all()
    assert ((cov - S).abs() < sigmas * torch.sqrt((d.unsqueeze(-1) * d.unsqueeze(-2) + S**2) / C)).all()


def test_pure_kernel_leaves_a_gaussian_target_invariant():
    """3000 chains x 2 points started at exact draws, 30 `kernel.step`s at a step size rejecting some proposals
    (with jitter): still distributed as the target (means and covariances within 4 se), having moved."""
    log_f, target = _gaussian_target()
    z0 = target.sample((3000,))
    state = kernel.init(z0, log_f)
    acceptance = []
    for _ in range(30):
        state, info = kernel.step(state, log_f, step_size=0.4, n_steps=5, jitter=0.2)
        acceptance.append(float(info.accept_prob.mean()))
    assert 0.4 < sum(acceptance) / len(acceptance) < 0.95
    assert (state.z - z0).abs().mean() > 0.5 * target.stddev.mean()
    _moments_within(state.z, target)
    torch.testing.assert_close(state.log_density, log_f(state.z))


def test_kernel_step_is_pure_and_reproducible_with_a_generator():
    """`step` changes none of its inputs and keeps nothing: the same state and generator seed give the same
    output, and the old state is still the one passed in."""
    log_f, target = _gaussian_target()
    state = kernel.init(target.sample((50,)), log_f)
    copies = [t.clone() for t in state]
    a, info_a = kernel.step(state, log_f, 0.3, 4, jitter=0.1, generator=torch.Generator().manual_seed(7))
    b, info_b = kernel.step(state, log_f, 0.3, 4, jitter=0.1, generator=torch.Generator().manual_seed(7))
    for before, after in zip(copies, state, strict=True):
        torch.testing.assert_close(before, after, rtol=0, atol=0)
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v, rtol=0, atol=0)
    torch.testing.assert_close(info_a.accept_prob, info_b.accept_prob)
    assert info_a.accepted.dtype == torch.bool and not (a.z == state.z).all()


def test_adaptation_is_a_function_of_its_arguments():
    eps = torch.full((3, 2, 1), 0.1)
    new = StepSizeAdaptation(0.65, rate=0.5, per="data").update(eps, torch.ones(3, 2))
    assert (eps == 0.1).all() and torch.allclose(new, 0.1 * torch.exp(torch.tensor(0.5 * 0.35)))


# --- AISOptions ----------------------------------------------------------------------------------------------------


def test_every_spelling_maps_onto_one_options_value():
    """The command line, the gaps YAML keys, the old keyword arguments and the fields give equal AISOptions."""
    want = dataclasses.replace(PRESETS["cremer"], chains=16, temps=100, leapfrog=5)
    assert parse_ais_options(["cremer", "chains=16", "temperatures=100", "steps=5"]) == want
    assert resolve("cremer", {"ais_chains": 16, "ais_temperatures": 100, "ais_leapfrog": 5}) == want
    assert resolve("cremer", {"chains": 16, "schedule": 100, "leapfrog_steps": 5}) == want
    gaps = GapsConfig(ais_chains=16, ais_temperatures=100, ais_leapfrog=5)
    assert ais_options(gaps) == AISOptions(chains=16, temps=100, leapfrog=5)
    ranged = resolve(None, {"step_size_range": (1e-3, 0.5)})
    assert (ranged.min_step_size, ranged.max_step_size) == (1e-3, 0.5)
    assert set(ALIASES.values()) <= {f.name for f in dataclasses.fields(AISOptions)}
    betas = resolve(None, {"schedule": torch.tensor([0.0, 0.2, 1.0], dtype=torch.float64)})
    assert betas.temps == 3 and betas.betas().tolist() == [0.0, 0.2, 1.0]
    with pytest.raises(ConfigError, match="did you mean 'chains'"):
        resolve(None, {"chians": 3})
    with pytest.raises(ConfigError, match="pilot_chains"):
        AISOptions(pilot_chains=4, adapt=None)


def test_ais_and_bdmc_take_the_options():
    """ais(model, x, options) equals ais with the same settings as keywords; a seed makes a run reproducible
    without touching the global generator; bdmc brackets the exact log p(x) of a 3-D model."""
    model = linear_gaussian(x_dim=4, latent_dim=3, sigma=0.8, seed=2)
    x = model.marginal().sample((6,))
    options = AISOptions(chains=32, temps=60, leapfrog=3, step_size=0.3, seed=11)
    state = torch.random.get_rng_state()
    a = ais(model, x, options, progress=False)
    assert torch.equal(state, torch.random.get_rng_state())
    b = ais(model, x, chains=32, schedule=60, leapfrog_steps=3, step_size=0.3, seed=11, progress=False)
    torch.testing.assert_close(a.log_weights, b.log_weights, rtol=0, atol=0)
    exact = model.exact_log_marginal(x)
    assert ((a.log_likelihood - exact).abs() < 0.3).all()
    xs, z = simulate(model, 16)
    r = bdmc(model, xs, z, options, progress=False)
    truth = model.exact_log_marginal(xs).detach()
    assert float((r.lower - truth).mean()) < 0.05 and float((r.upper - truth).mean()) > -0.05
    with pytest.raises(ConfigError, match="ais_replicates"):
        ais(model, x, dataclasses.replace(options, replicates=2), progress=False)


@pytest.mark.parametrize("module", ["vaelab.mcmc.kernel", "vaelab.mcmc.options", "vaelab.mcmc.ais"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
