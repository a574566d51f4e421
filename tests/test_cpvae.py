"""CP-VAE (Lavda et al.): the categorical x Gaussian posterior, the conditional prior, the bound of eq. (7) with its
KL split (eqs. 8-9) under both estimators, log p(x) with c summed out, clustering accuracy, the 1-D toy, sampling.

Exact references come from a CP-VAE with a linear decoder and a fixed-variance Gaussian likelihood: then
E_{N(m, diag s^2)} log p(x | z) and p(x) = (1/K) sum_k N(x; W mu_k + b, W diag(sigma_k^2) W^T + s^2 I) are closed
form. Monte Carlo comparisons use 4 standard errors (about a 1-in-15,000 false alarm for a Gaussian mean).
"""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from vaelab import runs
from vaelab.build import build_model
from vaelab.cli import main
from vaelab.config import ModelConfig
from vaelab.data import load_dataset
from vaelab.data.toy_mixture1d import MEANS, STD
from vaelab.distributions.gumbel_softmax import relaxed_one_hot
from vaelab.errors import ConfigError
from vaelab.evaluation.clustering import clustering_accuracy, hungarian_accuracy, majority_accuracy
from vaelab.evaluation.loglik import importance_sampled_log_likelihood
from vaelab.models.cpvae import aggregated_posterior, draw_categories, generate, prior_conditionals
from vaelab.objectives.bounds import sample_log_weights
from vaelab.objectives.cpvae import CPVAEBound, kl_terms

K, D, X_DIM, SIGMA = 3, 2, 4, 0.7
Z_SE = 4.0  # tolerance in standard errors


def linear_cpvae(categories: int = K, hidden: int | None = 6, prior: dict | None = None) -> torch.nn.Module:
    """A float64 CP-VAE with a linear decoder and N(Wz + b, SIGMA^2 I) likelihood; prior means spread out and c's
    weights in the gated layer scaled up, so that the categories differ."""
    cfg = ModelConfig(
        latent_dim=D,
        encoder={"type": "mlp", "hidden": [8], "activation": "tanh"},
        decoder={"type": "linear"},
        posterior={"type": "categorical_gaussian", "categories": categories, "hidden": hidden},
        prior=prior or {"type": "conditional", "init_scale": 1.5},
        likelihood={"type": "gaussian", "variance": "fixed", "sigma": SIGMA},
    )
    model = build_model(cfg, (X_DIM,)).double()
    with torch.no_grad():
        if hasattr(model.prior, "log_var"):
            model.prior.log_var.uniform_(-1.0, 0.5)
        family = model.posterior_family
        family.logits_head.bias.copy_(torch.linspace(-1.0, 1.0, categories))
        family.joint.weight[:, family.in_features :].mul_(8.0)  # make q(z | x, c) depend strongly on c
    return model


def data(n: int = 5) -> torch.Tensor:
    return torch.randn(n, X_DIM, dtype=torch.float64)


def expected_log_lik(model, x: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """E_{z ~ N(loc, diag scale^2)} log N(x; W z + b, SIGMA^2 I) in closed form: `loc`, `scale` `[B, K, D]` ->
    `[B, K]`."""
    lin = model.decoder.body[0]
    mean = loc @ lin.weight.T + lin.bias  # [B, K, X]
    spread = (scale.square() @ lin.weight.square().T).sum(-1)  # tr(W diag(s^2) W^T)
    sq = (x.unsqueeze(1) - mean).square().sum(-1)
    return -0.5 * X_DIM * math.log(2 * math.pi * SIGMA**2) - (sq + spread) / (2 * SIGMA**2)


def exact_bound(model, x: torch.Tensor) -> torch.Tensor:
    """L(x) of eq. (7) with A in closed form: `[B]`."""
    q = model.posterior(x)
    comps = q.component_distribution
    rec = (q.log_weights.exp() * expected_log_lik(model, x, comps.loc, comps.scale)).sum(-1)
    kl_c, kl_z, _ = kl_terms(q, model.prior)
    return rec - kl_c - kl_z


def exact_log_px(model, x: torch.Tensor) -> torch.Tensor:
    """log p(x) = log (1/K) sum_k N(x; W mu_k + b, W Sigma_k W^T + SIGMA^2 I): `[B]`."""
    lin = model.decoder.body[0]
    mu, var = model.prior.loc, model.prior.log_var.exp()
    cov = lin.weight @ torch.diag_embed(var) @ lin.weight.T + SIGMA**2 * torch.eye(X_DIM, dtype=x.dtype)
    comp = MultivariateNormal(mu @ lin.weight.T + lin.bias, cov).log_prob(x.unsqueeze(1))  # [B, K]
    return torch.logsumexp(comp, -1) - math.log(mu.shape[0])


def assert_mc_close(draws: torch.Tensor, target: torch.Tensor, what: str) -> None:
    """Mean of `draws` `[N, B]` within Z_SE standard errors of `target` `[B]`."""
    mean, se = draws.mean(0), draws.std(0) / math.sqrt(draws.shape[0])
    z = (mean - target).abs() / se
    assert (z < Z_SE).all(), f"{what}: MC {mean.tolist()} vs {target.tolist()}, z-scores {z.tolist()}"


# --------------------------------------------------------------------------------- posterior and prior


@pytest.mark.parametrize("hidden", [6, None])
def test_posterior_components_are_the_gated_layer_at_one_hot_c(hidden):
    model = linear_cpvae(hidden=hidden)
    x = data()
    q = model.posterior(x)
    assert q.log_weights.shape == (5, K) and q.component_distribution.batch_shape == (5, K)
    for k in range(K):
        one_hot = torch.zeros(5, K, dtype=torch.float64)
        one_hot[:, k] = 1
        given = q.given(one_hot)
        torch.testing.assert_close(given.loc, q.component_distribution.loc[:, k])
        torch.testing.assert_close(given.scale, q.component_distribution.scale[:, k])
    z = torch.randn(7, 5, D, dtype=torch.float64)
    mixture = torch.logsumexp(q.log_weights + q.component_log_prob(z), -1)
    torch.testing.assert_close(q.log_prob(z), mixture)


def test_conditional_prior_is_the_uniform_mog_and_samples_its_components():
    model = linear_cpvae()
    prior = model.prior
    assert prior.logits is None and prior.loc.shape == (K, D)  # K taken from the posterior
    z = torch.randn(11, D, dtype=torch.float64)
    marginal = torch.logsumexp(prior_conditionals(prior).log_prob(z.unsqueeze(-2)), -1) - math.log(K)
    torch.testing.assert_close(prior.log_prob(z), marginal)
    draws = prior.sample_components(torch.full((40_000,), 1))
    se = prior.log_var[1].exp().sqrt() / math.sqrt(40_000)
    assert ((draws.mean(0) - prior.loc[1]).abs() < Z_SE * se).all()


def test_closed_form_kls_match_monte_carlo():
    """KL(q(z|x,k) || p(z|k)) as B2 uses it, and B1 + B2 against the joint KL(q(z,c|x) || p(z,c)) by the exact sum
    over c and Monte Carlo over z."""
    model = linear_cpvae()
    x = data()
    with torch.no_grad():
        q = model.posterior(x)
        comps, p = q.component_distribution, prior_conditionals(model.prior)
        z = comps.rsample((40_000,))  # [N, B, K, D]
        log_ratio = comps.log_prob(z) - p.log_prob(z)  # [N, B, K]
        closed = torch.distributions.kl_divergence(comps, p)  # [B, K]
        assert_mc_close(log_ratio.flatten(1), closed.flatten(), "KL(q(z|x,k) || p(z|k))")
        pi, log_pi = q.log_weights.exp(), q.log_weights
        joint = (pi * (log_pi + math.log(K) + log_ratio)).sum(-1)  # log q(c,z|x) - log p(c,z), summed over c
        kl_c, kl_z, _ = kl_terms(q, model.prior)
        assert_mc_close(joint, kl_c + kl_z, "B1 + B2 vs KL(q(z,c|x) || p(z,c))")
        torch.testing.assert_close(kl_c, math.log(K) + (pi * log_pi).sum(-1))  # eq. (9)


# ------------------------------------------------------------------------------------------ the bound


def test_both_estimators_and_the_brute_force_joint_elbo_agree_with_the_closed_form_bound():
    model = linear_cpvae()
    x = data()
    with torch.no_grad():
        target = exact_bound(model, x)
        exact = torch.stack([CPVAEBound("exact", samples=50)(model, x) for _ in range(200)])
        assert_mc_close(exact, target, "exact-sum estimator")
        hard = torch.stack([CPVAEBound("gumbel", samples=50)(model, x) for _ in range(200)])  # no grad: tau = 0
        assert_mc_close(hard, target, "Gumbel estimator at zero temperature")
        # brute force: (c, z) ~ q(z, c | x) ancestrally, log p(x|z) + log p(z,c) - log q(z,c|x)
        q = model.posterior(x)
        c = torch.distributions.Categorical(logits=q.log_weights).sample((40_000,))  # [N, B]
        comps, p = q.component_distribution, prior_conditionals(model.prior)
        rows = torch.arange(x.shape[0])
        loc, scale = comps.loc[rows, c], comps.scale[rows, c]  # [N, B, D]
        z = loc + scale * torch.randn_like(loc)
        log_q = q.log_weights.gather(1, c.T).T + torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
        log_p = -math.log(K) + torch.distributions.Normal(model.prior.loc[c], p.scale[c]).log_prob(z).sum(-1)
        assert_mc_close(model.log_likelihood(x, z) + log_p - log_q, target, "brute-force joint ELBO")


def test_gumbel_relaxation_tends_to_the_hard_draw_and_has_gradients():
    logits = torch.randn(6, 4, requires_grad=True)
    g = -torch.empty(6, 4).exponential_().log()
    hard = relaxed_one_hot(logits, 0.0, noise=g)
    assert torch.equal(hard.sum(-1), torch.ones(6)) and ((hard == 0) | (hard == 1)).all()
    torch.testing.assert_close(relaxed_one_hot(logits, 1e-3, noise=g), hard)
    soft = relaxed_one_hot(logits, 0.7, noise=g)
    torch.testing.assert_close(soft.sum(-1), torch.ones(6))
    st = relaxed_one_hot(logits, 0.7, straight_through=True, noise=g)
    torch.testing.assert_close(st, hard)
    (st * torch.arange(4.0)).sum().backward()
    assert logits.grad.abs().sum() > 0


def test_training_gradients_reach_every_part_and_temperature_anneals():
    model = linear_cpvae().float()
    x = data().float()
    for estimator in ("exact", "gumbel"):
        model.zero_grad()
        (-CPVAEBound(estimator)(model, x, beta=0.5).mean()).backward()
        for name, p in model.named_parameters():
            if not name.startswith("likelihood"):
                assert p.grad is not None and p.grad.abs().sum() > 0, f"{estimator}: no gradient for {name}"
    obj = CPVAEBound("gumbel", temperature=1.0, min_temperature=0.5, anneal_rate=0.1)
    temps = []
    for epoch in (0, 3, 50):
        obj.set_epoch(epoch)
        temps.append(obj.epoch_metrics()["temperature"])
    assert temps == pytest.approx([1.0, math.exp(-0.3), 0.5])


def test_entropy_annealing_keeps_the_cross_entropy_and_weights_the_entropy():
    model = linear_cpvae()
    x = data()
    with torch.no_grad():
        torch.manual_seed(1)
        terms = CPVAEBound("exact").terms(model, x)
        q = model.posterior(x)
        pi, comps = q.log_weights.exp(), q.component_distribution
        cross = math.log(K) + (pi * (torch.distributions.kl_divergence(comps, prior_conditionals(model.prior))
                                     + comps.entropy())).sum(-1)  # fmt: skip
        entropy = -(pi * q.log_weights).sum(-1) + (pi * comps.entropy()).sum(-1)
        torch.testing.assert_close(terms.annealed(0.3, 0.25), terms.reconstruction - 0.3 * (cross - 0.25 * entropy))
        torch.testing.assert_close(terms.annealed(1.0, 1.0), terms.bound)


@pytest.mark.parametrize(
    "prior",
    [
        {"type": "standard_normal"},
        {"type": "mixture_of_gaussians", "components": K, "learn_weights": True},
        {"type": "mixture_of_gaussians", "components": K + 1},
    ],
)
def test_objective_refuses_a_model_that_is_not_the_conditional_pair(prior):
    model = linear_cpvae(prior=prior)
    with pytest.raises(ConfigError, match="categorical_gaussian"):
        CPVAEBound()(model, data())
    with pytest.raises(ConfigError, match="estimator"):
        CPVAEBound("reinforce")


# --------------------------------------------------------------------------------------- log p(x)


def test_summing_out_c_and_the_joint_importance_sampler_both_estimate_p_x():
    """w = p(x,z)/q(z|x) (c summed out of q and p: what the IS evaluator uses) and the joint (z, c) weight
    p(x|z) p(z|c) p(c) / (q(c|x) q(z|x,c)) both have mean p(x), known exactly here; bounds order below log p(x)."""
    model = linear_cpvae()
    x = data()
    n = 40_000
    with torch.no_grad():
        log_px = exact_log_px(model, x)
        lw, _ = sample_log_weights(model, x, n)
        assert_mc_close((lw.log_w - log_px).exp(), torch.ones(5, dtype=torch.float64), "marginal IS weights")
        q = model.posterior(x)
        z = q.stratified_rsample(n // K).movedim(1, 2)  # z_tk ~ q(z | x, k): [T, B, K, D]
        log_lik = model.log_likelihood(x, z.movedim(2, 1)).movedim(1, 2)  # [T, B, K]
        log_p_zc = prior_conditionals(model.prior).log_prob(z) - math.log(K)  # log p(z | k) + log p(k)
        log_q_zc = q.component_distribution.log_prob(z) + q.log_weights  # log q(z | x, k) + log q(k | x)
        w = (log_lik + log_p_zc - log_q_zc - log_px[:, None]).exp()
        stratified = (q.log_weights.exp() * w).sum(-1)  # c summed exactly in proportion to q(c | x): [T, B]
        assert_mc_close(stratified, torch.ones(5, dtype=torch.float64), "joint (z, c) IS weights")
        est = importance_sampled_log_likelihood(model, x, samples=20_000)
        rel_se = (lw.log_w - log_px).exp().std(0) / math.sqrt(20_000)
        assert ((est.log_likelihood - log_px).abs() < Z_SE * rel_se + 1e-3).all()
        elbo, elbo_se = lw.log_w.mean(0), lw.log_w.std(0) / math.sqrt(n)
        assert (exact_bound(model, x) <= elbo + Z_SE * elbo_se).all() and (elbo <= log_px + Z_SE * elbo_se).all()


# ------------------------------------------------------------------------------------ clustering


def test_clustering_accuracy_on_hand_made_labels():
    pred = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    labels = torch.tensor([1, 1, 0, 2, 2, 0, 0, 1])
    assert majority_accuracy(pred, labels) == 6 / 8  # 0 -> 1, 1 -> 2, 2 -> 0
    assert hungarian_accuracy(pred, labels) == 6 / 8  # the majority map is one-to-one here
    pred = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    labels = torch.tensor([0, 0, 1, 0, 0, 2, 2, 1])
    assert majority_accuracy(pred, labels) == 5 / 8  # categories 0 and 1 both vote label 0
    assert hungarian_accuracy(pred, labels) == 4 / 8  # one-to-one: at most 2 + 1 + 1
    perfect = torch.tensor([2, 2, 0, 1, 1, 0])
    assert hungarian_accuracy(perfect, torch.tensor([0, 0, 1, 2, 2, 1])) == 1.0
    result = clustering_accuracy(torch.tensor([0, 0, 3, 3]), torch.tensor([1, 1, 0, 0]), categories=5)
    assert result["majority_accuracy"] == 1.0 and "hungarian_accuracy" not in result
    assert result["categories_used"] == 2 and result["classes"] == 2


def test_hungarian_accuracy_is_the_best_permutation():
    g = torch.Generator().manual_seed(3)
    for _ in range(5):
        pred, labels = torch.randint(4, (60,), generator=g), torch.randint(4, (60,), generator=g)
        best = max(int((torch.tensor(perm)[pred] == labels).sum()) for perm in itertools.permutations(range(4)))
        assert hungarian_accuracy(pred, labels, classes=4) == best / 60
        assert majority_accuracy(pred, labels, 4, 4) >= best / 60


# ----------------------------------------------------------------------------------------- the toy


def test_toy_dataset_is_the_papers_mixture():
    ds = load_dataset("toy_mixture1d")
    x, y = ds.split("train"), ds.labels("train")
    assert x.shape == (50_000, 1) and ds.sizes == {"train": 50_000, "valid": 10_000, "test": 10_000}
    assert ((x[:, 0] - torch.tensor(MEANS)[y]).abs() < 6 * STD).all()
    assert abs(float(x.mean()) - sum(MEANS) / 2) < Z_SE * float(x.std()) / math.sqrt(50_000)
    assert abs(float(y.float().mean()) - 0.5) < Z_SE * 0.5 / math.sqrt(50_000)
    assert torch.equal(load_dataset("toy_mixture1d").split("test"), ds.split("test"))
    assert not torch.equal(load_dataset("toy_mixture1d", seed=1).split("train"), x)


def test_two_category_cpvae_on_the_toy_generates_both_modes():
    """A few seconds of training: c ~ q(c), z ~ p(z|c), x ~ p(x|z) must put mass near both true modes and little in
    the gap between them, and the two categories must split the data by component. The data have 0.48 of their mass
    within 2 std of each mode and 0.006 in (0.35, 0.75); a model that collapsed to one broad mode measured 0.19-0.26
    near each mode and 0.23-0.34 in the gap; this one, 0.36-0.40 near each and 0.12-0.16 in the gap (seeds 0-2)."""
    cfg = ModelConfig(
        latent_dim=2,
        encoder={"type": "mlp", "hidden": [32, 32]},
        decoder={"type": "mlp", "hidden": [32, 32]},
        posterior={"type": "categorical_gaussian", "categories": 2, "hidden": 32},
        prior={"type": "conditional"},
        likelihood={"type": "gaussian", "variance": "learned", "sigma": 0.1},
    )
    model = build_model(cfg, (1,))
    ds = load_dataset("toy_mixture1d")
    x_train = ds.split("train")
    objective, opt = CPVAEBound("exact"), torch.optim.Adam(model.parameters(), lr=5e-3)
    for step in range(500):
        x = x_train[torch.randint(50_000, (100,))]
        loss = -objective(model, x, beta=min(1.0, (step + 1) / 200)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    q_c = aggregated_posterior(model, x_train[:5000])
    gen = generate(model, draw_categories(q_c, 20_000), mean=False).reshape(-1)
    near = [float(((gen - m).abs() < 2 * STD).float().mean()) for m in MEANS]
    gap = float(((gen > 0.35) & (gen < 0.75)).float().mean())
    assert min(near) > 0.3 and gap < 0.2, f"mass near the modes {near}, in the gap {gap}"
    with torch.no_grad():
        pred = model.posterior(ds.split("test")[:2000]).log_weights.argmax(1)
    assert hungarian_accuracy(pred, ds.labels("test")[:2000]) > 0.95


# ------------------------------------------------------------------------------------ CLI: sampling

TINY_CP = [
    "--set", "data.name=mnist", "--set", "data.subset=300", "--set", "data.valid_subset=100",
    "--set", "model.latent_dim=4", "--set", "model.encoder={type: mlp, hidden: [32]}",
    "--set", "model.decoder={type: mlp, hidden: [32]}",
    "--set", "model.posterior={type: categorical_gaussian, categories: 3, hidden: 16}",
    "--set", "model.prior={type: conditional}", "--set", "objective.type=cpvae",
    "--set", "train.epochs=1", "--set", "eval.is_samples=10", "--set", "eval.subset=50", "--set", "eval.grid=3",
]  # fmt: skip


def grid_shape(n: int, rows: int | None = None, side: int = 28, scale: int = 3) -> tuple[int, int]:
    """Pixel size of `save_image_grid`'s PNG for n images of side x side."""
    rows = rows or math.ceil(math.sqrt(n))
    cols = math.ceil(n / rows)
    return (rows * (side + 1) + 1) * scale, (cols * (side + 1) + 1) * scale


def test_train_evaluate_and_sample_by_cluster(tmp_path, capsys):
    import matplotlib.image

    run_dir, pics = tmp_path / "cp", tmp_path / "pics"
    assert main(["train", *TINY_CP, "--run-dir", str(run_dir), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "NVLB" in out and "majority accuracy" in out
    result = json.loads((run_dir / "eval-test.json").read_text())["cpvae"]
    assert result["categories"] == 3 and 0 <= result["clustering"]["majority_accuracy"] <= 1
    assert result["nvlb"] == pytest.approx(result["kl_c"] + result["kl_z"] - result["reconstruction"])
    assert matplotlib.image.imread(run_dir / "clusters.png").shape[:2] == grid_shape(30, rows=3)  # a row per category
    assert len(json.loads((run_dir / "aggregated_posterior.json").read_text())["q_c"]) == 3

    assert main(["sample", str(run_dir), "--cluster", "2", "--n", "12", "--out", str(pics)]) == 0
    assert matplotlib.image.imread(pics / "samples-cluster2.png").shape[:2] == grid_shape(12)
    assert main(["sample", str(run_dir), "--cluster", "3"]) == 2
    assert "--cluster must be a category in 0..2, got 3" in capsys.readouterr().err
    run = runs.load_run(run_dir)
    runs.sample(run, 7, pics, categories="uniform")
    assert matplotlib.image.imread(pics / "samples.png").shape[:2] == grid_shape(7)
