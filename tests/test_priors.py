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


def _vamp_model(**prior_options):
    from vaelab.config import load_config
    from vaelab.config.build import build_model

    cfg = load_config(
        None,
        [
            "model.latent_dim=3",
            "model.encoder={type: mlp, hidden: [16]}",
            "model.decoder={type: mlp, hidden: [16]}",
            "model.prior=" + str({"type": "vampprior", **prior_options}).replace("'", ""),
        ],
    )
    train = torch.bernoulli(torch.full((50, 1, 4, 4), 0.3))
    return build_model(cfg.model, (1, 4, 4), train_data=train).double(), train


def test_vampprior_density_equals_brute_force_mixture():
    model, _ = _vamp_model(components=6, learn_weights=True)
    with torch.no_grad():
        model.prior.logits.copy_(torch.randn(6))
    z = torch.randn(4, 5, 3, dtype=torch.float64)
    u = model.prior.pseudo_inputs
    # brute force: log sum_k w_k q(z | u_k), one component at a time
    w = torch.softmax(model.prior.logits, 0)
    dens = sum(w[k] * model.posterior(u[k : k + 1]).log_prob(z[..., None, :]).squeeze(-1).exp() for k in range(6))
    torch.testing.assert_close(model.prior.log_prob(z), dens.log())


def test_vampprior_variants_and_sampling():
    model, train = _vamp_model(components=5, init="data", learn_inputs=False)
    assert not any(n.startswith("prior.raw_inputs") for n, _ in model.named_parameters())  # "VampPrior data"
    assert all(any(torch.equal(u, t) for t in train) for u in model.prior.pseudo_inputs)
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.startswith("prior.") and "encoder" in n for n in names)  # the encoder is not owned twice
    assert model.prior.sample(7).shape == (7, 3)
    assert model.sample(7).shape == (7, 1, 4, 4)
    learned, _ = _vamp_model(components=5)
    u = learned.prior.pseudo_inputs
    assert u.min() >= 0 and u.max() <= 1 and abs(float(u.mean().detach()) - 0.05) < 0.01


def test_vampprior_samples_follow_its_density():
    """E_p[z] and E_p[z^2] by sampling agree with self-normalised importance sampling of the density."""
    model, _ = _vamp_model(components=4, learn_weights=True)
    with torch.no_grad():
        model.prior.raw_inputs.uniform_(0, 1)  # distinct components
        model.prior.logits.copy_(torch.tensor([0.0, 1.0, -1.0, 0.5]))
        z = model.prior.sample(40000)
        ref = torch.randn(400000, 3, dtype=torch.float64) * 3
        log_ratio = model.prior.log_prob(ref) - Independent(Normal(torch.zeros(3).double(), 3.0), 1).log_prob(ref)
        w = torch.softmax(log_ratio, 0)
    for fz, fref in ((z, ref), (z.square(), ref.square())):
        by_sampling, by_density = fz.mean(0), (w[:, None] * fref).sum(0)
        se = fz.std(0) / 200  # sqrt(40000); the IS side, with 10x the samples and ESS > 10%, adds less
        assert ((by_sampling - by_density).abs() < 5 * se).all(), (by_sampling, by_density, se)
