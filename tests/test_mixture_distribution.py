"""The mixture distribution with stratified sampling, and the full-covariance family."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from vaelab.distributions import DiagonalNormal, ReparameterizedMixture
from vaelab.posteriors import FullCovarianceGaussian, cholesky_factor


def _mixture(B: int = 3, K: int = 4, D: int = 2, seed: int = 0) -> ReparameterizedMixture:
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(B, K, D, generator=g, dtype=torch.float64) * 2
    scale = torch.rand(B, K, D, generator=g, dtype=torch.float64) + 0.3
    logits = torch.randn(B, K, generator=g, dtype=torch.float64)
    return ReparameterizedMixture(logits, DiagonalNormal(loc, scale))


def test_log_prob_is_the_brute_force_mixture_density():
    q = _mixture()
    z = torch.randn(5, 3, 2, dtype=torch.float64)
    loc, scale = q.component_distribution.loc, q.component_distribution.scale
    w = torch.softmax(q.mixture_distribution.logits, -1)
    dens = torch.zeros(5, 3, dtype=torch.float64)
    for k in range(4):
        gauss = torch.exp(-0.5 * ((z - loc[:, k]) / scale[:, k]) ** 2) / (math.sqrt(2 * math.pi) * scale[:, k])
        dens += w[:, k] * gauss.prod(-1)
    torch.testing.assert_close(q.log_prob(z), dens.log())
    comp = q.component_log_prob(z)
    assert comp.shape == (5, 3, 4)
    torch.testing.assert_close(torch.logsumexp(comp + q.log_weights, -1), dens.log())


def test_stratified_draws_come_from_each_component_and_carry_gradients():
    q = _mixture()
    loc = q.component_distribution.loc.requires_grad_()
    q = ReparameterizedMixture(q.mixture_distribution.logits, DiagonalNormal(loc, q.component_distribution.scale))
    torch.manual_seed(0)
    z = q.stratified_rsample(20000)
    assert z.shape == (20000, 4, 3, 2)
    se = q.component_distribution.scale.permute(1, 0, 2) / math.sqrt(20000)
    assert ((z.mean(0) - loc.detach().permute(1, 0, 2)).abs() < 5 * se).all()
    z[:, 2].sum().backward()  # stratum 2 depends on component 2's parameters only
    assert (loc.grad[:, 2] == 20000).all() and (loc.grad[:, [0, 1, 3]] == 0).all()


def test_rsample_refuses_with_advice_and_sample_is_ancestral():
    q = _mixture()
    with pytest.raises(NotImplementedError, match="stratified"):
        q.rsample((2,))
    torch.manual_seed(1)
    z = q.sample((40000,))
    assert z.shape == (40000, 3, 2)
    assert ((z.mean(0) - q.mean).abs() < 5 * z.std(0) / math.sqrt(40000)).all()


def test_cholesky_factor_is_lower_triangular_with_positive_diagonal():
    raw = torch.randn(7, 10, dtype=torch.float64) * 5
    L = cholesky_factor(raw, 4)
    assert torch.equal(L, L.tril())
    assert (torch.diagonal(L, dim1=-2, dim2=-1) > 0).all()
    torch.testing.assert_close(
        cholesky_factor(torch.zeros(10, dtype=torch.float64), 4), torch.eye(4, dtype=torch.float64), atol=2e-4, rtol=0
    )
    rows, cols = torch.tril_indices(4, 4, offset=-1)
    strict = torch.tril_indices(4, 4)
    off = [i for i in range(10) if strict[0, i] != strict[1, i]]
    torch.testing.assert_close(L[..., rows, cols], raw[..., off])


def test_full_covariance_family_density_matches_explicit_covariance():
    torch.manual_seed(0)
    fam = FullCovarianceGaussian(5, 3).double()
    h = torch.randn(4, 5, dtype=torch.float64)
    q = fam(h)
    z = q.rsample((6,))
    assert z.shape == (6, 4, 3)
    L = q.scale_tril
    ref = MultivariateNormal(q.loc, covariance_matrix=L @ L.mT)
    torch.testing.assert_close(q.log_prob(z), ref.log_prob(z))
    assert not torch.allclose(L, torch.diag_embed(torch.diagonal(L, dim1=-2, dim2=-1)))  # correlations present
