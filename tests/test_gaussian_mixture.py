"""The one-matmul diagonal-Gaussian mixture density: values against per-component evaluations, gradients by
finite differences (float64); its floored log-sum-exp against torch.logsumexp."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Independent, Normal

from vaelab.distributions.gaussian_mixture import (
    diagonal_gaussian_components_log_prob,
    diagonal_gaussian_mixture_log_prob,
    logsumexp_floored,
)


def _inputs(seed: int = 0, k: int = 5, d: int = 4):
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(k, d, generator=g, dtype=torch.float64) * 2
    log_var = torch.randn(k, d, generator=g, dtype=torch.float64)
    log_w = torch.log_softmax(torch.randn(k, generator=g, dtype=torch.float64), 0)
    z = torch.randn(2, 3, d, generator=g, dtype=torch.float64) * 3
    return z, loc, log_var, log_w


def test_components_equal_each_gaussian_log_density():
    z, loc, log_var, _ = _inputs()
    ours = diagonal_gaussian_components_log_prob(z, loc, log_var)  # [2, 3, K]
    for k in range(loc.shape[0]):
        ref = Independent(Normal(loc[k], torch.exp(0.5 * log_var[k])), 1).log_prob(z)
        torch.testing.assert_close(ours[..., k], ref)


def test_mixture_gradients_match_finite_differences():
    z, loc, log_var, log_w = (t.requires_grad_() for t in _inputs(1, k=3, d=2))
    torch.autograd.gradcheck(diagonal_gaussian_mixture_log_prob, (z, loc, log_var, log_w))
    torch.autograd.gradcheck(diagonal_gaussian_mixture_log_prob, (z, loc, log_var))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_floored_logsumexp_equals_torch_logsumexp_with_underflowing_terms(dtype):
    g = torch.Generator().manual_seed(2)
    # spreads of 0.1 to 3000 per row: most terms are far below the largest (exp underflows to 0 or subnormal)
    t = (torch.randn(64, 500, generator=g, dtype=torch.float64) * torch.logspace(-1, 3.5, 64)[:, None]).to(dtype)
    t.requires_grad_()
    ours, ref = logsumexp_floored(t), torch.logsumexp(t, -1)
    torch.testing.assert_close(ours, ref)
    (g_ours,) = torch.autograd.grad(ours.sum(), t)
    (g_ref,) = torch.autograd.grad(ref.sum(), t)
    # the softmax weights, equal up to round-off (in float32, |t| up to ~1e4 leaves t - logsumexp ~1e-3 off)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-4 if dtype == torch.float32 else 1e-12, atol=1e-30)
    special = torch.tensor(
        [[-torch.inf, -torch.inf], [torch.inf, 0.0], [torch.nan, 0.0], [-torch.inf, 3.0]], dtype=dtype
    )
    torch.testing.assert_close(logsumexp_floored(special), torch.logsumexp(special, -1), equal_nan=True)


def test_floored_logsumexp_gradients_match_finite_differences():
    t = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(logsumexp_floored, (t * 5,))
