"""The two-level HVAE (VampPrior paper eqs. 10-15), its convolutional networks and the PixelCNN decoder.

Densities are checked against hand-written formulas and an exact Gaussian; the whole model against log p(x)
by quadrature on a 2-D latent grid (D1 = D2 = 1), which only importance sampling with a correct posterior
density can reach. Monte Carlo checks state their tolerance in standard errors (4 se: p < 1e-4 per check).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, MultivariateNormal, Normal

from vaelab.config import load_config
from vaelab.config.build import build_model
from vaelab.errors import ConfigError
from vaelab.evaluation import active_units, importance_sampled_log_likelihood
from vaelab.models import HierarchicalPrior, PixelHVAE
from vaelab.nets import MLP, PixelCNN
from vaelab.objectives import ELBO, IWAE
from vaelab.posteriors import DiagonalGaussian
from vaelab.priors import StandardNormal

LOG_2PI = math.log(2 * math.pi)


def _hvae(event=(1, 3, 3), d1=2, d2=3, prior="{type: standard_normal}", extra=(), train=None, hidden=8):
    mlp = f"{{type: gated_mlp, hidden: [{hidden}]}}"
    cfg = load_config(
        None,
        [
            "model.type=hvae",
            f"model.latent_dim={d1}",
            f"model.encoder={mlp}",
            f"model.decoder={mlp}",
            f"model.prior={prior}",
            "model.posterior={type: diagonal_gaussian}",
            f"model.options={{latent_dim2: {d2}, q_z1: {{x: {mlp}, z2: {mlp}, joint: {mlp}}}, p_z1: {mlp}, "
            f"p_x: {{z1: {mlp}, z2: {mlp}}}}}",
            *extra,
        ],
    )
    return build_model(cfg.model, event, train_data=train).double()


def _log_normal(z, mu, log_var):
    return -0.5 * (((z - mu) ** 2) * torch.exp(-log_var) + log_var + LOG_2PI).sum(-1)


def _q_params(model, x, z2):
    """(mu2, logvar2) of q(z2|x) and (mu1, logvar1) of q(z1|x,z2), straight from the model's layers."""
    flat = x.flatten(1)
    mu2, lv2 = model.posterior_family.head(model.encoder(flat)).chunk(2, -1)
    hx = model.q_z1.net_a(flat).expand(*z2.shape[:-1], -1)
    h = model.q_z1.joint(torch.cat([hx, model.q_z1.net_b(z2)], -1))
    mu1, lv1 = model.q_z1_head.head(h).chunk(2, -1)
    return (mu2, lv2), (mu1, lv1)


# --- (a) the posterior --------------------------------------------------------------------------------------
def test_posterior_log_prob_is_the_sum_of_the_two_conditionals_and_rsample_is_ancestral():
    model = _hvae()
    x = torch.bernoulli(torch.full((5, 1, 3, 3), 0.4, dtype=torch.float64))
    q = model.posterior(x)
    assert q.batch_shape == (5,) and q.event_shape == (5,)

    torch.manual_seed(3)
    z = q.rsample((7,))
    assert z.shape == (7, 5, 5)
    # the same draw by hand: eps2 first, then z1 = mu1(x, z2) + sigma1(x, z2) eps1
    torch.manual_seed(3)
    eps2 = torch.empty(7, 5, 3, dtype=torch.float64).normal_()
    eps1 = torch.empty(7, 5, 2, dtype=torch.float64).normal_()
    (mu2, lv2), _ = _q_params(model, x, torch.zeros(1, 5, 3, dtype=torch.float64))
    z2 = mu2 + torch.exp(0.5 * lv2) * eps2
    _, (mu1, lv1) = _q_params(model, x, z2)
    z1 = mu1 + torch.exp(0.5 * lv1) * eps1
    torch.testing.assert_close(z, torch.cat([z1, z2], -1))

    by_hand = _log_normal(z2, mu2, lv2) + _log_normal(z1, mu1, lv1)
    torch.testing.assert_close(q.log_prob(z), by_hand)  # the draw's own q(z1 | x, z2), reused
    torch.testing.assert_close(q.log_prob(z.clone()), by_hand)  # recomputed
    other = torch.randn(4, 5, 5, dtype=torch.float64)
    (mu2, lv2), (mu1, lv1) = _q_params(model, x, other[..., 2:])
    torch.testing.assert_close(
        q.log_prob(other), _log_normal(other[..., 2:], mu2, lv2) + _log_normal(other[..., :2], mu1, lv1)
    )


def test_posterior_draws_carry_gradients_through_both_levels():
    model = _hvae()
    x = torch.bernoulli(torch.full((4, 1, 3, 3), 0.4, dtype=torch.float64))
    q = model.posterior(x)
    q.rsample((3,))[..., :2].sum().backward()  # z1 only: reaches q(z2 | x) through z2
    assert model.encoder.body[0].linear.weight.grad.abs().sum() > 0
    assert model.q_z1.net_b.body[0].linear.weight.grad.abs().sum() > 0
    model.zero_grad()
    q = model.posterior(x)
    z = q.sample((3,))  # drawn without a graph: log_prob must not reuse the graph-less conditional
    q.log_prob(z).sum().backward()
    assert model.q_z1.joint.body[0].linear.weight.grad.abs().sum() > 0


# --- (b) the prior -----------------------------------------------------------------------------------------
def test_prior_is_the_product_of_its_conditionals_and_samples_ancestrally():
    """p(z2) = N(0, I), p(z1 | z2) = N(A z2 + b, diag s^2): [z1, z2] is jointly Gaussian, covariance
    [[A A^T + diag s^2, A], [A^T, I]], mean [b, 0]."""
    head = DiagonalGaussian(in_features=2, latent_dim=2)
    prior = HierarchicalPrior(StandardNormal(2), MLP(2, [], None), head).double()
    A = torch.tensor([[1.5, -0.5], [0.3, 0.8]], dtype=torch.float64)
    b = torch.tensor([1.0, -2.0], dtype=torch.float64)
    log_s2 = torch.tensor([-1.0, 0.5], dtype=torch.float64)
    with torch.no_grad():
        head.head.weight.zero_()
        head.head.weight[:2] = A
        head.head.bias.copy_(torch.cat([b, log_s2]))
    mean = torch.cat([b, torch.zeros(2, dtype=torch.float64)])
    cov = torch.cat(
        [torch.cat([A @ A.T + torch.diag(log_s2.exp()), A], 1), torch.cat([A.T, torch.eye(2, dtype=torch.float64)], 1)]
    )
    exact = MultivariateNormal(mean, cov)
    z = torch.randn(3, 6, 4, dtype=torch.float64) * 2
    torch.testing.assert_close(prior.log_prob(z), exact.log_prob(z))
    z1, z2 = prior.split(z)
    torch.testing.assert_close(
        prior.log_prob(z), _log_normal(z1, z2 @ A.T + b, log_s2) + _log_normal(z2, 0, torch.zeros(2))
    )
    assert prior.latent_dim == 4 and prior.kl(None) is None

    n = 200_000
    s = prior.sample(n)
    assert s.shape == (n, 4)
    se_mean = cov.diagonal().sqrt() / math.sqrt(n)
    assert ((s.mean(0) - mean).abs() < 4 * se_mean).all()
    centred = s - mean
    prods = centred.unsqueeze(-1) * centred.unsqueeze(-2)  # [n, 4, 4]
    se_cov = prods.std(0) / math.sqrt(n)
    assert ((prods.mean(0) - cov).abs() < 4 * se_cov + 1e-3).all()


# --- (c) VampPrior over z2 ---------------------------------------------------------------------------------
def test_vampprior_on_z2_is_the_mixture_of_q_z2_at_the_pseudo_inputs():
    train = torch.bernoulli(torch.full((20, 1, 3, 3), 0.5))
    model = _hvae(prior="{type: vampprior, components: 4, init: data}", train=train)
    top = model.prior.top
    assert top._posterior.encoder is model.encoder and top._posterior.family is model.posterior_family
    u = top.pseudo_inputs
    assert u.shape == (4, 1, 3, 3) and model.prior.pseudo_inputs is not None
    (mu, lv), _ = _q_params(model, u, torch.zeros(1, 4, 3, dtype=torch.float64))  # q(z2 | u_k), [K, D2]
    mix = MixtureSameFamily(
        Categorical(logits=torch.zeros(4, dtype=torch.float64)), Independent(Normal(mu, (0.5 * lv).exp()), 1)
    )
    z = torch.randn(5, 6, 5, dtype=torch.float64)
    z1, z2 = model.prior.split(z)
    torch.testing.assert_close(top.log_prob(z2), mix.log_prob(z2))
    p1 = model.prior.conditional(z2)
    torch.testing.assert_close(model.prior.log_prob(z), p1.log_prob(z1) + mix.log_prob(z2))
    # the prior moves with the encoder of q(z2 | x) (coupling, eq. 12), not with q(z1 | x, z2)'s
    before = model.prior.log_prob(z)
    with torch.no_grad():
        model.q_z1.net_a.body[0].linear.weight.add_(1.0)
    torch.testing.assert_close(model.prior.log_prob(z), before)
    with torch.no_grad():
        model.encoder.body[0].linear.weight.add_(1.0)
    assert not torch.allclose(model.prior.log_prob(z), before)


# --- (d) the bounds against log p(x) by quadrature -------------------------------------------------------
def _log_marginal_by_quadrature(model, x, half_width=9.0, points=401):
    """log p(x) = log int int p(x | z1, z2) p(z1 | z2) p(z2) dz1 dz2 on a grid (D1 = D2 = 1), `[B]`."""
    g = torch.linspace(-half_width, half_width, points, dtype=torch.float64)
    z = torch.cartesian_prod(g, g).unsqueeze(1).expand(-1, x.shape[0], -1)  # [G, B, 2]
    log_joint = torch.cat([model.log_joint(x, c) for c in z.split(20_000)])  # [G, B]
    return torch.logsumexp(log_joint, 0) + 2 * math.log(g[1] - g[0])


@pytest.mark.parametrize("prior", ["{type: standard_normal}", "{type: vampprior, components: 3, init: data}"])
def test_elbo_below_iwae_below_exact_and_importance_sampling_reaches_it(prior):
    torch.manual_seed(1)
    train = torch.bernoulli(torch.full((10, 1, 3, 3), 0.5))
    model = _hvae(d1=1, d2=1, prior=prior, train=train)
    x = train[:4].double()
    with torch.no_grad():
        for net in (model.q_z1.net_b, model.prior.net, model.decoder.net_a, model.decoder.net_b):
            net.body[0].linear.weight.mul_(3.0)  # z2 matters to q(z1 | x, z2) and p(z1 | z2), z to p(x | z)
        model.posterior_family.head.bias[1] += 1.5  # q wider than the posterior: a clear ELBO gap, and
        model.q_z1_head.head.bias[1] += 1.5  # bounded importance weights (a sharp IS check)
        exact = _log_marginal_by_quadrature(model, x)
        reps = 400
        xs = x.repeat(reps, 1, 1, 1)
        elbo = ELBO(samples=1)(model, xs).reshape(reps, 4)
        iwae = IWAE(samples=20)(model, xs).reshape(reps, 4)
        est = importance_sampled_log_likelihood(model, x, samples=50_000)
    assert torch.isfinite(est.log_likelihood).all()
    mean_e, se_e = elbo.mean(0), elbo.std(0) / math.sqrt(reps)
    mean_i, se_i = iwae.mean(0), iwae.std(0) / math.sqrt(reps)
    assert (mean_e < mean_i + 4 * torch.sqrt(se_e**2 + se_i**2)).all()
    assert (mean_i < exact + 4 * se_i).all()
    assert (exact - mean_e > 4 * se_e).all()  # q is not the posterior: the ELBO is strictly below
    se_is = torch.sqrt((50_000 / est.ess - 1).clamp(min=0) / 50_000)  # delta method
    assert ((est.log_likelihood - exact).abs() < 4 * se_is + 1e-4).all(), (est.log_likelihood - exact, se_is)
    assert (se_is < 0.02).all()  # the check is sharp: errors above 0.08 nats fail


# --- (e) the PixelCNN --------------------------------------------------------------------------------------
def test_pixelcnn_is_causal_in_raster_order():
    torch.manual_seed(0)
    net = PixelCNN((2, 5, 4), in_features=3, out_features=2 * 2 * 20, channels=6, layers=3).double()
    h = torch.randn(1, 3, dtype=torch.float64)
    x = torch.rand(1, 2, 5, 4, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda x_: net(x_, h), x)  # [1, 80, 1, 2, 5, 4]
    jac = jac.reshape(4, 20, 2, 20).abs().sum((0, 2))  # [output pixel, input pixel], raster order
    i, j = torch.meshgrid(torch.arange(20), torch.arange(20), indexing="ij")
    assert (jac[j >= i] == 0).all()  # no output sees its own pixel or a later one
    assert (jac[torch.arange(1, 20), torch.arange(19)] > 0)[torch.arange(1, 20) % 4 != 0].all()  # left neighbour
    assert (jac[torch.arange(4, 20), torch.arange(16)] > 0).all()  # the pixel above
    grad_h = torch.autograd.functional.jacobian(lambda h_: net(x, h_), h)
    assert grad_h.abs().sum() > 0  # the latent conditioning reaches the output


@pytest.mark.parametrize("likelihood", ["{type: bernoulli}", "{type: discretized_logistic}"])
def test_pixel_by_pixel_sampling_matches_teacher_forcing_and_stays_in_the_data_range(likelihood):
    train = torch.bernoulli(torch.full((10, 1, 6, 5), 0.5))
    extra = [
        f"model.likelihood={likelihood}",
        "model.decoder={type: pixelcnn, channels: 6, layers: 3, cond_channels: 1}",
        "model.options.p_x={z1: {type: linear}, z2: {type: linear}}",
    ]
    model = _hvae(event=(1, 6, 5), extra=extra, train=train)
    assert isinstance(model, PixelHVAE)
    z = model.prior.sample(7)
    features = model.features(z)
    x, params = model.pixelcnn.sample(features, model.likelihood, progress=False)
    assert x.shape == (7, 1, 6, 5) and params.shape == (7, *model.likelihood.param_shape)
    # each pixel's conditional, computed on a window while drawing, is the full teacher-forced pass on the result
    torch.testing.assert_close(params, model.pixelcnn(x, features).reshape(params.shape))
    levels = 1 if likelihood == "{type: bernoulli}" else 255
    assert ((x >= 0) & (x <= 1)).all() and torch.allclose(x * levels, (x * levels).round())
    for images in (model.sample(3), model.sample(3, mean=False), model.reconstruct(x[:2])):
        assert images.shape[1:] == (1, 6, 5) and ((images >= 0) & (images <= 1)).all()
    lp = model.log_likelihood(x[:2], z[:2].unsqueeze(0).expand(4, 2, -1))
    assert lp.shape == (4, 2) and torch.isfinite(lp).all()
    with pytest.raises(NotImplementedError):
        model.decode(z)


# --- (f) convolutional networks --------------------------------------------------------------------------------
def test_conv_hvae_shapes_and_one_training_step():
    cfg = load_config(
        None,
        [
            "model.type=hvae",
            "model.latent_dim=3",
            "model.encoder={type: gated_conv_encoder, channels: [4, 4, 2], kernels: [5, 3, 3], strides: [1, 2, 1]}",
            "model.decoder={type: gated_conv_decoder, channels: [4, 4]}",
            "model.likelihood={type: discretized_logistic}",
            "model.prior={type: vampprior, components: 5}",
            "model.options={latent_dim2: 2, q_z1: {x: {type: gated_conv_encoder, channels: [4, 2], kernels: [3, 3], "
            "strides: [2, 1]}, z2: {type: gated_mlp, hidden: [16]}, joint: {type: gated_mlp, hidden: [16]}}, "
            "p_z1: {type: gated_mlp, hidden: [16]}, p_x: {z1: {type: gated_mlp, hidden: [16]}, "
            "z2: {type: gated_mlp, hidden: [16]}}}",
        ],
    )
    model = build_model(cfg.model, (1, 10, 7))
    assert model.encoder.out_features == 2 * 5 * 4 and model.latent_dim == 5
    x = torch.randint(0, 256, (6, 1, 10, 7)) / 255.0
    torch.testing.assert_close(model.encoder(x), model.encoder(x.flatten(1)))  # images or flat vectors
    q = model.posterior(x)
    z = q.rsample((3,))
    assert z.shape == (3, 6, 5) and q.log_prob(z).shape == (3, 6)
    assert model.decode(z).shape == (3, 6, 2, 1, 10, 7)
    assert model.log_joint(x, z).shape == (3, 6)
    assert model.sample(4).shape == (4, 1, 10, 7) and model.reconstruct(x).shape == x.shape
    n_active, activity = active_units(model, x)
    assert activity.shape == (5,) and 0 <= n_active <= 5

    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss = -ELBO()(model, x).mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters()), [
        k for k, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0
    ]
    opt.step()
    assert all(not torch.equal(before[k], v) for k, v in model.state_dict().items() if v.dtype.is_floating_point)


def test_conv_networks_in_the_plain_vae_and_config_errors():
    base = ["model.latent_dim=2", "model.prior={type: standard_normal}"]
    conv = ["model.encoder={type: gated_conv_encoder}", "model.decoder={type: gated_conv_decoder, channels: [4]}"]
    model = build_model(load_config(None, base + conv).model, (1, 28, 28))
    x = torch.bernoulli(torch.full((2, 1, 28, 28), 0.5))
    assert model.encoder.out_features == 294  # 6 x 7 x 7, as in the paper's code
    assert model.decode(model.posterior(x).rsample((3,))).shape == (3, 2, 1, 28, 28)
    bad = [
        (["model.decoder={type: pixelcnn}"], "model.type: hvae"),
        (["model.decoder={type: gated_conv_encoder}"], "reads images"),
        (["model.type=hvae", "model.options={q_z1: {y: {type: mlp}}}"], "has no part 'y'"),
        (["model.type=hvae", "model.options={p_x: {z1: {hidden: [3]}}}"], "'type' key"),
    ]
    for overrides, message in bad:
        with pytest.raises(ConfigError, match=message):
            build_model(load_config(None, base + overrides).model, (1, 28, 28))
