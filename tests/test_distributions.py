"""`DiagonalNormal` (the diagonal-Gaussian posterior's distribution) against torch's
`Independent(Normal, 1)`, and its closed-form KL divergences against Monte Carlo."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence

from vaelab.distributions import DiagonalNormal
from vaelab.posteriors import DiagonalGaussian


def _pair(batch=(4, 3), d=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(*batch, d, generator=g, dtype=dtype)
    log_scale = 0.7 * torch.randn(*batch, d, generator=g, dtype=dtype)
    return DiagonalNormal(loc, log_scale.exp(), log_scale), Independent(Normal(loc, log_scale.exp()), 1)


@pytest.mark.parametrize("exact_log_scale", [True, False])
def test_log_prob_entropy_and_moments_match_torch(exact_log_scale):
    q, ref = _pair()
    if not exact_log_scale:
        q = DiagonalNormal(q.loc, q.scale)  # log(scale) computed on demand
    z = torch.randn(7, 4, 3, 5, dtype=torch.float64) * 2
    torch.testing.assert_close(q.log_prob(z), ref.log_prob(z))
    torch.testing.assert_close(q.log_prob(z[0]), ref.log_prob(z[0]))  # no sample dimension
    torch.testing.assert_close(q.entropy(), ref.entropy())
    for name in ("mean", "mode", "stddev", "variance"):
        torch.testing.assert_close(getattr(q, name), getattr(ref, name))
    assert q.batch_shape == ref.batch_shape == (4, 3) and q.event_shape == ref.event_shape == (5,)
    assert isinstance(q, Independent) and isinstance(q.base_dist, Normal)


def test_rsample_draws_the_same_noise_as_torch_and_is_differentiable():
    loc = torch.randn(3, 4, requires_grad=True)
    log_scale = torch.randn(3, 4, requires_grad=True)
    q = DiagonalNormal(loc, log_scale.exp(), log_scale)
    torch.manual_seed(5)
    z = q.rsample((6,))
    torch.manual_seed(5)
    z_ref = Independent(Normal(loc, log_scale.exp()), 1).rsample((6,))
    assert z.shape == (6, 3, 4)
    assert torch.equal(z, z_ref)
    z.sum().backward()
    assert loc.grad is not None and log_scale.grad is not None
    s = q.sample((2,))
    assert s.shape == (2, 3, 4) and not s.requires_grad


def test_sample_moments():
    q, _ = _pair(batch=(2,), d=3)
    z = q.sample((200_000,))
    se = q.stddev / math.sqrt(200_000)
    assert ((z.mean(0) - q.mean).abs() < 5 * se).all()
    torch.testing.assert_close(z.std(0), q.stddev, rtol=0.02, atol=0)


def test_expand():
    q, ref = _pair(batch=(1, 3))
    e = q.expand((4, 3))
    assert e.batch_shape == (4, 3) and e.event_shape == (5,)
    z = torch.randn(4, 3, 5, dtype=torch.float64)
    torch.testing.assert_close(e.log_prob(z), ref.expand((4, 3)).log_prob(z))


def test_kl_matches_torch_closed_form():
    q, q_ref = _pair(seed=1)
    p, p_ref = _pair(seed=2)
    torch.testing.assert_close(kl_divergence(q, p), kl_divergence(q_ref, p_ref))  # DiagonalNormal, DiagonalNormal
    torch.testing.assert_close(kl_divergence(q, p_ref), kl_divergence(q_ref, p_ref))  # DiagonalNormal, Independent
    torch.testing.assert_close(kl_divergence(p_ref, q), kl_divergence(p_ref, q_ref))  # Independent, DiagonalNormal
    std = Independent(Normal(torch.zeros(5, dtype=torch.float64), torch.ones(5, dtype=torch.float64)), 1)
    torch.testing.assert_close(kl_divergence(q, std), kl_divergence(q_ref, std))


def test_kl_agrees_with_monte_carlo():
    """KL(q || p) = E_q[log q - log p] within 4 standard errors, for a standard normal and a general p."""
    q, _ = _pair(batch=(6,), d=4, seed=3)
    p, _ = _pair(batch=(6,), d=4, seed=4)
    std = Independent(Normal(torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)), 1)
    z = q.sample((100_000,))
    for target in (std, p):
        mc = q.log_prob(z) - target.log_prob(z)
        se = mc.std(0) / math.sqrt(z.shape[0])
        assert ((kl_divergence(q, target) - mc.mean(0)).abs() < 4 * se).all()


def test_kl_to_other_independent_falls_back_to_torch():
    """An `Independent` whose base is not a Normal goes through torch's own rules."""
    from torch.distributions import Laplace

    q, q_ref = _pair(batch=(2,), d=3)
    lap = Independent(Laplace(torch.zeros(2, 3, dtype=torch.float64), torch.ones(2, 3, dtype=torch.float64)), 1)
    torch.testing.assert_close(kl_divergence(q, lap), kl_divergence(q_ref, lap))


def test_posterior_family_returns_diagonal_normal_with_clamped_variance():
    fam = DiagonalGaussian(in_features=6, latent_dim=3, min_log_var=-1.0, max_log_var=0.5)
    with torch.no_grad():
        fam.head.bias[3:] = torch.tensor([-5.0, 0.0, 5.0])
    q = fam(torch.zeros(2, 6))
    assert isinstance(q, DiagonalNormal) and q.batch_shape == (2,) and q.event_shape == (3,)
    torch.testing.assert_close(q.variance[0], torch.tensor([-1.0, 0.0, 0.5]).exp())
    torch.testing.assert_close(q.log_scale, q.scale.log())
