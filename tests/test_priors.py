"""Priors: densities against brute-force evaluations, sampling against densities, KL against Monte Carlo."""

from __future__ import annotations

import math

import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from vaelab.distributions.gaussian_mixture import diagonal_gaussian_mixture_log_prob
from vaelab.priors import MixtureOfGaussians, StandardNormal


def _reference_mixture(loc, log_var, logits=None):
    mix = Categorical(logits=torch.zeros(loc.shape[0], dtype=loc.dtype) if logits is None else logits)
    return MixtureSameFamily(mix, Independent(Normal(loc, torch.exp(0.5 * log_var)), 1))


def test_matmul_mixture_density_equals_brute_force():
    g = torch.Generator().manual_seed(0)
    loc = torch.randn(7, 5, generator=g, dtype=torch.float64) * 2
    log_var = torch.randn(7, 5, generator=g, dtype=torch.float64)
    logits = torch.randn(7, generator=g, dtype=torch.float64)
    z = torch.randn(3, 11, 5, generator=g, dtype=torch.float64) * 3
    ours = diagonal_gaussian_mixture_log_prob(z, loc, log_var, torch.log_softmax(logits, 0))
    torch.testing.assert_close(ours, _reference_mixture(loc, log_var, logits).log_prob(z))
    torch.testing.assert_close(
        diagonal_gaussian_mixture_log_prob(z, loc, log_var), _reference_mixture(loc, log_var).log_prob(z)
    )


def test_mog_prior_density_sampling_and_weights():
    prior = MixtureOfGaussians(latent_dim=2, components=3, learn_weights=True).double()
    with torch.no_grad():
        prior.loc.copy_(torch.tensor([[-4.0, 0.0], [0.0, 4.0], [4.0, 0.0]]))
        prior.logits.copy_(torch.tensor([0.0, 1.0, 2.0]))
    z = torch.randn(100, 2, dtype=torch.float64)
    torch.testing.assert_close(
        prior.log_prob(z), _reference_mixture(prior.loc, prior.log_var, prior.logits).log_prob(z)
    )
    s = prior.sample(20000)
    # the components are well separated: the share of samples near each mean estimates its weight
    nearest = torch.cdist(s, prior.loc.detach()).argmin(1)
    share = torch.bincount(nearest, minlength=3).double() / 20000
    expected = torch.softmax(torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64), 0)
    assert (share - expected).abs().max() < 4 * math.sqrt(0.25 / 20000) + 1e-3


def test_mog_prior_has_no_closed_form_kl_and_trains():
    prior = MixtureOfGaussians(latent_dim=3, components=4)
    q = Independent(Normal(torch.zeros(5, 3), torch.ones(5, 3)), 1)
    assert prior.kl(q) is None  # objectives then estimate it by Monte Carlo
    z = q.rsample((2,))
    prior.log_prob(z).sum().backward()
    assert prior.loc.grad is not None and prior.log_var.grad.abs().sum() > 0


def test_standard_normal_kl_matches_monte_carlo():
    prior = StandardNormal(4).double()
    q = Independent(Normal(torch.randn(6, 4).double(), torch.rand(6, 4).double() + 0.3), 1)
    z = q.sample((40000,))
    mc = q.log_prob(z) - prior.log_prob(z)
    assert ((prior.kl(q) - mc.mean(0)).abs() < 4 * mc.std(0) / 200).all()
