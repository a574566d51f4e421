"""CP-VAE (Lavda et al.): the categorical x Gaussian posterior, the conditional prior, the bound of eq. (7) with its
KL split (eqs. 8-9) under both estimators, log p(x) with c summed out, clustering accuracy, the 1-D toy, sampling,
the decoder p(x | z, c) of eq. (3) with log p(x) stratified over c, and the Gumbel-Softmax temperature schedules.

Exact references come from a CP-VAE with a linear decoder and a fixed-variance Gaussian likelihood: then
E_{N(m, diag s^2)} log p(x | z) and p(x) = (1/K) sum_k N(x; W mu_k + b, W diag(sigma_k^2) W^T + s^2 I) are closed
form; with p(x | z, c) a linear-Gaussian decoder per category, N(W_c z + b_c, s^2 I), p(x) = (1/K) sum_k
N(x; W_k mu_k + b_k, W_k diag(sigma_k^2) W_k^T + s^2 I), and with orthogonal columns in W_k the exact posterior
p(z | x, c) is a diagonal Gaussian. Monte Carlo comparisons use 4 standard errors (about a 1-in-15,000 false alarm
for a Gaussian mean).
"""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from vaelab import recording
from vaelab.app import runs
from vaelab.app.cli import main
from vaelab.config import ModelConfig, load_config
from vaelab.config.build import build_model
from vaelab.data import load_dataset
from vaelab.data.toy_mixture1d import MEANS, STD
from vaelab.distributions import DiagonalNormal, ReparameterizedMixture
from vaelab.distributions.gumbel_softmax import relaxed_one_hot
from vaelab.errors import ConfigError
from vaelab.evaluation.clustering import CategoryTally, clustering_accuracy, hungarian_accuracy, majority_accuracy
from vaelab.evaluation.cpvae import evaluate_cpvae, log_likelihood_over_c
from vaelab.evaluation.gaps import measure_gaps
from vaelab.evaluation.loglik import importance_sampled_log_likelihood
from vaelab.evaluation.stratified import stratified_log_likelihood
from vaelab.fitting import fit_config
from vaelab.mcmc import ais
from vaelab.models.cpvae import CPVAE, aggregated_posterior, draw_categories, generate, prior_conditionals
from vaelab.models.vae import VAE
from vaelab.objectives.bounds import sample_log_weights
from vaelab.objectives.cpvae import CPVAEBound, kl_terms
from vaelab.objectives.stratified import stratified_log_weights
from vaelab.posteriors.conditional import CategoricalGaussian
from vaelab.train.diagnostics import validation_diagnostics
from vaelab.train.trainer import Trainer, read_jsonl

K, D, X_DIM, SIGMA = 3, 2, 4, 0.7
Z_SE = 4.0  # tolerance in standard errors


def linear_cpvae(
    categories: int = K, hidden: int | None = 6, prior: dict | None = None, decoder_input: str = "z"
) -> torch.nn.Module:
    """A float64 CP-VAE with a linear decoder (on z: N(Wz + b, SIGMA^2 I); on [z, c]: N(W [z, c] + b, SIGMA^2 I));
    prior means spread out and c's weights in the gated layer scaled up, so that the categories differ."""
    cfg = ModelConfig(
        latent_dim=D,
        encoder={"type": "mlp", "hidden": [8], "activation": "tanh"},
        decoder={"type": "linear"},
        posterior={"type": "categorical_gaussian", "categories": categories, "hidden": hidden},
        prior=prior or {"type": "conditional", "init_scale": 1.5},
        likelihood={"type": "gaussian", "variance": "fixed", "sigma": SIGMA},
        options={"decoder_input": decoder_input},
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


def assert_gradients_reach_every_part(model, x) -> None:
    """Under both estimators, the bound's gradient reaches every parameter but the likelihood's (which has none)."""
    for estimator in ("exact", "gumbel"):
        model.zero_grad()
        (-CPVAEBound(estimator)(model, x, beta=0.5).mean()).backward()
        for name, p in model.named_parameters():
            if not name.startswith("likelihood"):
                assert p.grad is not None and p.grad.abs().sum() > 0, f"{estimator}: no gradient for {name}"


def test_training_gradients_reach_every_part_and_temperature_anneals():
    model = linear_cpvae().float()
    x = data().float()
    assert_gradients_reach_every_part(model, x)
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


def test_category_tally_of_a_known_q_c_over_batches_and_ranks():
    """q(c) = [1/2, 1/4, 1/4]: perplexity 2^1.5; argmax 0, 0, 2, 1 against labels 1, 0, 0, 2: majority and Hungarian
    accuracy 3/4; the sums of two blocks (two ranks, all-reduced) give what one pass gives."""
    probs = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.4, 0.0], [0.0, 0.0, 1.0], [0.4, 0.6, 0.0]])
    labels = torch.tensor([1, 0, 0, 2])
    whole = CategoryTally(3, 3, "cpu")
    whole.add(probs[:1], labels[:1])
    whole.add(probs[1:], labels[1:])
    expected = {"q_c_perplexity": 2**1.5, "categories_used": 3, "majority_accuracy": 0.75, "hungarian_accuracy": 0.75}
    assert whole.summary() == pytest.approx(expected)
    a, b = CategoryTally(3, 3, "cpu"), CategoryTally(3, 3, "cpu")
    a.add(probs[:2], labels[:2])
    b.add(probs[2:], labels[2:])
    assert a.summary(lambda t: t + (b.q_sum if t is a.q_sum else b.table)) == pytest.approx(expected)
    unlabelled = CategoryTally(4, None, "cpu")  # K = 4, one category never the argmax, no labels
    unlabelled.add(torch.cat([probs, torch.zeros(4, 1)], 1))
    assert unlabelled.summary() == pytest.approx({"q_c_perplexity": 2**1.5, "categories_used": 3})
    with_labels = CategoryTally(4, 3, "cpu")  # K != classes: no one-to-one matching
    with_labels.add(torch.cat([probs, torch.zeros(4, 1)], 1), labels)
    assert set(with_labels.summary()) == {"q_c_perplexity", "categories_used", "majority_accuracy"}


class LabelledTensors:
    """One tensor as every split, with labels (what the trainer reads of a vaelab dataset)."""

    name = "labelled"

    def __init__(self, x: torch.Tensor, y: torch.Tensor, train_y: torch.Tensor | None = None) -> None:
        self.x, self.y, self.train_y, self.label_reads = x, y, train_y, 0

    def split(self, name: str, epoch: int = 0) -> torch.Tensor:
        return self.x

    def labels(self, name: str) -> torch.Tensor:
        self.label_reads += 1
        return self.train_y if name == "train" and self.train_y is not None else self.y


@pytest.mark.parametrize("decoder_input", ["z_and_c", "z"])
def test_validation_epochs_log_category_use_as_computed_directly(tmp_path, decoder_input):
    model = linear_cpvae(decoder_input=decoder_input)
    x, y = data(11), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1])
    cfg = fit_config("cpvae", 2, 4, 1e-3, "adam", 0, False, validate_every=2)
    cfg.data.eval_batch_size = 3  # 4 validation batches, the last one short
    Trainer(cfg, tmp_path, model, LabelledTensors(x, y), torch.device("cpu")).fit()
    first, second = read_jsonl(tmp_path / "metrics.jsonl")
    assert "q_c_perplexity" not in first and "valid_loss" not in first  # no validation in epoch 1
    with torch.no_grad():  # the weights validated after epoch 2 are the final ones
        probs = model.posterior(x).log_weights.exp()
    q_c, pred = probs.mean(0), probs.argmax(1)
    assert second["q_c_perplexity"] == pytest.approx(math.exp(-float((q_c * q_c.log()).sum())), rel=1e-9)
    assert second["categories_used"] == pred.unique().numel()
    accuracy = clustering_accuracy(pred, y, K)
    assert second["majority_accuracy"] == pytest.approx(accuracy["majority_accuracy"])
    assert second["hungarian_accuracy"] == pytest.approx(accuracy["hungarian_accuracy"])
    assert validation_diagnostics(torch.nn.Linear(2, 2), 3, torch.device("cpu")) == []  # not a CP-VAE: none


def test_classes_count_the_training_labels_and_labels_are_read_once(tmp_path):
    """A validation split without the largest class still has K = 3 classes (from the training labels), so the
    one-to-one (Hungarian) accuracy is logged; the labels are read in the first validation only."""
    model = linear_cpvae()
    x = data(11)
    valid_y, train_y = torch.tensor([0, 1] * 5 + [0]), torch.tensor([0, 1, 2] * 3 + [0, 1])
    ds = LabelledTensors(x, valid_y, train_y)
    cfg = fit_config("cpvae", 3, 4, 1e-3, "adam", 0, False, validate_every=1)
    Trainer(cfg, tmp_path, model, ds, torch.device("cpu")).fit()
    lines = read_jsonl(tmp_path / "metrics.jsonl")
    assert len(lines) == 3 and all("hungarian_accuracy" in line for line in lines)
    assert ds.label_reads == 2  # valid and train, once


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


@pytest.mark.needs_dataset("mnist")
@pytest.mark.parametrize("decoder_input", ["z_and_c", "z"])
def test_train_evaluate_and_sample_by_cluster(tmp_path, capsys, decoder_input):
    """A tiny MNIST run trains, evaluates (log p(x) stratified over c for p(x | z, c), else IS over z with c summed
    out of q and p) and samples by cluster."""
    import matplotlib.image

    run_dir, pics = tmp_path / "cp", tmp_path / "pics"
    args = [*TINY_CP, "--set", f"model.options={{decoder_input: {decoder_input}}}", "--run-dir", str(run_dir)]
    assert main(["train", *args, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "NVLB" in out and "majority accuracy" in out and "log p(x) ~" in out
    evaluation = json.loads((run_dir / "eval-test.json").read_text())
    per_example = torch.load(run_dir / "eval-test-per-example.pt")
    assert per_example["log_likelihood"].shape == (evaluation["n"],) == (50,)
    assert math.isfinite(evaluation["log_likelihood"]) and evaluation["log_likelihood"] >= evaluation["elbo"] - 1.0
    if decoder_input == "z_and_c":
        assert isinstance(recording.load_run(run_dir).model, CPVAE)
        assert evaluation["log_likelihood_estimator"] == "importance sampling stratified over c"
        assert evaluation["z_samples_per_category"] == 3 and "siwae_log_likelihood" not in evaluation  # 10 / 3
    else:
        assert "log_likelihood_estimator" not in evaluation and "siwae_log_likelihood" in evaluation
    result = evaluation["cpvae"]
    assert result["categories"] == 3 and 0 <= result["clustering"]["majority_accuracy"] <= 1
    assert result["nvlb"] == pytest.approx(result["kl_c"] + result["kl_z"] - result["reconstruction"])
    assert matplotlib.image.imread(run_dir / "clusters.png").shape[:2] == grid_shape(30, rows=3)  # a row per category
    assert len(json.loads((run_dir / "aggregated_posterior.json").read_text())["q_c"]) == 3

    assert main(["sample", str(run_dir), "--cluster", "2", "--n", "12", "--out", str(pics)]) == 0
    assert matplotlib.image.imread(pics / "samples-cluster2.png").shape[:2] == grid_shape(12)
    assert main(["sample", str(run_dir), "--cluster", "3"]) == 2
    assert "--cluster must be a category in 0..2, got 3" in capsys.readouterr().err
    run = recording.load_run(run_dir)
    runs.sample(run, 7, pics, categories="uniform")
    assert matplotlib.image.imread(pics / "samples.png").shape[:2] == grid_shape(7)


# ------------------------------------------------------------------- the decoder p(x | z, c) (eq. 3)


class PerCategoryLinear(torch.nn.Module):
    """A decoder on [z, c] `[..., D + K]` with mean sum_k c_k (W_k z + b_k): linear-Gaussian per category."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.weight, self.bias = torch.nn.Parameter(weight), torch.nn.Parameter(bias)  # [K, X, D], [K, X]

    def forward(self, zc: torch.Tensor) -> torch.Tensor:
        z, c = zc[..., :D], zc[..., D:]
        per_category = torch.einsum("kxd,...d->...kx", self.weight, z) + self.bias  # [..., K, X]
        return (c.unsqueeze(-1) * per_category).sum(-2)


def category_decoder_cpvae() -> CPVAE:
    """A float64 CP-VAE whose decoder reads c: x | z, c ~ N(W_c z + b_c, SIGMA^2 I), W_c = Q_c diag(s_c) with
    orthonormal Q_c (so that p(z | x, c) is a diagonal Gaussian)."""
    model = linear_cpvae(decoder_input="z_and_c")
    g = torch.Generator().manual_seed(5)
    q_c = torch.linalg.qr(torch.randn(K, X_DIM, D, generator=g, dtype=torch.float64))[0]  # [K, X, D]
    scales = 0.5 + 1.5 * torch.rand(K, 1, D, generator=g, dtype=torch.float64)
    model.decoder = PerCategoryLinear(q_c * scales, torch.randn(K, X_DIM, generator=g, dtype=torch.float64))
    model.likelihood.log_sigma.fill_(math.log(SIGMA))  # SIGMA in float64, not its float32 rounding
    return model


def marginal_log_px(model, x: torch.Tensor) -> torch.Tensor:
    """log p(x) = log (1/K) sum_k N(x; W_k mu_k + b_k, W_k Sigma_k W_k^T + SIGMA^2 I) (eq. 3 in closed form): `[B]`."""
    w, b = model.decoder.weight, model.decoder.bias
    mu, var = model.prior.loc, model.prior.log_var.exp()
    cov = w @ torch.diag_embed(var) @ w.mT + SIGMA**2 * torch.eye(X_DIM, dtype=x.dtype)  # [K, X, X]
    comp = MultivariateNormal(torch.einsum("kxd,kd->kx", w, mu) + b, cov).log_prob(x.unsqueeze(1))  # [B, K]
    return torch.logsumexp(comp, -1) - math.log(K)


def exact_posteriors(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation `[B, K, D]` of p(z | x, c = k), diagonal since W_k^T W_k is."""
    w, b = model.decoder.weight, model.decoder.bias
    prior_var = model.prior.log_var.exp()  # [K, D]
    precision = 1 / prior_var + w.square().sum(1) / SIGMA**2  # [K, D]
    data_term = torch.einsum("kxd,bkx->bkd", w, x.unsqueeze(1) - b) / SIGMA**2
    mean = (data_term + model.prior.loc / prior_var) / precision
    return mean, precision.rsqrt().expand_as(mean)


def proposal(model, x: torch.Tensor, shift: float = 0.0, widen: float = 1.0) -> ReparameterizedMixture:
    """q(z, c | x) with q(z | x, c) the exact posterior (shifted by `shift` posterior sds, sds times `widen`) and a
    non-uniform q(c | x), which the estimator must cancel."""
    mean, sd = exact_posteriors(model, x)
    logits = torch.linspace(-2.0, 1.0, K, dtype=x.dtype).expand(x.shape[0], K)
    return ReparameterizedMixture(logits, DiagonalNormal(mean + shift * sd, widen * sd))


def category_decoder_bound(model, x: torch.Tensor) -> torch.Tensor:
    """L(x) of eq. (7) for `category_decoder_cpvae` with A in closed form: `[B]`."""
    q = model.posterior(x)
    comps, w, b = q.component_distribution, model.decoder.weight, model.decoder.bias
    mean = torch.einsum("kxd,bkd->bkx", w, comps.loc) + b  # [B, K, X]
    spread = torch.einsum("kxd,bkd->bk", w.square(), comps.scale.square())
    sq = (x.unsqueeze(1) - mean).square().sum(-1)
    log_lik = -0.5 * X_DIM * math.log(2 * math.pi * SIGMA**2) - (sq + spread) / (2 * SIGMA**2)
    kl_c, kl_z, _ = kl_terms(q, model.prior)
    return (q.log_weights.exp() * log_lik).sum(-1) - kl_c - kl_z


def test_decoder_input_option_builds_the_decoder_on_z_and_c_by_default():
    cfg = dict(
        latent_dim=D, encoder={"type": "mlp", "hidden": [8]}, decoder={"type": "linear"},
        posterior={"type": "categorical_gaussian", "categories": K}, prior={"type": "conditional"},
        likelihood={"type": "gaussian", "variance": "fixed", "sigma": SIGMA},
    )  # fmt: skip
    default = build_model(ModelConfig(**cfg), (X_DIM,))
    assert isinstance(default, CPVAE) and default.decoder.body[0].in_features == D + K
    on_z = build_model(ModelConfig(**cfg, options={"decoder_input": "z"}), (X_DIM,))
    assert type(on_z) is VAE and on_z.decoder.body[0].in_features == D
    plain = {**cfg, "posterior": {"type": "diagonal_gaussian"}, "prior": {"type": "standard_normal"}}
    assert type(build_model(ModelConfig(**plain), (X_DIM,))) is VAE
    with pytest.raises(ConfigError, match="needs a CP-VAE"):
        build_model(ModelConfig(**plain, options={"decoder_input": "z_and_c"}), (X_DIM,))
    with pytest.raises(ConfigError, match="decoder_input must be one of z_and_c, z"):
        build_model(ModelConfig(**cfg, options={"decoder_input": "c"}), (X_DIM,))
    x = data()[:3].float()
    z = torch.randn(3, D)
    c = torch.nn.functional.one_hot(torch.tensor([0, 2, 1]), K).float()
    lin = default.decoder.body[0]
    torch.testing.assert_close(default.decode(z, c), torch.cat([z, c], -1) @ lin.weight.T + lin.bias)
    with pytest.raises(ConfigError, match="decoder reads c"):
        default.log_joint(x, z)


def test_log_px_stratified_over_c_is_exact_with_the_exact_posteriors():
    """With q(z | x, c) = p(z | x, c) every weight of category k is p(x | c = k): the estimate is log p(x) exactly,
    whatever T and q(c | x)."""
    model = category_decoder_cpvae()
    x = data()
    with torch.no_grad():
        target, q = marginal_log_px(model, x), proposal(model, x)
        for samples in (K, 7 * K):
            est = stratified_log_likelihood(model, x, samples, q=q)
            torch.testing.assert_close(est.log_likelihood, target, rtol=0, atol=1e-9)


def test_log_px_stratified_over_c_is_unbiased_for_p_x_and_a_converging_lower_bound():
    model = category_decoder_cpvae()
    x = data()
    with torch.no_grad():
        target, q = marginal_log_px(model, x), proposal(model, x, shift=0.7, widen=1.4)
        draws = stratified_log_weights(model, x, 20_000, q)  # T = 20,000 draws per category
        v = draws.parts.log_w + draws.log_alpha  # [T, K, B]: log p(k) p(x | z, k) p(z | k) / q(z | x, k)
        ratio = (torch.logsumexp(v, 1) - target).exp()  # [T, B]: one draw per category, mean 1
        assert_mc_close(ratio, torch.ones(5, dtype=torch.float64), "p^(x) / p(x)")
        gaps = []
        for samples in (K, 8 * K):  # T = 1 and 8: below log p(x) in expectation (Jensen), less so with more draws
            est = torch.stack([stratified_log_likelihood(model, x, samples, q=q).log_likelihood for _ in range(300)])
            gaps.append((target - est.mean(0), est.std(0) / math.sqrt(300)))
        (gap1, se1), (gap8, se8) = gaps
        assert (gap1 > Z_SE * se1).all(), f"T = 1: not below log p(x): gaps {gap1.tolist()}"
        assert (gap8 > -Z_SE * se8).all(), f"T = 8: above log p(x): gaps {gap8.tolist()}"
        assert (gap1 - gap8 > Z_SE * (se1.square() + se8.square()).sqrt()).all(), "the bound does not tighten with T"
        big = stratified_log_likelihood(model, x, 3 * 20_000, q=q).log_likelihood
        rel_se = ratio.std(0) / math.sqrt(20_000)
        assert ((big - target).abs() < Z_SE * rel_se + 1e-4).all(), f"T = 20,000: {big - target}"
        # the evaluator over a dataset, with the model's own (poorer) encoder: it converges as well
        est = log_likelihood_over_c(model, x, samples=3 * 20_000, progress=False).log_likelihood
        v = stratified_log_weights(model, x, 20_000).parts.log_w + model.posterior(x).log_weights.T
        rel_se = (torch.logsumexp(v, 1) - target).exp().std(0) / math.sqrt(20_000)
        assert ((est - target).abs() < Z_SE * rel_se + 1e-3).all(), f"own encoder, T = 20,000: {est - target}"


def test_bound_with_the_decoder_on_c_matches_closed_form_and_brute_force():
    """eq. (7) with p(x | z, c): the exact-sum and Gumbel estimators and the evaluator's Monte Carlo bound against
    its closed form, and the NVLB of `evaluate_cpvae` against a loop over points and categories on the same draws."""
    model = category_decoder_cpvae()
    x = data()
    with torch.no_grad():
        target = category_decoder_bound(model, x)
        exact = torch.stack([CPVAEBound("exact", samples=50)(model, x) for _ in range(200)])
        assert_mc_close(exact, target, "exact-sum estimator, p(x | z, c)")
        hard = torch.stack([CPVAEBound("gumbel", samples=50)(model, x) for _ in range(200)])
        assert_mc_close(hard, target, "Gumbel estimator at zero temperature, p(x | z, c)")
        selbo = torch.stack([log_likelihood_over_c(model, x, 30 * K, progress=False).elbo for _ in range(200)])
        assert_mc_close(selbo, target, "eq. (7) from the draws stratified over c")

        torch.manual_seed(11)
        nvlb = evaluate_cpvae(model, x, samples=3, progress=False)["nvlb"]
        torch.manual_seed(11)
        q = model.posterior(x)
        z = q.stratified_rsample(3)  # the draws evaluate_cpvae made: [T, K, B, D]
        pi, comps, p = q.log_weights.exp(), q.component_distribution, prior_conditionals(model.prior)
        total = 0.0
        for b in range(x.shape[0]):
            for k in range(K):
                for t in range(3):
                    mean = model.decoder.weight[k] @ z[t, k, b] + model.decoder.bias[k]
                    log_lik = torch.distributions.Normal(mean, SIGMA).log_prob(x[b]).sum()
                    total -= pi[b, k] * log_lik / 3
                q_k = torch.distributions.Normal(comps.loc[b, k], comps.scale[b, k])
                p_k = torch.distributions.Normal(p.loc[k], p.scale[k])
                total += pi[b, k] * (torch.log(pi[b, k] * K) + torch.distributions.kl_divergence(q_k, p_k).sum())
        assert nvlb == pytest.approx(float(total) / x.shape[0], rel=1e-10)


def test_training_gradients_reach_every_part_with_the_decoder_on_c():
    model = linear_cpvae(decoder_input="z_and_c").float()
    x = data().float()
    assert_gradients_reach_every_part(model, x)
    lin = model.decoder.body[0]
    assert lin.weight.grad[:, D:].abs().sum() > 0  # the decoder's weights on c are trained


def test_generation_and_estimators_over_z_alone_with_the_decoder_on_c():
    """Generation by category feeds c to the decoder; IS over z, AIS and the gaps refuse such a model in one line."""
    model = category_decoder_cpvae()
    gen = generate(model, torch.full((20_000,), 1), mean=True)  # E[x | z, c = 1], z ~ p(z | c = 1)
    w, b, mu = model.decoder.weight[1], model.decoder.bias[1], model.prior.loc[1]
    se = (w @ torch.diag(model.prior.log_var[1].exp()) @ w.T).diagonal().sqrt() / math.sqrt(20_000)
    assert ((gen.mean(0) - (w @ mu + b)).abs() < Z_SE * se).all()
    assert model.sample(7).shape == (7, X_DIM) and model.reconstruct(data()).shape == (5, X_DIM)
    x = data()
    for refuse in (
        lambda: importance_sampled_log_likelihood(model, x, samples=10),
        lambda: ais(model, x, chains=2, schedule=3, progress=False),
        lambda: measure_gaps(model, x, progress=False),
    ):
        with pytest.raises(ConfigError, match="decoder reads c"):
            refuse()
    with pytest.raises(ConfigError, match="reads z only"):
        log_likelihood_over_c(linear_cpvae(), x, progress=False)


# -------------------------------------------------------------------------------- temperature schedules


def test_compound_temperature_schedule_is_the_authors_recursion_in_closed_form():
    """utils/training.py of the authors' code: tau <- max(tau_min, tau exp(-r n)) at the start of each epoch n = 1, 2,
    ...; in closed form tau = max(tau_min, exp(-r n (n + 1) / 2)), 0.5 first reached at n = 215 with r = 3e-5."""
    rate = 3.0e-5
    obj = CPVAEBound("gumbel", temperature=1.0, min_temperature=0.5, anneal="compound", anneal_rate=rate)
    tau, first_floor = 1.0, None
    for epoch in range(400):
        n = epoch + 1
        tau = max(0.5, tau * math.exp(-rate * n))
        obj.set_epoch(epoch)
        got = obj.epoch_metrics()["temperature"]
        assert got == pytest.approx(max(0.5, math.exp(-rate * n * (n + 1) / 2)), rel=1e-12)
        assert got == pytest.approx(tau, rel=1e-12)
        if got == 0.5 and first_floor is None:
            first_floor = n
    assert first_floor == 215
    scaled = CPVAEBound("gumbel", temperature=2.0, min_temperature=0.5, anneal="compound", anneal_rate=0.01)
    scaled.set_epoch(9)
    assert scaled.temperature == pytest.approx(2.0 * math.exp(-0.01 * 55))
    with pytest.raises(ConfigError, match="anneal must be one of exponential, compound"):
        CPVAEBound("gumbel", anneal="linear")


def test_cpvae_configs_use_the_decoder_on_c_and_the_compound_schedule():
    for name in ("mnist", "toy_k2", "toy_k150"):
        for budget in ("quick", "full"):
            cfg = load_config(f"configs/cpvae/{name}.yaml", budget=budget)
            assert cfg.model.options["decoder_input"] == "z_and_c"
            options = cfg.objective.options
            assert options["estimator"] == "gumbel" and options["anneal"] == "compound", (name, budget)
            if budget == "full":
                assert options["anneal_rate"] == 3.0e-5 and options["min_temperature"] == 0.5


# ------------------------------------------------------------------- the authors' relaxed scoring (an ablation)


def test_relaxed_scoring_scores_validation_with_the_training_estimator():
    """relaxed_scoring keeps the Gumbel-Softmax c~ at tau without gradients (the authors' validation), so the no-grad
    value is the training value on the same draws; by default the no-grad value draws c exactly."""
    model, x = category_decoder_cpvae(), data()
    relaxed = CPVAEBound("gumbel", temperature=0.7, relaxed_scoring=True)
    torch.manual_seed(3)
    with torch.enable_grad():
        training = relaxed(model, x).detach()
    torch.manual_seed(3)
    with torch.no_grad():
        torch.testing.assert_close(relaxed(model, x), training)
        torch.manual_seed(3)
        assert not torch.allclose(CPVAEBound("gumbel", temperature=0.7)(model, x), training)
    with pytest.raises(ConfigError, match="relaxed_scoring .* estimator: gumbel"):
        CPVAEBound("exact", relaxed_scoring=True)


def test_nvlb_relaxed_is_the_bound_as_tau_vanishes_and_differs_from_it_at_tau():
    """evaluate_cpvae's nvlb_relaxed (the authors' test "lower bound"): at a tiny tau c~ is the exact one-hot draw, so
    its mean over repeats is -L(x) in closed form; at tau = 0.5 the decoder reads continuous c~ and it moves off."""
    model, x = category_decoder_cpvae(), data()
    target = category_decoder_bound(model, x).mean()
    torch.manual_seed(0)
    cold = torch.tensor(
        [evaluate_cpvae(model, x, progress=False, temperature=1e-6)["nvlb_relaxed"] for _ in range(400)]
    )
    warm = torch.tensor([evaluate_cpvae(model, x, progress=False, temperature=0.5)["nvlb_relaxed"] for _ in range(200)])
    assert_mc_close(cold.unsqueeze(1), -target.reshape(1), "nvlb_relaxed at tau -> 0")
    assert (warm.mean() + target).abs() > 6 * warm.std() / math.sqrt(200), "tau = 0.5 should bias the estimate"
    assert "nvlb_relaxed" not in evaluate_cpvae(model, x, progress=False)


def test_evaluation_reads_the_temperature_of_the_selected_weights(tmp_path):
    """`vaelab evaluate` scores nvlb_relaxed at the temperature of the epoch whose weights best.safetensors holds."""
    from types import SimpleNamespace

    from vaelab.config.schema import ObjectiveConfig

    rows = [
        {"epoch": 1, "temperature": 0.9, "valid_loss": 5.0, "best_valid_loss": 5.0},
        {"epoch": 2, "temperature": 0.7, "valid_loss": 4.0, "best_valid_loss": 4.0},
        {"epoch": 3, "temperature": 0.5, "valid_loss": 4.5, "best_valid_loss": 4.0},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    gumbel = ObjectiveConfig(type="cpvae", options={"estimator": "gumbel"})
    run = SimpleNamespace(path=tmp_path, cfg=SimpleNamespace(objective=gumbel))
    assert runs._gumbel_temperature(run) == 0.7
    run.cfg.objective = ObjectiveConfig(type="cpvae", options={"estimator": "exact"})
    assert runs._gumbel_temperature(run) is None


def test_conditional_prior_authors_init_and_freeze():
    """`init: authors`: means in [0, 1), log-variances softplus(u; 1/2) in [2 log 2, 2 log(1 + e^(1/2))), as the
    authors' code draws them (`train.freeze: [prior]` then keeps them fixed, as that code does)."""

    def build(init: str) -> torch.nn.Module:
        cfg = ModelConfig(
            latent_dim=D,
            encoder={"type": "mlp", "hidden": [8]},
            decoder={"type": "linear"},
            posterior={"type": "categorical_gaussian", "categories": 50},
            prior={"type": "conditional", "init": init},
            likelihood={"type": "gaussian", "variance": "fixed", "sigma": SIGMA},
        )
        return build_model(cfg, (X_DIM,))

    prior = build("authors").prior
    loc, log_var = prior.loc.detach(), prior.log_var.detach()
    assert ((loc >= 0) & (loc < 1)).all() and loc.std() > 0.2
    assert ((log_var >= 2 * math.log(2)) & (log_var < 2 * math.log1p(math.exp(0.5)))).all()
    with pytest.raises(ConfigError, match="init must be"):
        build("uniform")


def test_kl_z_at_the_draw_is_the_authors_b2():
    """sum_k q(k|x) KL(q(z|x,c~) || p(z|k)) against a brute-force sum of torch Normal KLs; equal to eq. 8's B2 when
    q(z | x, c) does not depend on c; refused without the Gumbel estimator."""
    from torch.distributions import Normal

    from vaelab.objectives.cpvae import _gumbel_terms, kl_z_at_the_draw

    torch.manual_seed(3)
    model, x = linear_cpvae(), data(6)
    q = model.posterior(x)
    _, q_z = _gumbel_terms(model, x, q, 4, 0.7, False)  # batch [4, 6]
    got = kl_z_at_the_draw(q, q_z, model.prior)
    pi, prior = q.log_weights.exp(), model.prior
    brute = torch.zeros(6, dtype=torch.float64)
    for s, b, k in itertools.product(range(4), range(6), range(K)):
        qn = Normal(q_z.loc[s, b], q_z.scale[s, b])
        pn = Normal(prior.loc[k], (0.5 * prior.log_var[k]).exp())
        brute[b] += pi[b, k] * torch.distributions.kl_divergence(qn, pn).sum() / 4
    torch.testing.assert_close(got, brute)
    with torch.no_grad():
        model.posterior_family.joint.weight[:, model.posterior_family.in_features :].zero_()
    q = model.posterior(x)
    _, q_z = _gumbel_terms(model, x, q, 2, 0.7, False)
    torch.testing.assert_close(kl_z_at_the_draw(q, q_z, model.prior), kl_terms(q, model.prior)[1])
    bound = CPVAEBound(estimator="gumbel", kl_z="at_the_draw")
    assert torch.isfinite(bound(model, x)).all()
    with pytest.raises(ConfigError, match="at_the_draw"):
        CPVAEBound(estimator="exact", kl_z="at_the_draw")
    with pytest.raises(ConfigError, match="kl_z must be"):
        CPVAEBound(kl_z="draw")


def test_independent_decoder_draw_pairs_z_of_one_category_with_the_decoder_of_another():
    """`decoder_draw: independent` (the authors' code's second Gumbel draw for the decoder): near tau = 0 its A is
    sum_{k, j} q(k|x) q(j|x) E_{q(z|x,k)} log p(x | z, j) in closed form, not the bound's sum_k q(k|x) E log p(x|z,k);
    at tau = 0 (the bound's estimate) the draw stays shared; refused without the Gumbel estimator."""
    torch.manual_seed(7)
    model, x = category_decoder_cpvae(), data()
    with torch.no_grad():
        q = model.posterior(x)
        pi, comps, w, b = q.log_weights.exp(), q.component_distribution, model.decoder.weight, model.decoder.bias
        mean = torch.einsum("jxd,bkd->bkjx", w, comps.loc) + b  # z from category k, decoder of category j
        spread = torch.einsum("jxd,bkd->bkj", w.square(), comps.scale.square())
        sq = (x[:, None, None] - mean).square().sum(-1)
        log_lik = -0.5 * X_DIM * math.log(2 * math.pi * SIGMA**2) - (sq + spread) / (2 * SIGMA**2)  # [B, K, K]
        crossed = torch.einsum("bk,bj,bkj->b", pi, pi, log_lik)
        matched = (pi * log_lik.diagonal(dim1=1, dim2=2)).sum(-1)

        def reconstruction(decoder_draw: str, relaxed: bool = True) -> torch.Tensor:
            """200 estimates of A at tau = 1e-4 (`relaxed`), or with the hard draws of the bound's estimate."""
            options = dict(temperature=1e-4, relaxed_scoring=relaxed, decoder_draw=decoder_draw)
            bound = CPVAEBound("gumbel", samples=50, **options)
            return torch.stack([bound.terms(model, x).reconstruction for _ in range(200)])

        independent, shared = reconstruction("independent"), reconstruction("shared")
        assert_mc_close(independent, crossed, "independent draws near tau = 0")
        assert_mc_close(shared, matched, "one shared draw near tau = 0")
        assert_mc_close(reconstruction("independent", relaxed=False), matched, "hard draws (tau = 0) stay shared")
        z_wrong = (independent.mean(0) - matched).abs() / (independent.std(0) / math.sqrt(200))
        assert z_wrong.max() > 2 * Z_SE  # the test tells the two apart
        assert_mc_close(reconstruction("independent", 0.0), matched, "hard draws (tau = 0) stay shared")
    with pytest.raises(ConfigError, match="needs estimator: gumbel"):
        CPVAEBound("exact", decoder_draw="independent")
    with pytest.raises(ConfigError, match="decoder_draw must be"):
        CPVAEBound("gumbel", decoder_draw="twice")


def test_elu_logit_activation_is_the_authors_q_c():
    """`logit_activation: elu`: log q(c | x) = log_softmax(ELU(W h + b)) (the authors' code), linear by default."""
    torch.manual_seed(2)
    h = torch.randn(5, 8) * 3
    plain = CategoricalGaussian(8, D, categories=K)
    elu = CategoricalGaussian(8, D, categories=K, logit_activation="elu")
    elu.load_state_dict(plain.state_dict())
    logits = plain.logits_head(h)
    torch.testing.assert_close(plain(h).log_weights, torch.log_softmax(logits, -1))
    torch.testing.assert_close(elu(h).log_weights, torch.log_softmax(torch.nn.functional.elu(logits), -1))
    assert (logits < -0.5).any()  # ELU changes these
    torch.testing.assert_close(elu(h).component_distribution.loc, plain(h).component_distribution.loc)
    with pytest.raises(ConfigError, match="logit_activation must be"):
        CategoricalGaussian(8, D, categories=K, logit_activation="relu")


def modes_seen(model: torch.nn.Module) -> list[bool]:
    """The `training` flag of every module of `model` at each of its forward calls, as the list fills."""
    seen: list[bool] = []
    for m in model.modules():
        m.register_forward_pre_hook(lambda module, args: seen.append(module.training))
    return seen


def test_cpvae_estimators_run_in_eval_mode_and_restore_the_modes():
    """evaluate_cpvae, log p(x) stratified over c and the active units see the model in eval mode (batch norm and
    dropout would otherwise use batch statistics and noise), and leave every module's mode as it was."""
    from vaelab.evaluation import active_units

    x = data(5)
    for model, estimate in [
        (linear_cpvae(), lambda m: evaluate_cpvae(m, x, samples=2, progress=False)),
        (category_decoder_cpvae(), lambda m: log_likelihood_over_c(m, x, samples=6, progress=False)),
        (linear_cpvae(), lambda m: active_units(m, x)),
    ]:
        model.posterior_family.eval()  # a mixed state, to be restored as it was
        before = [m.training for m in model.modules()]
        seen = modes_seen(model)
        estimate(model)
        assert seen and not any(seen)
        assert [m.training for m in model.modules()] == before
