"""Each likelihood is a normalised distribution, and rejects data it cannot model."""

from __future__ import annotations

import itertools

import pytest
import torch

from vaelab.distributions import DiscretizedLogistic
from vaelab.errors import DataError
from vaelab.likelihoods import Bernoulli, DiscretizedLogisticLikelihood, Gaussian


def test_bernoulli_sums_to_one_over_all_binary_images():
    lik = Bernoulli((4,))
    logits = torch.randn(3, 4, dtype=torch.float64) * 3  # 3 parameter settings
    xs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)), dtype=torch.float64)  # 16 images
    lp = lik.log_prob(xs, logits[:, None, :].expand(3, 16, 4))  # [3, 16]
    torch.testing.assert_close(lp.exp().sum(1), torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("variance", ["fixed", "learned", "decoder"])
def test_gaussian_integrates_to_one(variance):
    lik = Gaussian((1,), variance=variance, sigma=0.3).double()
    grid = torch.linspace(-8, 8, 20001, dtype=torch.float64)[:, None]  # [N, 1] points
    params = torch.tensor([0.7, -1.2], dtype=torch.float64)
    if variance == "decoder":
        params = torch.stack([params, torch.log(torch.tensor([0.3, 1.1], dtype=torch.float64))], 1)[:, :, None]
        params = params[:, None].expand(2, grid.shape[0], 2, 1)
    else:
        params = params[:, None, None].expand(2, grid.shape[0], 1)
    density = lik.log_prob(grid, params).exp()  # [2, N]
    mass = torch.trapezoid(density, grid[:, 0], dim=1)
    torch.testing.assert_close(mass, torch.ones(2, dtype=torch.float64), atol=1e-6, rtol=0)
    if variance != "decoder":
        torch.testing.assert_close(lik.mean(params)[:, 0, 0], torch.tensor([0.7, -1.2], dtype=torch.float64))


@pytest.mark.parametrize("loc", [-0.5, 0.0, 0.003, 0.5, 0.999, 1.0, 1.7])
@pytest.mark.parametrize("log_scale", [-7.0, -4.0, -1.0, 2.0])
def test_discretized_logistic_sums_to_one(loc, log_scale):
    levels = torch.arange(256, dtype=torch.float64) / 255
    d = DiscretizedLogistic(torch.full((256,), loc, dtype=torch.float64), torch.full((256,), log_scale).double())
    lp = d.log_prob(levels)
    assert torch.isfinite(lp).all()
    torch.testing.assert_close(lp.exp().sum(), torch.tensor(1.0, dtype=torch.float64), atol=1e-9, rtol=0)


def test_discretized_logistic_matches_cdf_differences():
    """Interior bins: P(k) = sigmoid((x + h - mu)/s) - sigmoid((x - h - mu)/s) computed naively."""
    mu, s = 0.4, 0.05
    x = torch.arange(1, 255, dtype=torch.float64) / 255
    h = 0.5 / 255
    naive = torch.sigmoid((x + h - mu) / s) - torch.sigmoid((x - h - mu) / s)
    d = DiscretizedLogistic(torch.full_like(x, mu), torch.full_like(x, torch.log(torch.tensor(s)).item()))
    torch.testing.assert_close(d.log_prob(x).exp(), naive)


def test_discretized_logistic_likelihood_samples_on_grid_and_normalises():
    lik = DiscretizedLogisticLikelihood((1, 2, 2))
    params = torch.randn(5, 2, 1, 2, 2)
    x = lik.sample(params)
    assert x.shape == (5, 1, 2, 2)
    torch.testing.assert_close(x * 255, (x * 255).round())
    lik.validate(x)
    with pytest.raises(DataError, match="grid"):
        lik.validate(torch.full((2, 1, 2, 2), 0.5))


def test_validation_errors_name_the_problem():
    lik = Bernoulli((1, 28, 28))
    with pytest.raises(DataError, match="binary"):
        lik.validate(torch.rand(2, 1, 28, 28))
    with pytest.raises(DataError, match="NaN"):
        lik.validate(torch.full((2, 1, 28, 28), float("nan")))
    with pytest.raises(DataError, match="shape"):
        lik.validate(torch.zeros(2, 784))
    lik.validate(torch.bernoulli(torch.full((2, 1, 28, 28), 0.5)))
