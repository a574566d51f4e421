"""VIB classifiers (SIWAE sec. 4.2): supervised batches, the label likelihood, the posterior predictive against
quadrature, accuracy and both ECEs on hand-computed cases, training/resume and the run layer end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import dataset_file

from vaelab.app import runs
from vaelab.app.cli import main
from vaelab.config import Config, load_config
from vaelab.config.build import build_model
from vaelab.data import load_dataset
from vaelab.data.supervised import Supervised, SupervisedDataset
from vaelab.errors import ConfigError, DataError
from vaelab.evaluation import (
    accuracy,
    evaluate_log_likelihood,
    expected_calibration_error,
    posterior_predictive,
    true_class_calibration_error,
)
from vaelab.evaluation.calibration import max_confidence_bins, true_class_bins
from vaelab.likelihoods import Categorical
from vaelab.objectives import IWAE, logmeanexp
from vaelab.viz.latent import decision_regions

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "siwae"
TINY = [
    "data.subset=512",
    "data.valid_subset=256",
    "data.batch_size=64",
    "train.validate_every=1",
    "train.progress=false",
    "eval.subset=200",
    "eval.is_samples=50",
    "eval.predictive_samples=200",
]
TINY_NETS = {
    "vib_mnist_column.yaml": ["model.encoder={type: mlp, hidden: [32, 32], activation: elu}"],
    "mnist_column_bottleneck.yaml": ["model.encoder={type: mlp, hidden: [32, 32], activation: elu}"],
}


def tiny(name: str, *extra: str) -> Config:
    return load_config(CONFIGS / name, TINY + TINY_NETS.get(name, []) + list(extra))


def gauss_hermite(n: int = 80) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes t and weights w with sum_i w_i f(t_i) = E_{t ~ N(0, 1)}[f(t)] (exact for polynomials of degree < 2n)."""
    t, w = np.polynomial.hermite_e.hermegauss(n)
    return torch.tensor(t), torch.tensor(w / math.sqrt(2 * math.pi))


# --------------------------------------------------------------------------------------------- supervised data
def test_supervised_batches_index_slice_and_move_like_tensors():
    batch = Supervised(torch.arange(12.0).reshape(6, 2), torch.tensor([0, 1, 2, 0, 1, 2]))
    assert len(batch) == 6 and batch.shape[0] == 6 and batch.device.type == "cpu"
    part = batch[torch.tensor([4, 0])]
    assert torch.equal(part.inputs, torch.tensor([[8.0, 9.0], [0.0, 1.0]])) and part.targets.tolist() == [1, 0]
    assert batch[1:3].targets.tolist() == [1, 2]
    assert batch[batch.targets == 2].inputs[:, 0].tolist() == [4.0, 10.0]
    moved = batch.to("cpu", non_blocking=True)
    assert torch.equal(moved.inputs, batch.inputs) and torch.equal(moved.targets, batch.targets)
    with pytest.raises(TypeError, match="slice"):
        batch[0]
    with pytest.raises(DataError, match="one target per input"):
        Supervised(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))


@pytest.mark.needs_dataset("mnist_column")
def test_mnist_column_is_the_centre_column_with_labels():
    ds = SupervisedDataset(load_dataset("mnist_column"))
    npz = dataset_file("mnist_column", "mnist.npz")
    if npz is None:
        pytest.skip("MNIST was found as IDX files; this test reads mnist.npz")
    raw = np.load(npz)
    test = ds.split("test")
    assert ds.event_shape == (28,) and test.inputs.shape == (10000, 28) and ds.sizes["train"] == 50000
    torch.testing.assert_close(test.inputs, torch.from_numpy(raw["x_test"][:, :, 14] / 255).float())
    assert torch.equal(test.targets, torch.from_numpy(raw["y_test"].astype(np.int64)))
    valid = ds.split("valid")  # the last 10,000 training images
    torch.testing.assert_close(valid.inputs[-3:], torch.from_numpy(raw["x_train"][-3:, :, 14] / 255).float())
    with pytest.raises(DataError, match="no labels"):
        SupervisedDataset(load_dataset("mnist_static"))


# ------------------------------------------------------------------------------------------ label likelihood
def test_categorical_likelihood_normalises_and_is_log_softmax():
    lik = Categorical(4)
    logits = torch.randn(3, 5, 4, dtype=torch.float64) * 3  # [S, B, C]
    per_label = torch.stack([lik.log_prob(torch.full((5,), y), logits) for y in range(4)])  # [C, S, B]
    torch.testing.assert_close(per_label.exp().sum(0), torch.ones(3, 5, dtype=torch.float64))
    y = torch.tensor([0, 3, 1, 1, 2])
    by_hand = logits[:, torch.arange(5), y] - logits.exp().sum(-1).log()
    torch.testing.assert_close(lik.log_prob(y, logits), by_hand)
    torch.testing.assert_close(lik.mean(logits).sum(-1), torch.ones(3, 5, dtype=torch.float64))
    assert lik.param_shape == (4,) and lik.event_shape == ()
    with pytest.raises(DataError, match="int64 labels"):
        lik.validate(torch.zeros(3))
    with pytest.raises(DataError, match="set likelihood.classes to 5"):
        lik.validate(torch.tensor([0, 4]))


# ----------------------------------------------------------------------------------------------------- models
def linear_vib(prior: str = "standard_normal") -> torch.nn.Module:
    """A VIB with a 1-D latent, inputs [2]: q(z|x) = N(0.5 x0 + 0.3, exp(0.4 x1 - 0.5)), logits W z + b (C = 3)."""
    cfg = Config().model
    cfg.type, cfg.latent_dim = "vib", 1
    cfg.encoder, cfg.decoder = {"type": "linear"}, {"type": "linear"}
    cfg.prior, cfg.likelihood = {"type": prior}, {"type": "categorical", "classes": 3}
    model = build_model(cfg, (2,)).double()
    head, dec = model.posterior_family.head, model.decoder.body[0]
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[0.5, 0.0], [0.0, 0.4]]))
        head.bias.copy_(torch.tensor([0.3, -0.5]))
        dec.weight.copy_(torch.tensor([[2.0], [-1.0], [0.5]]))
        dec.bias.copy_(torch.tensor([0.0, 0.5, -0.3]))
    return model


INPUTS = torch.tensor([[0.0, 0.0], [1.0, -1.0], [-2.0, 1.5]], dtype=torch.float64)


def test_posterior_predictive_matches_quadrature_within_monte_carlo_error():
    """E_q[softmax(W z + b)] with q = N(m, s^2) by Gauss-Hermite quadrature (exact to ~1e-12); the Monte Carlo
    estimate from S draws has standard error sqrt(Var_q[softmax] / S), Var_q also by quadrature."""
    model, samples = linear_vib(), 20_000
    q = model.posterior(INPUTS)
    t, w = gauss_hermite()
    z = q.loc[:, 0, None] + q.scale[:, 0, None] * t  # [B, n]
    p = torch.softmax(z[..., None] * model.decoder.body[0].weight[:, 0] + model.decoder.body[0].bias, -1)  # [B, n, C]
    exact = (w[:, None] * p).sum(1)
    se = ((w[:, None] * p.square()).sum(1) - exact.square()).sqrt() / math.sqrt(samples)
    assert se.min() > 1e-4  # the probabilities do vary over q: the test can fail
    estimate = posterior_predictive(model, INPUTS, samples, max_elements=3 * 4096)  # several chunks
    torch.testing.assert_close(estimate.sum(-1), torch.ones(3, dtype=torch.float64))
    assert ((estimate - exact).abs() / se).max() < 4.5


def test_importance_sampling_estimates_the_evidence_of_the_labels():
    """The VIB's generative model r(z) p(y|z) has evidence log p(y) = log E_r[p(y|z)] (r = N(0, 1)), computed
    by quadrature; the IS evaluator with q(z|x) as the proposal converges to it whatever x is."""
    model, k = linear_vib(), 20_000
    y = torch.tensor([0, 1, 2])
    t, w = gauss_hermite()
    p_y = torch.softmax(t[:, None] * model.decoder.body[0].weight[:, 0] + model.decoder.body[0].bias, -1)[:, y].T
    exact = (w * p_y).sum(1).log()  # [B]
    est = evaluate_log_likelihood(model, Supervised(INPUTS, y), samples=k, progress=False).log_likelihood
    # relative variance of the weights r p / q under q, by quadrature under q: E_q[w^2] / p(y|x)^2 - 1
    q = model.posterior(INPUTS)
    zq = q.loc[:, 0, None] + q.scale[:, 0, None] * t  # [B, n]
    weight = model.log_joint(Supervised(INPUTS, y), zq.T[..., None]).T.exp() / q.log_prob(zq.T[..., None]).T.exp()
    se = ((w * weight.square()).sum(1) / exact.exp().square() - 1).sqrt() / math.sqrt(k)
    assert ((est - exact).abs() / se).max() < 4.5


def test_objectives_apply_unchanged_with_beta_on_the_prior_terms():
    """IWAE on a supervised batch = logmeanexp(log p(y|z) + beta (log r(z) - log q(z|x))), same draws."""
    model = linear_vib("mixture_of_gaussians").float()
    batch = Supervised(INPUTS.float(), torch.tensor([2, 0, 1]))
    torch.manual_seed(3)
    value = IWAE(7)(model, batch, beta=0.05)
    torch.manual_seed(3)
    q = model.posterior(batch.inputs)
    z = q.rsample((7,))
    log_w = Categorical(3).log_prob(batch.targets, model.decoder(z)) + 0.05 * (model.prior.log_prob(z) - q.log_prob(z))
    torch.testing.assert_close(value, logmeanexp(log_w, 0))


def test_model_types_refuse_the_wrong_likelihood():
    cfg = Config().model
    cfg.likelihood = {"type": "categorical", "classes": 10}
    with pytest.raises(ConfigError, match="model.type: vib"):
        build_model(cfg, (28,))
    cfg.type, cfg.likelihood = "vib", {"type": "bernoulli"}
    with pytest.raises(ConfigError, match="a vib classifies"):
        build_model(cfg, (28,))


# ------------------------------------------------------------------------------------- accuracy and calibration
def test_accuracy_by_hand():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.5, 0.4], [0.3, 0.3, 0.4], [0.4, 0.4, 0.2]])
    # argmax 0, 1, 2, 0 (a tie goes to the lowest index); targets 0, 2, 2, 1: right, wrong, right, wrong
    assert accuracy(probs, torch.tensor([0, 2, 2, 1])) == 0.5


def binary(p_first: list[float], targets: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    p = torch.tensor(p_first, dtype=torch.float64)
    return torch.stack([p, 1 - p], 1), torch.tensor(targets)


def test_guo_ece_by_hand_with_right_closed_bins():
    """Four examples, two classes:
    max conf 0.95 (right), 0.92 (wrong) -> bin (0.9, 1]: conf 0.935, acc 0.5, gap 0.435;
    max conf 0.65 (right), 0.70 (wrong; 0.7 lies in (0.6, 0.7]) -> conf 0.675, acc 0.5, gap 0.175;
    ECE = 2/4 * 0.435 + 2/4 * 0.175 = 0.305."""
    probs, y = binary([0.95, 0.92, 0.35, 0.7], [0, 1, 1, 1])
    bins = max_confidence_bins(probs, y)
    assert bins.count.tolist() == [0, 0, 0, 0, 0, 0, 2, 0, 0, 2]
    assert expected_calibration_error(probs, y) == pytest.approx(0.305, abs=1e-12)


def test_both_eces_by_hand_on_twelve_examples():
    """p(class 0) = p_i, every target 0, so p(y_true) = p_i, and the prediction is right iff p_i >= 0.5 (a tie
    goes to class 0). Given shuffled.

    SIWAE (ranked by p_true into 10 equal-mass bins, the first two of 2 examples, as numpy.array_split):
      {.1,.2}: |0-.15|   {.3,.4}: .35   {.45}: .45   {.5}: |1-.5| = .5   {.55}: .45   {.6}: .4
      {.7}: .3   {.8}: .2   {.9}: .1   {1.0}: 0      -> mean 2.9 / 10 = 0.29
    Guo (max conf; right-closed bins):
      (.4,.5]: {.5 right} gap .5;  (.5,.6]: {.6 wrong, .55 wrong, .55 right, .6 right} |.5-.575| = .075;
      (.6,.7]: {.7 wrong, .7 right} .2;  (.7,.8]: .3;  (.8,.9]: .4;  (.9,1]: {1.0 right} 0
      -> (.5 + 4 * .075 + 2 * .2 + 2 * .3 + 2 * .4) / 12 = 2.6 / 12"""
    p = [0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8, 0.9, 1.0]
    order = torch.randperm(12, generator=torch.Generator().manual_seed(1)).tolist()
    probs, y = binary([p[i] for i in order], [0] * 12)
    assert true_class_bins(probs, y).count.tolist() == [2, 2, 1, 1, 1, 1, 1, 1, 1, 1]
    assert true_class_calibration_error(probs, y) == pytest.approx(0.29, abs=1e-12)
    assert expected_calibration_error(probs, y) == pytest.approx(2.6 / 12, abs=1e-12)


def test_eces_of_a_calibrated_model_and_with_fewer_examples_than_bins():
    """p = (0.6, 0.4) for 10 examples, 6 of class 0: calibrated, Guo's ECE is 0 (one bin, conf .6, acc .6).
    SIWAE's: 4 bins hold p_true = .4, wrong (gap .4), 6 hold .6, right (gap .4): 0.4, not 0.
    Three examples, 10 bins: ranks 0, 1, 2 go to bins 0, 1, 2; the empty bins are left out of the mean:
      p_true .5 right -> .5;  .2 wrong -> .2;  .8 right -> .2;  mean 0.3."""
    probs = torch.tensor([[0.6, 0.4]], dtype=torch.float64).expand(10, 2)
    y = torch.tensor([0, 1] * 4 + [0, 0])
    assert expected_calibration_error(probs, y) == pytest.approx(0.0, abs=1e-12)
    assert true_class_calibration_error(probs, y) == pytest.approx(0.4, abs=1e-12)
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.6, 0.2], [0.1, 0.1, 0.8]], dtype=torch.float64)
    y = torch.tensor([0, 2, 2])
    assert true_class_bins(probs, y).count.tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    assert true_class_calibration_error(probs, y) == pytest.approx(0.3, abs=1e-12)


def test_eces_match_a_direct_loop_over_bins_on_random_predictions():
    """1,003 random predictions (N not a multiple of 10): both ECEs against their definitions written as plain
    loops over the bins with explicit bin membership."""
    g = torch.Generator().manual_seed(5)
    probs = torch.distributions.Dirichlet(torch.full((5,), 0.4)).sample((1003,)).double()
    y = torch.multinomial(probs.float(), 1, generator=g)[:, 0]
    conf, pred = probs.max(1)
    guo = 0.0
    for m in range(10):
        member = (conf > m / 10) & (conf <= (m + 1) / 10) if m else conf <= 0.1
        if member.any():
            guo += member.double().mean() * ((pred == y)[member].double().mean() - conf[member].mean()).abs()
    p_true = probs[torch.arange(1003), y]
    ranked = torch.sort(p_true, stable=True).indices
    gaps = [((pred == y)[idx].double().mean() - p_true[idx].mean()).abs() for idx in torch.tensor_split(ranked, 10)]
    assert expected_calibration_error(probs, y) == pytest.approx(float(guo), abs=1e-12)
    assert true_class_calibration_error(probs, y) == pytest.approx(float(torch.stack(gaps).mean()), abs=1e-12)


def test_decision_region_opacity_is_confidence_relative_to_the_runner_up():
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]])
    classes, alpha = decision_regions(probs)
    assert classes.tolist()[::2] == [0, 2]
    torch.testing.assert_close(alpha, torch.tensor([1 / 3, 0.0, 1.0]))


# ---------------------------------------------------------------------------------------- training and runs
def metric_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("epoch_time_s"), r.pop("steps_per_s")
    return rows


@pytest.mark.needs_dataset("mnist_column")
@pytest.mark.parametrize("config", ["vib_mnist_column.yaml", "mnist_column_bottleneck.yaml"])
def test_supervised_training_resumes_exactly(tmp_path, config):
    cfg = tiny(config, "train.epochs=3")
    full = runs.train(cfg, runs.new_run_dir(cfg, tmp_path / "full"))
    part = runs.new_run_dir(cfg, tmp_path / "part")
    runs.train(tiny(config, "train.epochs=2"), part)
    (part / "config.yaml").write_text(cfg.to_yaml())
    resumed = runs.train(cfg, part, resume=True)
    assert metric_rows(part) == metric_rows(tmp_path / "full") and len(metric_rows(part)) == 3
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert isinstance(full.dataset.split("valid"), Supervised)


@pytest.mark.needs_dataset("mnist_column")
def test_vaelab_train_on_a_vib_writes_accuracy_calibration_and_pictures(tmp_path, capsys):
    run_dir = tmp_path / "vib"
    args = [f"--set={s}" for s in TINY + TINY_NETS["vib_mnist_column.yaml"] + ["train.epochs=2"]]
    assert main(["train", str(CONFIGS / "vib_mnist_column.yaml"), *args, "--run-dir", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "ECE" in out and "evidence" in out
    result = json.loads((run_dir / "eval-test.json").read_text())
    saved = torch.load(run_dir / "predictions-test.pt")
    assert result["n"] == 200 and saved["probs"].shape == (200, 10)
    assert result["accuracy"] == accuracy(saved["probs"], saved["targets"])
    assert result["ece"] == expected_calibration_error(saved["probs"], saved["targets"])
    assert result["ece_true_class"] == true_class_calibration_error(saved["probs"], saved["targets"])
    assert result["log_likelihood"] <= 0 and result["predictive_samples"] == 200
    pictures = sorted(p.name for p in run_dir.glob("*.png"))
    assert "reliability-test.png" in pictures and sum(n.startswith("latent-test-") for n in pictures) == 4
