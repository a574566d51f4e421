"""Estimators against the linear-Gaussian model, whose log p(x) is exact.

Monte Carlo error: each check states its tolerance in standard errors (se) computed from the samples
themselves, so a failure means a biased estimator, not bad luck (4 se: p < 1e-4 per check).
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import inflated_posterior, linear_gaussian, set_encoder
from torch.func import functional_call

from vaelab.evaluation import ISEstimate, evaluate_log_likelihood, importance_sampled_log_likelihood
from vaelab.evaluation.loglik import LOW_ESS, reliability_warnings
from vaelab.objectives import ELBO, IWAE
from vaelab.objectives.bounds import delta_method_se


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


# --- Monte Carlo error bars: coverage of the delta-method interval, and its limits ----------------------------
def _replicated_is(latent_dim: int, scale: float, samples: int, points: int = 5, reps: int = 200, seed: int = 0):
    """`reps` independent IS estimates of log p(x) for `points` points, batched (x repeated): proposal the exact
    posterior with its covariance times `scale` (`helpers.inflated_posterior`). Returns the per-replicate
    `ISEstimate`s (`[points]` each) and the exact log p(x) `[points]`."""
    torch.manual_seed(seed)
    model = linear_gaussian(x_dim=8, latent_dim=latent_dim, sigma=0.8)
    x = model.marginal().sample((points,))
    xr = x.repeat(reps, 1)
    est = importance_sampled_log_likelihood(model, xr, samples, q=inflated_posterior(model, xr, scale))
    parts = [ISEstimate(*(t.reshape(reps, points)[r] for t in est._tensors())) for r in range(reps)]
    return parts, model.exact_log_marginal(x).detach()


def _coverage(parts, exact) -> tuple[float, float]:
    """Shares of the nominal 95% intervals log p^ +- 1.96 se that cover the exact value: per point (mc_se) and for
    the mean over points (the summary's log_likelihood_mc_se)."""
    per_point = torch.stack([((p.log_likelihood - exact).abs() < 1.96 * p.mc_se) for p in parts]).double().mean()
    summaries = [p.summary() for p in parts]
    mean = [abs(s["log_likelihood"] - float(exact.mean())) < 1.96 * s["log_likelihood_mc_se"] for s in summaries]
    return float(per_point), sum(mean) / len(mean)


@pytest.mark.parametrize(("latent_dim", "scale", "samples"), [(10, 1.3, 500), (50, 1.15, 400)])
def test_monte_carlo_interval_covers_exact_log_px_as_claimed(latent_dim, scale, samples):
    """Where the ESS is healthy (median ~260-380 of S), 1000 per-point intervals +-1.96 mc_se (200 replicates x 5
    points) cover the exact log p(x) 95% of the time within 3 binomial sd (measured: 0.943 at D = 10, 0.961 at
    D = 50), and 200 intervals of the mean over the 5 points within 4 sd (0.945, 0.950); no warning fires. The
    spread over data, the old "+-", is a different quantity: here 16x and 73x the Monte Carlo se."""
    parts, exact = _replicated_is(latent_dim, scale, samples)
    per_point, mean = _coverage(parts, exact)
    assert abs(per_point - 0.95) < 3 * math.sqrt(0.95 * 0.05 / 1000), per_point
    assert abs(mean - 0.95) < 4 * math.sqrt(0.95 * 0.05 / 200), mean
    s = parts[0].summary()
    assert s["ess_median"] > 200 and s["ess_low_share"] == 0 and reliability_warnings(s) == []
    assert s["log_likelihood_se_data"] == s["log_likelihood_se"] > 10 * s["log_likelihood_mc_se"]


def test_low_ess_breaks_the_interval_and_the_warning_says_so():
    """D = 50 with the posterior covariance tripled: ESS ~2 of 300, the delta-method se (at most 1 nat) covers the
    exact log p(x) in 16% of cases (the mean over points: none of 40) for actual errors of several nats; every
    point is flagged and the warning names the ESS and the delta method."""
    parts, exact = _replicated_is(50, 3.0, 300, reps=40)
    per_point, mean = _coverage(parts, exact)
    assert per_point < 0.4 and mean < 0.2, (per_point, mean)
    assert max(float(p.mc_se.max()) for p in parts) <= 1.0  # the delta method cannot report more than a nat
    s = parts[0].summary()
    assert s["ess_median"] < 5 and s["ess_low_share"] == 1.0
    (warning,) = reliability_warnings(s)
    assert f"ESS < {LOW_ESS}" in warning and "delta method" in warning and "\n" not in warning


def test_delta_method_se_matches_its_formula_in_log_space():
    """se = sqrt(var(w) / S) / mean(w) with the unbiased variance, from log sum w and log sum w^2 alone, also for
    weights far outside the float range."""
    g = torch.Generator().manual_seed(0)
    log_w = torch.randn(50, 3, generator=g, dtype=torch.float64) * 2
    w = log_w.exp()
    direct = w.std(0) / math.sqrt(50) / w.mean(0)
    got = delta_method_se(torch.logsumexp(log_w, 0), torch.logsumexp(2 * log_w, 0), 50)
    torch.testing.assert_close(got, direct)
    shifted = delta_method_se(torch.logsumexp(log_w + 1e4, 0), torch.logsumexp(2 * (log_w + 1e4), 0), 50)
    torch.testing.assert_close(shifted, direct)
    assert delta_method_se(torch.zeros(2), torch.zeros(2), 1).isnan().all()


def test_stratified_estimate_takes_its_error_from_the_per_draw_sums():
    """SIWAE's estimate (1/T) sum_t u_t, u_t = sum_k alpha_k w_tk: its delta-method se is that of the T iid u_t,
    not of the T K stratified weights; checked against the formula on the same draws (seeded)."""
    from test_stratified import _shifted_mixture

    from vaelab.evaluation.stratified import stratified_log_likelihood
    from vaelab.objectives.stratified import stratified_log_weights

    model = linear_gaussian(x_dim=4, latent_dim=2, sigma=0.7)
    x = model.marginal().sample((3,))
    q = _shifted_mixture(model, x)
    torch.manual_seed(4)
    est = stratified_log_likelihood(model, x, samples=60, q=q)  # T = 20 per component, one chunk
    torch.manual_seed(4)
    d = stratified_log_weights(model, x, 20, q)
    u = torch.exp(torch.logsumexp(d.parts.log_w + d.log_alpha, 1))  # [T, B]
    torch.testing.assert_close(est.log_likelihood, u.mean(0).log())
    torch.testing.assert_close(est.mc_se, u.std(0) / math.sqrt(20) / u.mean(0))


def test_non_finite_points_are_counted_never_averaged_silently(tmp_path):
    """A NaN and a -Inf estimate: the means over all points are non-finite (they include them), the counts say
    how many, `finite_only` repeats the means over the rest, a warning says so; the histogram is drawn."""
    ll = torch.tensor([-90.0, float("nan"), -110.0, float("-inf"), -100.0], dtype=torch.float64)
    elbo = torch.tensor([-95.0, -100.0, float("nan"), -120.0, -104.0], dtype=torch.float64)
    est = ISEstimate(ll, elbo, torch.full((5,), 50.0), torch.full((5,), 0.1))
    s = est.summary()
    assert math.isnan(s["log_likelihood"]) and math.isnan(s["elbo"])
    assert (s["n"], s["n_nonfinite"], s["elbo_n_nonfinite"]) == (5, 2, 1)
    f = s["finite_only"]
    assert f["n"] == 2 and f["log_likelihood"] == pytest.approx(-95.0) and f["elbo"] == pytest.approx(-99.5)
    assert f["log_likelihood_mc_se"] == pytest.approx(math.sqrt(2 * 0.01) / 2)
    (warning,) = reliability_warnings(s)
    assert "2 log p^ and 1 ELBO values" in warning and "excluded explicitly" in warning
    assert "finite_only" not in ISEstimate(ll[[0, 2]], elbo[[0, 1]], est.ess[:2], est.mc_se[:2]).summary()
    from vaelab.viz import save_histogram

    assert save_histogram(ll, tmp_path / "h.png", "log p(x)").is_file()
    assert save_histogram(torch.full((3,), float("nan")), tmp_path / "nan.png", "log p(x)").is_file()
