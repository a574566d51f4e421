"""Mixture posteriors and the stratified objectives (SIWAE, Morningstar et al.): exact answers on linear-Gaussian
models (exact log p(x) and posterior), quadrature in 1-D, brute force, gradcheck in float64.

Monte Carlo tolerances are in standard errors (se) computed from the replicates themselves: 4 se, p < 1e-4 per
check, so a failure means a wrong estimator, not bad luck.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import linear_gaussian
from torch.distributions import MultivariateNormal

from vaelab.config.build import OBJECTIVES
from vaelab.config.registry import POSTERIORS
from vaelab.distributions import DiagonalNormal, ReparameterizedMixture
from vaelab.errors import ConfigError
from vaelab.models import VAE
from vaelab.nets import MLP
from vaelab.objectives import ELBO, IWAE, SELBO, SIWAE, sample_log_weights, stratified_log_weights
from vaelab.objectives.mixture_penalties import entropy_threshold, mixture_penalty
from vaelab.objectives.stratified import miwae, selbo, siwae
from vaelab.posteriors import DiagonalGaussian, GaussianMixture

F64 = torch.float64


def _diag_mixture(logits, loc, log_scale) -> ReparameterizedMixture:
    return ReparameterizedMixture(logits, DiagonalNormal(loc, log_scale.exp(), log_scale))


def _exact_moments(model, x):
    """Mean `[B, D]` and covariance `[B, D, D]` of the exact posterior, as constants (no path to the model)."""
    with torch.no_grad():
        p = model.exact_posterior(x)
        return p.mean, p.covariance_matrix


def _shifted_mixture(model, x, reps: int = 1) -> ReparameterizedMixture:
    """A deliberately imperfect K = 3 diagonal mixture around the exact posterior of the linear-Gaussian model:
    component means shifted by (0, +1.5, -1.5) along z_1, variances 1.3 x the exact marginal ones, weights
    (0.5, 0.3, 0.2); batch `[reps * B]` (x repeated `reps` times)."""
    mean, cov = _exact_moments(model, x)
    B, D = mean.shape
    shift = torch.zeros(3, D, dtype=F64)
    shift[1, 0], shift[2, 0] = 1.5, -1.5
    loc = (mean.unsqueeze(1) + shift).repeat(reps, 1, 1)
    log_scale = (0.5 * torch.log(1.3 * torch.diagonal(cov, dim1=-2, dim2=-1))).unsqueeze(1).expand(-1, 3, -1)
    logits = torch.tensor([0.5, 0.3, 0.2], dtype=F64).log().expand(reps * B, 3)
    return _diag_mixture(logits, loc, log_scale.repeat(reps, 1, 1))


# --- the family and the distribution -------------------------------------------------------------------------
@pytest.mark.parametrize("covariance", ["diagonal", "full"])
def test_gaussian_mixture_family_builds_a_mixture_of_its_heads(covariance):
    fam = POSTERIORS.build("gaussian_mixture", {"components": 3, "covariance": covariance}, in_features=5, latent_dim=2)
    fam = fam.double()
    h = torch.randn(4, 5, dtype=F64)
    q = fam(h)
    assert isinstance(q, ReparameterizedMixture) and q.batch_shape == (4,) and q.event_shape == (2,)
    out = fam.head(h).reshape(4, 3, -1)
    torch.testing.assert_close(q.log_weights, torch.log_softmax(out[..., 0], -1))
    torch.testing.assert_close(q.component_distribution.mean, out[..., 1:3])
    z = q.stratified_rsample(5)
    assert z.shape == (5, 3, 4, 2)
    torch.testing.assert_close(q.stratified_log_prob(z), q.log_prob(z))
    uniform = GaussianMixture(5, 2, components=3, covariance=covariance, learn_weights=False).double()(h)
    torch.testing.assert_close(uniform.log_weights, torch.full((4, 3), -math.log(3), dtype=F64))
    with pytest.raises(ConfigError, match="covariance"):
        POSTERIORS.build("gaussian_mixture", {"covariance": "banded"}, in_features=5, latent_dim=2)


def test_stratified_log_prob_is_the_mixture_density_in_float32_too():
    """The matmul form centred on each draw's component equals the direct density: float64 to round-off, and in
    float32 for narrow components far from the origin as accurately as the direct float32 form."""
    g = torch.Generator().manual_seed(0)
    logits, loc = torch.randn(5, 4, generator=g, dtype=F64), torch.randn(5, 4, 3, generator=g, dtype=F64) * 2
    q = _diag_mixture(logits, loc, 0.5 * torch.randn(5, 4, 3, generator=g, dtype=F64))
    z = q.stratified_rsample(6)
    torch.testing.assert_close(q.stratified_log_prob(z), q.log_prob(z), rtol=0, atol=1e-12)
    narrow = _diag_mixture(logits.float(), loc.float() * 3 + 5, torch.full((5, 4, 3), -5.0))
    z = narrow.stratified_rsample(50)
    exact = _diag_mixture(logits, loc * 3 + 5, torch.full((5, 4, 3), -5.0, dtype=F64)).log_prob(z.double())
    direct_err = (narrow.log_prob(z).double() - exact).abs().max()
    assert (narrow.stratified_log_prob(z).double() - exact).abs().max() <= 4 * direct_err + 1e-5


def test_elbo_and_iwae_refuse_a_mixture_posterior_with_a_config_error():
    model = linear_gaussian(x_dim=4, latent_dim=2)
    model.posterior = lambda x: _shifted_mixture(model, x)
    x = model.marginal().sample((3,))
    for objective in (ELBO(), ELBO(analytic_kl=False), IWAE(5)):
        with pytest.raises(ConfigError, match="selbo or siwae"):
            objective(model, x)


# --- reductions at K = 1 -----------------------------------------------------------------------------------------
def test_k1_reduces_to_elbo_and_iwae_with_the_same_noise():
    """SELBO and SIWAE of a one-component mixture equal the Monte Carlo ELBO and IWAE-T of its component from the
    same noise (the stratified draws [T, 1, B, D] use the same normal variates as [T, B, D]); and a posterior that
    is not a mixture goes through the same code as K = 1."""
    model = linear_gaussian(x_dim=5, latent_dim=3)
    x = model.marginal().sample((7,))
    mixture = GaussianMixture(5, 3, components=1).double()
    with torch.no_grad():
        mixture.head.weight[1:] = torch.randn(6, 5, dtype=F64) * 0.3
        mixture.head.bias[1:] = torch.randn(6, dtype=F64) * 0.3
    gauss = DiagonalGaussian(5, 3).double()
    gauss.head.load_state_dict({"weight": mixture.head.weight[1:], "bias": mixture.head.bias[1:]})
    mix_model = VAE(MLP(5, []), mixture, model.prior, model.decoder, model.likelihood)
    gauss_model = VAE(MLP(5, []), gauss, model.prior, model.decoder, model.likelihood)
    for stratified, plain in ((SELBO(4), ELBO(4, analytic_kl=False)), (SIWAE(4), IWAE(4))):
        for beta, lam in ((1.0, 1.0), (0.3, 0.5)):
            torch.manual_seed(3)
            a = stratified(mix_model, x, beta, lam)
            torch.manual_seed(3)
            b = plain(gauss_model, x, beta, lam)
            torch.manual_seed(3)
            c = stratified(gauss_model, x, beta, lam)
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
            torch.testing.assert_close(c, b, rtol=0, atol=1e-12)


def test_bound_functions_against_brute_force_sums():
    g = torch.Generator().manual_seed(1)
    log_alpha = torch.log_softmax(torch.randn(3, 2, generator=g, dtype=F64), 0)  # [K, B]
    log_w = torch.randn(4, 3, 2, generator=g, dtype=F64)  # [T, K, B]
    a, w = log_alpha.exp(), log_w.exp()
    torch.testing.assert_close(selbo(log_alpha, log_w), (a * log_w).sum(1).mean(0))
    torch.testing.assert_close(siwae(log_alpha, log_w), torch.log((a * w).sum(1).mean(0)))
    torch.testing.assert_close(miwae(log_alpha, log_w), torch.log((a * w).sum(1)).mean(0))


# --- expectations against exact answers ------------------------------------------------------------------------
def _replicates(model, x, T: int, reps: int, stl: bool = False):
    """SIWAE-T and SELBO-T values `[reps, B]` and IWAE-T with T ancestral draws from the same mixture."""
    B = x.shape[0]
    xr = x.repeat(reps, 1)
    q = _shifted_mixture(model, x, reps)
    with torch.no_grad():
        d = stratified_log_weights(model, xr, T, q)
        lw_iwae, _ = sample_log_weights(model, xr, T, q)
    iwae = torch.logsumexp(lw_iwae.log_w, 0) - math.log(T)
    return (
        siwae(d.log_alpha, d.parts.log_w).reshape(reps, B),
        selbo(d.log_alpha, d.parts.log_w).reshape(reps, B),
        iwae.reshape(reps, B),
    )


def test_siwae_is_above_iwae_with_t_draws_and_below_log_px():
    """Theorem A.2 compares SIWAE-T (T draws from each of the K components, TK in all) with IWAE-T using T draws
    from the mixture q itself (not TK). Both are below the exact log p(x); here SIWAE-T exceeds IWAE-T by a margin
    of many se, and the ordering holds at T = 1 (SIWAE-1 >= ELBO) and T = 4."""
    torch.manual_seed(0)
    model = linear_gaussian(x_dim=4, latent_dim=2, sigma=0.7)
    x = model.marginal().sample((6,))
    exact = model.exact_log_marginal(x)
    reps = 4000
    for T in (1, 4):
        s, _, i = _replicates(model, x, T, reps)
        se_s, se_i = s.std(0) / math.sqrt(reps), i.std(0) / math.sqrt(reps)
        gap = s.mean(0) - i.mean(0)
        assert (gap > 4 * torch.sqrt(se_s**2 + se_i**2)).all(), (T, gap, se_s, se_i)
        assert (s.mean(0) <= exact + 4 * se_s).all() and (i.mean(0) <= exact + 4 * se_i).all()
        if T == 1:
            assert (exact - s.mean(0) > 4 * se_s).all()  # a strict bound for this imperfect q


def _quadrature_grid(lo: float, hi: float, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.linspace(lo, hi, n, dtype=F64)
    w = torch.full((n,), (hi - lo) / (n - 1), dtype=F64)
    w[0] = w[-1] = w[0] / 2  # trapezoid rule
    return z, w


def _quadrature_1d(model, x, q):
    """Exact values for a 1-D latent and a K = 2 mixture q, by quadrature independent of the estimators: the
    mixture ELBO int q (log p(x, z) - log q), E[SIWAE-1] = int int q_1(z1) q_2(z2) log(a_1 w(z1) + a_2 w(z2)), and
    the PPD objective's large-T limit log int q p(x|z) - KL(q || r)."""
    z, w = _quadrature_grid(-9.0, 9.0, 3001)
    zz = z.reshape(-1, 1, 1)
    q_z = q.log_prob(zz).exp()[:, 0]
    log_w = model.log_joint(x, zz) - q.log_prob(zz)  # [N, 1]
    elbo_exact = (w * q_z * log_w[:, 0]).sum()
    comp = q.component_distribution.log_prob(z.reshape(-1, 1, 1, 1)).exp()[:, 0]  # [N, 2]
    v = q.log_weights.exp()[0].log() + log_w  # [N, 2] log(a_k w(z)), by the grid point
    siwae1 = torch.logaddexp(v[:, 0].unsqueeze(1), v[:, 1].unsqueeze(0))  # [N (z1), N (z2)]
    siwae1_exact = torch.einsum("i,j,ij->", w * comp[:, 0], w * comp[:, 1], siwae1)
    predictive = (w * q_z * model.log_likelihood(x, zz)[:, 0].exp()).sum().log()
    kl = (w * q_z * (q.log_prob(zz) - model.prior.log_prob(zz))[:, 0]).sum()
    return elbo_exact, siwae1_exact, predictive - kl


def _one_d_mixture(reps: int = 1):
    """The 1-D linear-Gaussian model, one data point and a K = 2 mixture q (batch `[reps]`, the point repeated)."""
    torch.manual_seed(0)
    model = linear_gaussian(x_dim=2, latent_dim=1, sigma=0.6)
    x = model.marginal().sample((1,))
    loc = torch.tensor([[[-0.8], [1.1]]], dtype=F64)
    log_scale = torch.tensor([[[-0.4], [-0.9]]], dtype=F64)
    logits = torch.tensor([[0.2, -0.3]], dtype=F64)
    q = _diag_mixture(logits, loc, log_scale)
    qr = _diag_mixture(logits.expand(reps, 2), loc.expand(reps, 2, 1), log_scale.expand(reps, 2, 1))
    return model, x, q, qr


def test_selbo_and_siwae1_expectations_match_quadrature_in_1d():
    """1-D latent, K = 2: E[SELBO-T] is the mixture ELBO int q (log p(x, z) - log q) dz (1-D quadrature), and
    E[SIWAE-1] = int int q_1(z1) q_2(z2) log(a_1 w(z1) + a_2 w(z2)) dz1 dz2 (2-D quadrature): both computed
    independently of the estimator, and matched by the Monte Carlo means within 4 se."""
    reps = 20000
    model, x, q, qr = _one_d_mixture(reps)
    elbo_exact, siwae1_exact, _ = _quadrature_1d(model, x, q)
    for T in (1, 3):
        d = stratified_log_weights(model, x.expand(reps, 2), T, qr)
        est = selbo(d.log_alpha, d.parts.log_w)
        assert abs(est.mean() - elbo_exact) < 4 * est.std() / math.sqrt(reps), (T, est.mean(), elbo_exact)
    d = stratified_log_weights(model, x.expand(reps, 2), 1, qr)
    est = siwae(d.log_alpha, d.parts.log_w)
    assert abs(est.mean() - siwae1_exact) < 4 * est.std() / math.sqrt(reps), (est.mean(), siwae1_exact)
    assert siwae1_exact > elbo_exact + 0.02  # the two quantities differ: the test tells them apart


def _brute_force(parts, log_alpha, beta: float, lam: float) -> tuple[list[float], list[float], list[float]]:
    """SELBO, SIWAE and PPD per point by explicit sums over t and k of Python floats, from the log-weight parts
    `[T, K, B]` and log alpha `[K, B]` with annealed weights log p(x|z) + beta (log p(z) - lam log q)."""
    T, K, B = parts.log_likelihood.shape
    out = [], [], []
    for b in range(B):
        a = [math.exp(float(log_alpha[k, b])) for k in range(K)]
        lik = [[float(parts.log_likelihood[t, k, b]) for k in range(K)] for t in range(T)]
        ratio = [
            [beta * float(parts.log_prior[t, k, b] - lam * parts.log_q[t, k, b]) for k in range(K)] for t in range(T)
        ]
        log_w = [[lik[t][k] + ratio[t][k] for k in range(K)] for t in range(T)]
        out[0].append(sum(a[k] * sum(log_w[t][k] for t in range(T)) / T for k in range(K)))
        out[1].append(math.log(sum(a[k] * math.exp(log_w[t][k]) for t in range(T) for k in range(K)) / T))
        predictive = math.log(sum(a[k] * sum(math.exp(lik[t][k]) for t in range(T)) / T for k in range(K)))
        out[2].append(predictive + sum(a[k] * sum(ratio[t][k] for t in range(T)) / T for k in range(K)))
    return out


@pytest.mark.parametrize(("beta", "lam"), [(1.0, 1.0), (0.3, 0.5)])
def test_ciwae_and_ppd_values_against_brute_force_sums(beta, lam):
    """C-IWAE = c SELBO + (1 - c) SIWAE and PPD = log sum_k alpha_k (1/T) sum_t p(x|z_tk) + beta sum_k alpha_k (1/T)
    sum_t (log p(z_tk) - lam log q(z_tk)) on the objectives' own draws (seeded), against loops over t and k."""
    from vaelab.objectives.stratified import CIWAE, PPD

    model = linear_gaussian(x_dim=4, latent_dim=2, sigma=0.7)
    x = model.marginal().sample((3,))
    mixture = lambda _x: _shifted_mixture(model, x)  # noqa: E731
    model.posterior = mixture
    for objective in (CIWAE(samples=4, elbo_weight=0.3), PPD(samples=4)):
        torch.manual_seed(11)
        with torch.no_grad():
            got = objective(model, x, beta, lam)
        torch.manual_seed(11)
        with torch.no_grad():
            d = stratified_log_weights(model, x, 4, mixture(x))
        s_elbo, s_iwae, ppd = _brute_force(d.parts, d.log_alpha, beta, lam)
        want = [0.3 * a + 0.7 * b for a, b in zip(s_elbo, s_iwae, strict=True)] if isinstance(objective, CIWAE) else ppd
        torch.testing.assert_close(got, torch.tensor(want, dtype=F64), rtol=0, atol=1e-10)


def test_ciwae_and_ppd_expectations_match_quadrature_in_1d():
    """In 1-D with K = 2: E[C-IWAE-1] = c ELBO + (1 - c) E[SIWAE-1] (both by quadrature) within 4 se, and PPD with T =
    2000 draws per component reaches its limit log E_q p(x|z) - KL(q || r) (quadrature) within 4 se plus its bias
    var / (2 n mean^2), n = T K; the PPD limit differs from both bounds, so the test tells them apart."""
    from vaelab.objectives.stratified import CIWAE, PPD

    reps = 20000
    model, x, q, qr = _one_d_mixture(reps)
    elbo_exact, siwae1_exact, ppd_limit = _quadrature_1d(model, x, q)
    model.posterior = lambda _x: qr
    with torch.no_grad():
        est = CIWAE(samples=1, elbo_weight=0.4)(model, x.expand(reps, 2))
    exact = 0.4 * elbo_exact + 0.6 * siwae1_exact
    assert abs(est.mean() - exact) < 4 * est.std() / math.sqrt(reps), (est.mean(), exact)
    reps = 50
    model, x, q, qr = _one_d_mixture(reps)
    model.posterior = lambda _x: qr
    with torch.no_grad():
        est = PPD(samples=2000)(model, x.expand(reps, 2))
    assert abs(est.mean() - ppd_limit) < 4 * est.std() / math.sqrt(reps) + 0.005, (est.mean(), ppd_limit)
    assert min(abs(ppd_limit - elbo_exact), abs(ppd_limit - siwae1_exact)) > 0.05


# --- gradients ----------------------------------------------------------------------------------------------------
def _objective_of_parameters(model, x, objective, covariance: str, seed: int = 7):
    """A function of the mixture's raw parameters that draws fixed noise (seeded) and returns the objective."""
    D = model.latent_dim

    def f(logits, loc, scale_param):
        if covariance == "diagonal":
            q = _diag_mixture(logits, loc, scale_param)
        else:
            q = ReparameterizedMixture(
                logits, MultivariateNormal(loc, scale_tril=scale_param.tril(), validate_args=False)
            )
        torch.manual_seed(seed)
        model.posterior = lambda _x, q=q: q
        return objective(model, x, 0.7, 0.9)

    return f, D


@pytest.mark.parametrize(
    "name, covariance",
    [(n, "diagonal") for n in ("selbo", "siwae", "ciwae", "miwae", "ppd")] + [("selbo", "full"), ("siwae", "full")],
)
def test_stratified_objectives_pass_gradcheck(name, covariance):
    torch.manual_seed(0)
    model = linear_gaussian(x_dim=3, latent_dim=2, sigma=0.8)
    x = model.marginal().sample((2,))
    f, D = _objective_of_parameters(model, x, OBJECTIVES.build(name, {"samples": 3}), covariance)
    logits = torch.randn(2, 3, dtype=F64, requires_grad=True)
    loc = torch.randn(2, 3, D, dtype=F64, requires_grad=True)
    if covariance == "diagonal":
        scale = (0.3 * torch.randn(2, 3, D, dtype=F64)).requires_grad_()
    else:
        scale = (torch.eye(D, dtype=F64) + 0.2 * torch.randn(2, 3, D, D, dtype=F64).tril(-1)).requires_grad_()
    assert torch.autograd.gradcheck(f, (logits, loc, scale))


def _frozen_annealed(model, x, frozen, theta, bound, beta: float = 0.7, lam: float = 0.9) -> torch.Tensor:
    """The bound with log-weights log p(x|z) + beta (log p(z) - lambda log q_theta0(z)) at draws z(theta), seeded
    as `_objective_of_parameters` seeds them."""
    torch.manual_seed(5)
    q = _diag_mixture(*theta)
    z = q.stratified_rsample(3)
    log_w = model.log_likelihood(x, z) + beta * (model.prior.log_prob(z) - lam * frozen.log_prob(z))
    return bound(q.log_weights.movedim(-1, 0), log_w).sum()


def test_stl_gradient_is_the_path_derivative():
    """STL's gradient = the derivative of the bound with log q frozen at the current parameters theta_0 (the
    draws and the stratum weights alpha_k still move), checked against central differences of that function."""
    torch.manual_seed(0)
    model = linear_gaussian(x_dim=3, latent_dim=2, sigma=0.8)
    x = model.marginal().sample((2,))
    theta = [torch.randn(2, 3, dtype=F64), torch.randn(2, 3, 2, dtype=F64), 0.3 * torch.randn(2, 3, 2, dtype=F64)]
    frozen = _diag_mixture(*theta)
    eps = 1e-6
    for name, bound in (("stl_selbo", selbo), ("stl_siwae", siwae)):
        params = [t.clone().requires_grad_() for t in theta]
        f, _ = _objective_of_parameters(model, x, OBJECTIVES.build(name, {"samples": 3}), "diagonal", seed=5)
        grads = torch.autograd.grad(f(*params).sum(), params)
        for j, p in enumerate(theta):
            numeric = torch.zeros(p.numel(), dtype=F64)
            for i in range(p.numel()):
                up, down = [t.clone() for t in theta], [t.clone() for t in theta]
                up[j].view(-1)[i] += eps
                down[j].view(-1)[i] -= eps
                diff = _frozen_annealed(model, x, frozen, up, bound) - _frozen_annealed(model, x, frozen, down, bound)
                numeric[i] = diff / (2 * eps)
            torch.testing.assert_close(grads[j].reshape(-1), numeric, rtol=1e-5, atol=1e-6)
        plain = OBJECTIVES.build(name.removeprefix("stl_"), {"samples": 3})
        f_plain, _ = _objective_of_parameters(model, x, plain, "diagonal", seed=5)
        params = [t.clone().requires_grad_() for t in theta]
        assert not torch.allclose(torch.autograd.grad(f_plain(*params).sum(), params)[1], grads[1])  # STL differs


def _per_replicate_gaussian(model, x, reps: int):
    """A diagonal Gaussian q (K = 1, not a mixture) near the exact posterior, with its own leaf parameters per
    replicate `[reps, B, D]`, so one backward pass gives every replicate's gradient."""
    mean, cov = _exact_moments(model, x)
    loc = (mean + 0.3).expand(reps, -1, -1).clone().requires_grad_()
    log_scale = (0.5 * torch.log(1.5 * torch.diagonal(cov, dim1=-2, dim2=-1))).expand(reps, -1, -1).clone()
    log_scale.requires_grad_()
    return loc, log_scale


def test_dreg_is_unbiased_for_iwae_and_has_lower_variance():
    """DReG (K = 1) has the IWAE gradient's expectation for the encoder parameters (4 se), with and without
    annealing (c = beta lambda = 0.6 uses the (1 - c) + c w~ path factor), less variance, and exactly the IWAE
    gradient for the model's parameters from the same draws."""
    torch.manual_seed(0)
    model = linear_gaussian(x_dim=3, latent_dim=2, sigma=0.6)
    x = model.marginal().sample((2,))
    reps, B = 1500, 2
    xr = x.repeat(reps, 1)
    for beta in (1.0, 0.6):
        grads = {}
        for dreg in (False, True):
            loc, log_scale = _per_replicate_gaussian(model, x, reps)
            q = DiagonalNormal(loc.reshape(reps * B, -1), log_scale.exp().reshape(reps * B, -1))
            model.posterior = lambda _x, q=q: q
            torch.manual_seed(11)
            value = SIWAE(samples=5, dreg=dreg)(model, xr, beta, 1.0)
            g = torch.autograd.grad(value.sum(), [loc, log_scale, model.decoder.body[0].weight])
            grads[dreg] = g
            assert torch.isfinite(value).all()
        for j in range(2):  # encoder: unbiased, smaller variance
            a, b = grads[False][j], grads[True][j]
            se = torch.sqrt((a.var(0) + b.var(0)) / reps)
            assert ((a.mean(0) - b.mean(0)).abs() < 4 * se).all(), (beta, j, a.mean(0), b.mean(0), se)
            assert b.var(0).mean() < a.var(0).mean()
        torch.testing.assert_close(grads[True][2], grads[False][2])  # model gradient: IWAE's, same draws
    model.posterior = lambda _x: _shifted_mixture(model, _x)
    with pytest.raises(ConfigError, match="K = 1"):
        SIWAE(samples=2, dreg=True)(model, x)


def test_stl_gradient_vanishes_at_the_exact_posterior():
    """With every component equal to the exact posterior of a linear-Gaussian model, log w = log p(x) for every
    draw: the STL gradients (SELBO, SIWAE, C-IWAE) are zero for every draw (zero variance), the plain SELBO
    gradient is not."""
    torch.manual_seed(0)
    model = linear_gaussian(x_dim=3, latent_dim=2, sigma=0.6)
    x = model.marginal().sample((2,))
    mean, cov = _exact_moments(model, x)
    reps, K = 200, 2
    for name in ("stl_selbo", "stl_siwae", "stl_ciwae", "selbo"):
        logits = torch.tensor([0.4, -0.4], dtype=F64).expand(reps * 2, K).clone().requires_grad_()
        loc = mean.unsqueeze(1).expand(-1, K, -1).repeat(reps, 1, 1).clone().requires_grad_()
        tril = torch.linalg.cholesky(cov).unsqueeze(1).expand(-1, K, -1, -1).repeat(reps, 1, 1, 1).clone()
        tril.requires_grad_()
        q = ReparameterizedMixture(logits, MultivariateNormal(loc, scale_tril=tril, validate_args=False))
        model.posterior = lambda _x, q=q: q
        value = OBJECTIVES.build(name, {"samples": 3})(model, x.repeat(reps, 1))
        torch.testing.assert_close(value, model.exact_log_marginal(x).repeat(reps).detach())
        grads = torch.cat([g.reshape(reps, -1) for g in torch.autograd.grad(value.sum(), [logits, loc, tril])], 1)
        if name.startswith("stl_"):
            assert grads.abs().max() < 1e-10, name
        else:
            assert grads.var(0).max() > 1e-3


# --- penalties, priors, burn-in -----------------------------------------------------------------------------------
def test_mixture_penalties_follow_eqs_4_to_6():
    K, m = 4, 0.95
    rest = (1 - m) / (K - 1)
    assert math.isclose(entropy_threshold(K, m), (m * math.log(m) + (K - 1) * rest * math.log(rest)) / K)
    log_alpha = torch.tensor(
        [[0.96, 0.04 / 3, 0.04 / 3, 0.04 / 3], [0.9, 0.05, 0.03, 0.02], [0.25] * 4, [0.985, 0.005, 0.005, 0.005]],
        dtype=F64,
    ).log()
    H = (log_alpha.exp() * log_alpha).mean(-1)
    only_entropy = mixture_penalty(log_alpha, 0.95, None)
    torch.testing.assert_close(only_entropy, torch.relu(H - entropy_threshold(K, 0.95)))
    assert only_entropy[0] > 0 and only_entropy[1] == 0 and only_entropy[2] == 0 and only_entropy[3] > 0
    floor = mixture_penalty(log_alpha, None, 0.01)
    torch.testing.assert_close(floor, torch.tensor([0.0, 0.0, 0.0, 3 * math.log(2)], dtype=F64))
    torch.testing.assert_close(mixture_penalty(log_alpha, 0.95, 0.01), only_entropy + floor)
    assert mixture_penalty(log_alpha[:, :1] * 0, 0.95, 0.01) == 0.0  # K = 1: nothing to balance
    with pytest.raises(ConfigError, match="1/4"):
        mixture_penalty(log_alpha, None, 0.3)
    model = linear_gaussian(x_dim=4, latent_dim=2)
    x = model.marginal().sample((3,))
    model.posterior = lambda _x: _shifted_mixture(model, _x)  # weights (0.5, 0.3, 0.2): no penalty at 0.95 / 1%
    torch.manual_seed(1)
    plain = SIWAE(2)(model, x)
    torch.manual_seed(1)
    torch.testing.assert_close(SIWAE(2, entropy_penalty=0.95, weight_floor=0.01)(model, x), plain)
    torch.manual_seed(1)
    penalised = SIWAE(2, entropy_penalty=0.4, weight_floor=0.25)(model, x)
    expected = mixture_penalty(_shifted_mixture(model, x).log_weights, 0.4, 0.25)
    torch.testing.assert_close(plain - penalised, expected)


def _small_config(prior: str, objective: str = "siwae", extra: list[str] | None = None):
    from vaelab.config import load_config

    return load_config(
        None,
        [
            "model.latent_dim=3",
            "model.posterior={type: gaussian_mixture, components: 3, covariance: full}",
            f"model.prior={prior}",
            "model.encoder={type: mlp, hidden: [16]}",
            "model.decoder={type: mlp, hidden: [16]}",
            f"objective={{type: {objective}, options: {{samples: 2}}}}",
            *(extra or []),
        ],
    )


@pytest.mark.parametrize(
    "prior",
    ["{type: standard_normal}", "{type: mixture_of_gaussians, components: 4}", "{type: vampprior, components: 5}"],
)
def test_mixture_posterior_trains_with_every_prior(prior):
    from vaelab.config.build import build_model
    from vaelab.train.trainer import build_objective

    cfg = _small_config(prior)
    torch.manual_seed(0)
    model = build_model(cfg.model, (1, 6, 6))
    x = (torch.rand(5, 1, 6, 6) < 0.4).float()
    value = build_objective(cfg)(model, x)
    assert value.shape == (5,) and torch.isfinite(value).all()
    value.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    if "vampprior" in prior:  # the generic branch: p(z) = (1/K) sum_k q(z | u_k), q(z | u_k) itself a mixture
        z = torch.randn(4, 2, 3)
        qu = model.prior.mixture()[0]
        comps = qu.component_distribution  # batch [5, 3]
        dens = (comps.log_prob(z.reshape(4, 2, 1, 1, 3)).exp() * qu.log_weights.exp()).sum((-1, -2)) / 5
        torch.testing.assert_close(model.prior.log_prob(z), dens.log(), rtol=1e-5, atol=1e-5)


def test_burn_in_fits_the_prior_and_resumes_exactly(tmp_path):
    """App. D.1 burn-in: it lowers E_{z~r}[-log p(x|z) - log q(z|x)] on fixed draws, runs before epoch 1 of a fresh
    run only, and a run resumed after epoch 1 ends with the same weights as an uninterrupted one."""
    from vaelab import recording
    from vaelab.app import runs
    from vaelab.config import load_config
    from vaelab.train.burn_in import burn_in, burn_in_loss
    from vaelab.train.trainer import Trainer

    overrides = [
        "data.subset=64",
        "data.valid_subset=64",
        "train.epochs=2",
        "train.validate_every=1",
        "train.progress=false",
        "objective.options={samples: 2, burn_in_epochs: 1}",
        "model.likelihood={type: gaussian, variance: learned}",
        "model.decoder={type: mlp, hidden: [8]}",
    ]
    cfg = load_config("configs/siwae/toy_abs.yaml", overrides)
    fresh = recording.build_run(cfg, tmp_path / "a")
    x = fresh.dataset.split("train")[:64]
    torch.manual_seed(5)
    before = float(burn_in_loss(fresh.model, x).mean().detach())
    (tmp_path / "a").mkdir()
    run_a = runs.train(cfg, tmp_path / "a")
    rows = [line for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert '"burn_in_loss"' in rows[0] and '"burn_in_loss"' not in rows[1]
    cfg1 = load_config("configs/siwae/toy_abs.yaml", [*overrides, "train.epochs=1"])
    (tmp_path / "b").mkdir()
    runs.train(cfg1, tmp_path / "b")
    run_b = runs.train(cfg, tmp_path / "b", resume=True)
    for (name, a), (_, b) in zip(run_a.model.state_dict().items(), run_b.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    longer = load_config(
        "configs/siwae/toy_abs.yaml",
        [*overrides, "objective.options={samples: 2, burn_in_epochs: 20}", "train.lr=0.01"],
    )
    burned = recording.build_run(longer, tmp_path / "a")
    trainer = Trainer(longer, tmp_path / "c", burned.model, burned.dataset, burned.device)
    stats = burn_in(trainer)
    torch.manual_seed(5)
    after = float(burn_in_loss(burned.model, x).mean().detach())
    assert after < before - 0.1, (before, after, stats)


# --- the toy problem (sec. 4.1) -----------------------------------------------------------------------------------
def _train_toy(objective: str, tmp_path, epochs: int = 15, subset: int = 320):
    from vaelab import recording
    from vaelab.config import load_config
    from vaelab.train.trainer import Trainer

    cfg = load_config(
        "configs/siwae/toy_abs_narrow.yaml",
        [
            f"data.subset={subset}",
            f"train.epochs={epochs}",
            "train.progress=false",
            f"objective={{type: {objective}, options: {{samples: 10}}}}",
        ],
    )
    run = recording.build_run(cfg, tmp_path)
    trainer = Trainer(cfg, tmp_path / objective, run.model, run.dataset, run.device)
    for epoch in range(epochs):  # the training loop's epochs, without validation and checkpoints
        trainer.train_epoch(epoch)
    return run.model, run.dataset.split("train")[:subset]


def test_toy_siwae_keeps_the_modes_that_selbo_loses(tmp_path):
    """SIWAE sec. 4.1 in miniature (toy_abs_narrow, 320 points, 15 epochs of batch 32, T = 10 for both, same
    initial weights and batches): the 1,000-draw SIWAE evidence of the SIWAE-trained q beats the SELBO-trained
    one's by more than 0.15 nats (and 4 se of the per-point differences), and is within 0.15 nats of the exact
    E log p(x); the SIWAE q uses more than 3 of its 4 components. A collapsed mixture fails all three."""
    from vaelab.data.toy_abs import NOISE_VAR_NARROW, exact_log_marginal
    from vaelab.evaluation.stratified import evaluate_stratified_log_likelihood

    evidence, used = {}, {}
    for objective in ("siwae", "selbo"):
        model, x = _train_toy(objective, tmp_path)
        torch.manual_seed(0)
        evidence[objective] = evaluate_stratified_log_likelihood(model, x, 1000, progress=False).log_likelihood
        with torch.no_grad():
            log_alpha = model.posterior(x).log_weights
        used[objective] = float(torch.exp(-(log_alpha.exp() * log_alpha).sum(-1)).mean())
    diff = evidence["siwae"] - evidence["selbo"]
    se = diff.std() / math.sqrt(diff.numel())
    assert diff.mean() > max(0.15, 4 * se), (diff.mean(), se)
    exact = exact_log_marginal(x.double(), NOISE_VAR_NARROW).mean()
    assert abs(evidence["siwae"].mean() - exact) < 0.15, (evidence["siwae"].mean(), exact)
    assert used["siwae"] > 3.0, used


def test_toy_experiment_writes_its_tables_and_figures(tmp_path):
    from vaelab.experiments.siwae_toy import main

    code = main(
        [
            "configs/siwae/toy_abs.yaml",
            "--budget",
            "quick",
            "--set",
            "train.epochs=2",
            "--set",
            "train.validate_every=1",
            "--set",
            "data.subset=64",
            "--set",
            "eval.is_samples=40",
            "--set",
            "eval.subset=50",
            "--out",
            str(tmp_path),
            "--replicates",
            "3",
            "--no-progress",
        ]
    )
    assert code == 0
    for name in ("results.json", "results.md", "posterior.png", "gradient_variance.png", "evidence.png"):
        assert (tmp_path / name).is_file(), name
    import json

    assert "paper grad. variance (not comparable)" in (tmp_path / "results.md").read_text()
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) == {"siwae", "selbo", "score_function"}
    for r in results.values():
        assert r["n"] == 50 and r["siwae_log_likelihood"] <= r["exact_log_likelihood"] + 1.0
        assert r["grad_variance_mean"] > 0
        assert r["gap_to_exact"] == pytest.approx(r["exact_log_likelihood"] - r["siwae_log_likelihood"], abs=1e-9)
        assert r["gap_to_exact_se"] > 0


def test_toy_evaluation_refuses_a_nan_evidence(monkeypatch, tmp_path):
    """A NaN in the per-point SIWAE evidence is an error that names it, not a NaN gap in eval-*.json."""
    from types import SimpleNamespace

    from vaelab.data import load_dataset
    from vaelab.errors import DataError
    from vaelab.experiments import siwae_toy

    def fake(model, x, *args, **kwargs):
        values = torch.zeros(x.shape[0], dtype=torch.float64)
        values[3] = math.nan
        return SimpleNamespace(log_likelihood=values, elbo=values)

    monkeypatch.setattr(siwae_toy, "evaluate_stratified_log_likelihood", fake)
    settings = SimpleNamespace(split="test", subset=10, is_samples=2, batch_size=10, max_elements=1000)
    cfg = SimpleNamespace(eval=settings, data=SimpleNamespace(name="toy_abs"), seed=0)
    run = SimpleNamespace(cfg=cfg, dataset=load_dataset("toy_abs"), model=None, path=tmp_path, device="cpu")
    with pytest.raises(DataError, match="1 of the 10 values .* NaN or infinite .* point 3"):
        siwae_toy.evaluate_method(run, progress=False)
    assert not list(tmp_path.iterdir())
