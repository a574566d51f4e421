"""Generated datasets that know their exact log p_data(x): the density itself, the paired gap that `vaelab evaluate`
reports beside a model's estimate, and the report end to end on the CP-VAE toy."""

from __future__ import annotations

import json
import math

import pytest
import torch

from vaelab.cli import main
from vaelab.data import load_dataset
from vaelab.data.toy_abs import NOISE_VARS, exact_log_marginal
from vaelab.data.toy_mixture1d import MEANS, STD
from vaelab.evaluation.paired import against_data_density


def test_the_cpvae_toys_density_is_its_normal_mixture_and_integrates_to_one():
    ds = load_dataset("toy_mixture1d")
    x = ds.split("test")[:500].double()
    mix = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.full((2,), 0.5, dtype=torch.float64)),
        torch.distributions.Normal(torch.tensor(MEANS, dtype=torch.float64), STD),
    )
    assert ds.log_density(x).shape == (500,)
    assert torch.allclose(ds.log_density(x), mix.log_prob(x[:, 0]), atol=1e-12)
    grid = torch.linspace(-1.5, 2.6, 20_001, dtype=torch.float64)[:, None]
    assert float(torch.trapezoid(ds.log_density(grid).exp(), grid[:, 0])) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("name", ["toy_abs", "toy_abs_narrow"])
def test_the_siwae_toys_density_is_its_exact_marginal_and_integrates_to_one(name):
    ds = load_dataset(name)
    x = ds.split("test").double()
    assert torch.equal(ds.log_density(x), exact_log_marginal(x, NOISE_VARS[name]))
    t = torch.linspace(-1.5, 6.0, 1201, dtype=torch.float64)
    grid = torch.cartesian_prod(t, t)  # [1201^2, 2]
    p = ds.log_density(grid).exp().reshape(t.numel(), t.numel())
    assert float(torch.trapezoid(torch.trapezoid(p, t), t)) == pytest.approx(1.0, abs=1e-4)


def test_a_file_dataset_has_no_density():
    assert load_dataset("toy_mixture1d").log_density is not None
    from vaelab.data.dataset import Dataset

    plain = Dataset("x", (1,), "real", "none", "memory", {"test": torch.zeros(2, 1)}, {"test": None})
    assert plain.log_density is None


def test_gap_to_the_data_density_is_the_paired_mean_difference():
    g = torch.Generator().manual_seed(0)
    exact = torch.randn(400, generator=g, dtype=torch.float64)
    estimate = exact - 0.3 - 0.05 * torch.rand(400, generator=g, dtype=torch.float64)
    r = against_data_density(exact, estimate)
    d = exact - estimate
    assert r["data_log_likelihood"] == pytest.approx(float(exact.mean()))
    assert r["data_log_likelihood_se"] == pytest.approx(float(exact.std()) / 20)
    assert r["gap_to_data"] == pytest.approx(float(d.mean())) and 0.3 < r["gap_to_data"] < 0.35
    assert r["gap_to_data_se"] == pytest.approx(float(d.std()) / 20)
    assert r["gap_to_data_se"] < 0.05 * r["data_log_likelihood_se"]  # pairing removes the points' own spread
    assert against_data_density(exact, exact)["gap_to_data"] == 0.0


def test_evaluate_reports_the_exact_data_log_likelihood_beside_the_estimate(tmp_path, capsys):
    """A tiny CP-VAE on the 1-D toy: eval-test.json holds the mean exact log p_data(x) of the very points evaluated,
    and the paired gap to the model's per-point IS estimates."""
    run_dir = tmp_path / "toy"
    args = [
        "train", "configs/cpvae/toy_k2.yaml", "--budget", "quick", "--set", "data.subset=300",
        "--set", "data.valid_subset=100", "--set", "train.epochs=1", "--set", "eval.subset=40",
        "--set", "eval.is_samples=20", "--run-dir", str(run_dir), "--no-progress",
    ]  # fmt: skip
    assert main(args) == 0
    assert "exact log p_data(x)" in capsys.readouterr().out
    r = json.loads((run_dir / "eval-test.json").read_text())
    x = load_dataset("toy_mixture1d").split("test")[:40].double()
    exact = load_dataset("toy_mixture1d").log_density(x)
    per_point = torch.load(run_dir / "eval-test-per-example.pt")["log_likelihood"].double()
    assert r["n"] == 40 and r["data_log_likelihood"] == pytest.approx(float(exact.mean()), rel=1e-12)
    assert r["gap_to_data"] == pytest.approx(float((exact - per_point).mean()), rel=1e-9)
    assert math.isfinite(r["gap_to_data_se"]) and r["gap_to_data_se"] > 0
