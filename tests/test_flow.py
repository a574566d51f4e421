"""The auxiliary flow (Cremer et al. 2018, sec. 3.2, appendix 6.2-6.3): its log-Jacobian, its inverse, and the
unbiasedness of its weights p(x, z) r(v | z) / q(z, v | x) on the linear-Gaussian model (exact log p(x)).

Monte Carlo checks state their tolerance in standard errors computed from the samples (4 se: p < 1e-4).
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import linear_gaussian, set_encoder

from vaelab.distributions.auxiliary_flow import AuxiliaryFlow, AuxiliaryFlowDistribution, extended_space
from vaelab.distributions.diagonal_normal import DiagonalNormal
from vaelab.evaluation import importance_sampled_log_likelihood
from vaelab.mcmc import ais
from vaelab.models import VAE
from vaelab.objectives import ELBO, IWAE, sample_log_weights
from vaelab.posteriors import AuxiliaryFlowPosterior


def randomize(module: torch.nn.Module, std: float = 0.5, seed: int = 0) -> None:
    """Non-trivial weights everywhere (a new flow is the identity: its output layers start at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)


def flow(D: int, steps: int, groups: int = 1, **kw) -> AuxiliaryFlow:
    f = AuxiliaryFlow(D, steps, hidden=[7, 5], aux_hidden=[6], reverse_hidden=[6], groups=groups, **kw).double()
    randomize(f)
    return f


@pytest.mark.parametrize("steps", [1, 3])
def test_log_det_matches_autograd_jacobian(steps):
    """sum_t log|det Df_t| (appendix 6.3) = log|det J| of (z_0, v_0) -> (z_T, v_T) by torch's Jacobian."""
    D = 3
    f = flow(D, steps)

    def fn(u):
        z, v, _ = f.forward_flow(u[:D], u[D:])
        return torch.cat([z, v])

    for _ in range(4):
        u = torch.randn(2 * D, dtype=torch.float64)
        J = torch.autograd.functional.jacobian(fn, u)
        sign, logabsdet = torch.linalg.slogdet(J)
        _, _, log_det = f.forward_flow(u[:D], u[D:])
        assert sign > 0  # sigma > 0: orientation preserving
        torch.testing.assert_close(log_det, logabsdet, rtol=1e-10, atol=1e-10)
        assert abs(float(logabsdet)) > 0.1  # the check is not trivially 0 = 0


def test_inverse_undoes_the_flow_with_the_same_log_det():
    f = flow(4, 2)
    z0, v0 = torch.randn(2, 5, 3, 4, dtype=torch.float64).unbind(0)
    z, v, log_det = f.forward_flow(z0, v0)
    zb, vb, log_det_b = f.inverse_flow(z, v)
    torch.testing.assert_close(zb, z0)
    torch.testing.assert_close(vb, v0)
    torch.testing.assert_close(log_det_b, log_det)


def test_per_point_networks_equal_separate_networks():
    """A flow with B groups (one network per data point) maps column b as group b's own single network does."""
    B, D = 3, 2
    grouped = flow(D, 2, groups=B)
    z, v = torch.randn(2, 5, B, D, dtype=torch.float64).unbind(0)
    out = grouped.forward_flow(z, v)
    for b in range(B):
        single = AuxiliaryFlow(D, 2, hidden=[7, 5], aux_hidden=[6], reverse_hidden=[6]).double()
        with torch.no_grad():
            for (_, ps), (_, pg) in zip(single.named_parameters(), grouped.named_parameters(), strict=True):
                ps.copy_(pg[b : b + 1])
        ref = single.forward_flow(z[:, b], v[:, b])
        for a, r in zip(out, ref, strict=True):
            torch.testing.assert_close(a[:, b], r)


def test_joint_density_by_inversion_equals_the_sampling_density():
    D, B = 3, 4
    f = flow(D, 2)
    base = DiagonalNormal(torch.randn(B, D, dtype=torch.float64), torch.rand(B, D, dtype=torch.float64) + 0.5)
    q = AuxiliaryFlowDistribution(base, f)
    s = q.rsample_with_aux((6,))
    torch.testing.assert_close(q.joint_log_prob(s.z, s.v), s.log_q_joint)
    with pytest.raises(NotImplementedError, match="rsample_and_log_prob"):
        q.log_prob(s.z)


def test_marginal_estimate_integrates_to_one():
    """exp(log_marginal_estimate) is unbiased for q(z|x) at every z, so its integral over a 2-D grid is ~1."""
    torch.manual_seed(1)
    f = flow(2, 2)
    randomize(f, std=0.3)
    q = AuxiliaryFlowDistribution(DiagonalNormal(torch.zeros(1, 2).double(), torch.ones(1, 2).double()), f)
    t = torch.linspace(-7, 7, 141, dtype=torch.float64)
    z = torch.stack(torch.meshgrid(t, t, indexing="xy"), -1).reshape(-1, 1, 2)
    with torch.no_grad():
        mass = torch.exp(q.log_marginal_estimate(z, samples=64)).sum() * (t[1] - t[0]) ** 2
    assert abs(float(mass) - 1) < 0.03, float(mass)


def flow_vae(D: int = 2, x_dim: int = 4, seed: int = 0):
    """The linear-Gaussian model's decoder with an amortised flow posterior whose base starts near the exact
    posterior and whose flow, q(v|z) and r(v|z) are random (so the weights are far from constant)."""
    lg = linear_gaussian(x_dim=x_dim, latent_dim=D, sigma=0.8, seed=seed)
    set_encoder(lg, var_scale=1.5)
    family = AuxiliaryFlowPosterior(x_dim, D, steps=2, hidden=[8], aux_hidden=[8], reverse_hidden=[8]).double()
    randomize(family.flow, std=0.15, seed=seed)
    family.base.head.load_state_dict(lg.posterior_family.head.state_dict())
    return VAE(lg.encoder, family, lg.prior, lg.decoder, lg.likelihood), lg


def test_flow_weights_give_an_unbiased_log_marginal():
    """IS with the flow's weights p(x,z) r(v|z) / q(z,v|x) (k = 40,000) is within 4 se of the exact log p(x);
    its ELBO (the bound of eq. 14) lies below log p(x) by much more than its se."""
    model, lg = flow_vae()
    x = lg.marginal().sample((8,))
    exact = lg.exact_log_marginal(x)
    est = importance_sampled_log_likelihood(model, x, samples=40_000)
    se = torch.sqrt((40_000 / est.ess - 1).clamp(min=0) / 40_000)  # delta method
    assert ((est.log_likelihood - exact).abs() < 4 * se + 1e-6).all(), (est.log_likelihood - exact, se)
    assert (se < 0.05).all()  # sharp enough to see a wrong log-det (an error of O(1) nats per sample)
    lw, _ = sample_log_weights(model, x, 20_000)
    elbo, elbo_se = lw.log_w.mean(0), lw.log_w.std(0) / math.sqrt(20_000)
    assert (elbo + 4 * elbo_se < exact).all()


def test_objectives_take_the_auxiliary_path():
    """ELBO with analytic_kl falls back to Monte Carlo (same draws as analytic_kl=False); entropy annealing
    weights log q(z,v|x) - log r(v|z); IWAE trains every part of the flow."""
    model, lg = flow_vae()
    x = lg.marginal().sample((5,))
    torch.manual_seed(3)
    a = ELBO(samples=4)(model, x, entropy_weight=0.5)
    torch.manual_seed(3)
    b = ELBO(samples=4, analytic_kl=False)(model, x, entropy_weight=0.5)
    torch.manual_seed(3)
    lw, _ = sample_log_weights(model, x, 4)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, (lw.log_likelihood + lw.log_prior - 0.5 * lw.log_q).mean(0))
    IWAE(samples=3)(model, x).sum().backward()
    grads = [p.grad for p in model.posterior_family.parameters()]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_ais_from_the_flow_in_the_extended_space():
    """AIS from q(z, v | x) to p(x, z) r(v | z) (`extended_space`) estimates log p(x) (normaliser p(x))."""
    model, lg = flow_vae()
    x = lg.marginal().sample((4,))
    with torch.no_grad():
        q = model.posterior(x)
    target, init = extended_space(model, q)
    result = ais(target, x, chains=400, schedule=30, leapfrog_steps=5, init=init, progress=False)
    err = result.log_likelihood - lg.exact_log_marginal(x)
    assert (err.abs() < 4 * result.log_weight_se + 1e-6).all(), (err, result.log_weight_se)
    assert (result.log_weight_se < 0.05).all()
