"""Estimators against the linear-Gaussian model, whose log p(x) is exact.

Monte Carlo error: each check states its tolerance in standard errors (se) computed from the samples
themselves, so a failure means a biased estimator, not bad luck (4 se: p < 1e-4 per check).
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import linear_gaussian, set_encoder
from torch.func import functional_call

from vaelab.evaluation import evaluate_log_likelihood, importance_sampled_log_likelihood
from vaelab.objectives import ELBO, IWAE


@pytest.fixture
def model_and_data():
    model = linear_gaussian(x_dim=6, latent_dim=3, sigma=0.8)
    x = model.marginal().sample((16,))
    return model, x


def test_exact_posterior_is_bayes_rule(model_and_data):
    """log p(z|x) = log p(x,z) - log p(x) at random z: the closed forms agree with each other."""
    model, x = model_and_data
    z = torch.randn(5, x.shape[0], 3, dtype=x.dtype)
    lhs = model.exact_posterior(x).log_prob(z)
    rhs = model.log_joint(x, z) - model.exact_log_marginal(x)
    torch.testing.assert_close(lhs, rhs)


def test_importance_sampling_converges_to_exact(model_and_data):
    """IS with k=5000 from a good (diagonal) proposal is within 4 delta-method se of exact log p(x)."""
    model, x = model_and_data
    set_encoder(model, var_scale=1.5)
    est = importance_sampled_log_likelihood(model, x, samples=5000, max_elements=2**12)  # forces many chunks
    exact = model.exact_log_marginal(x)
    # delta method: se(log mean w) ~ sqrt(k / ESS - 1) / sqrt(k)
    se = torch.sqrt((5000 / est.ess - 1).clamp(min=0) / 5000)
    assert ((est.log_likelihood - exact).abs() < 4 * se + 1e-6).all(), (est.log_likelihood - exact, se)
    assert (se < 0.02).all()  # the test is sharp: errors above 0.08 nats would fail


def test_evaluator_batches_agree_with_single_batch(model_and_data):
    model, x = model_and_data
    set_encoder(model, var_scale=1.5)
    torch.manual_seed(1)
    a = evaluate_log_likelihood(model, x, samples=200, batch_size=5, progress=False)
    assert a.log_likelihood.shape == (16,)
    exact = model.exact_log_marginal(x)
    assert (a.log_likelihood - exact).abs().max() < 0.1
    assert (a.elbo <= a.log_likelihood).all()


def _bound_means(objective, model, x, reps: int):
    """Mean and se over `reps` independent evaluations of `objective` (batched: x repeated)."""
    b = objective(model, x.repeat(reps, 1)).reshape(reps, -1).mean(1)  # average over points per repetition
    return b.mean(), b.std() / math.sqrt(reps)


def test_bounds_are_ordered_in_expectation(model_and_data):
    """ELBO <= IWAE_5 <= IWAE_50 <= log p(x) (Burda et al. Thm. 1), each step by more than 4 se."""
    model, x = model_and_data
    set_encoder(model, var_scale=3.0, mean_shift=0.3)  # a poor q makes every gap visible
    exact = model.exact_log_marginal(x).mean()
    with torch.no_grad():
        e, e_se = _bound_means(ELBO(samples=1, analytic_kl=False), model, x, 400)
        ea, ea_se = _bound_means(ELBO(samples=1), model, x, 400)
        i1, i1_se = _bound_means(IWAE(samples=1), model, x, 400)
        i5, i5_se = _bound_means(IWAE(samples=5), model, x, 400)
        i50, i50_se = _bound_means(IWAE(samples=50), model, x, 400)
    assert abs(e - ea) < 4 * (e_se + ea_se) and abs(e - i1) < 4 * (e_se + i1_se)  # all three are the ELBO
    assert e + 4 * (e_se + i5_se) < i5
    assert i5 + 4 * (i5_se + i50_se) < i50
    assert i50 < exact + 4 * i50_se


def test_analytic_and_monte_carlo_kl_agree(model_and_data):
    model, x = model_and_data
    set_encoder(model, var_scale=2.0, mean_shift=0.5)
    q = model.posterior(x)
    kl = model.prior.kl(q)
    z = q.sample((20000,))
    mc = q.log_prob(z) - model.prior.log_prob(z)
    se = mc.std(0) / math.sqrt(20000)
    assert ((kl - mc.mean(0)).abs() < 4 * se).all()
    with torch.no_grad():
        analytic = ELBO(samples=4000)(model, x)
        monte_carlo = ELBO(samples=4000, analytic_kl=False)(model, x)
    assert (analytic - monte_carlo).abs().max() < 0.3


def test_entropy_annealing_and_warmup_weights(model_and_data):
    """beta = lambda = 1 is the ELBO; lambda = 0 drops the entropy; beta scales the KL."""
    model, x = model_and_data
    set_encoder(model, var_scale=2.0)
    q = model.posterior(x)
    torch.manual_seed(3)
    full = ELBO(samples=1)(model, x, beta=1.0, entropy_weight=1.0)
    torch.manual_seed(3)
    z = q.rsample((1,))
    log_lik = model.log_likelihood(x, z).mean(0)
    torch.testing.assert_close(full, log_lik - model.prior.kl(q))
    torch.manual_seed(3)
    no_entropy = ELBO(samples=1)(model, x, beta=1.0, entropy_weight=0.0)
    torch.testing.assert_close(no_entropy, log_lik + model.prior.log_prob(z).mean(0))
    torch.manual_seed(3)
    half_kl = ELBO(samples=1)(model, x, beta=0.5)
    torch.testing.assert_close(half_kl, log_lik - 0.5 * model.prior.kl(q))


class _Bound(torch.nn.Module):
    """`objective(model, x)` as a module, so torch.func.functional_call can swap parameters in."""

    def __init__(self, model, objective):
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, x):
        return self.objective(self.model, x)


@pytest.mark.parametrize("objective", [ELBO(samples=3), ELBO(samples=3, analytic_kl=False), IWAE(samples=4)])
def test_gradients_match_finite_differences(model_and_data, objective):
    """Reparameterised gradients (with the noise held fixed) against central differences, float64."""
    model, x = model_and_data
    set_encoder(model, var_scale=1.5)
    bound = _Bound(model, objective)
    names = ["model.decoder.body.0.weight", "model.posterior_family.head.weight", "model.posterior_family.head.bias"]
    values = {n: p.detach().clone().requires_grad_() for n, p in bound.named_parameters() if n in names}

    def f(*params):
        torch.manual_seed(123)  # the same noise at every evaluation: a deterministic function of params
        return functional_call(bound, dict(zip(names, params, strict=True)), (x,), strict=False).sum()

    assert torch.autograd.gradcheck(f, tuple(values[n] for n in names), eps=1e-6, atol=1e-5)
