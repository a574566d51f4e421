"""Test helpers: linear-Gaussian models with a chosen (near-optimal or deliberately poor) encoder, the
command-line settings of a tiny training run, and a tiny VAE built in Python that `vaelab.load` can rebuild."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import vaelab
from vaelab.models import LinearGaussian


def linear_gaussian(x_dim: int = 6, latent_dim: int = 3, sigma: float = 0.8, seed: int = 0) -> LinearGaussian:
    return LinearGaussian.random(x_dim, latent_dim, sigma=sigma, seed=seed)


def set_encoder(model: LinearGaussian, var_scale: float = 1.0, mean_shift: float = 0.0) -> None:
    """Point the affine encoder at the exact posterior: q(z|x) = N(m(x) + shift, var_scale * diag(Sigma)),
    Sigma the exact posterior covariance. var_scale > 1 and shift != 0 make q deliberately worse."""
    W, s2 = model.weight.detach(), model.noise_var.detach()
    precision = torch.eye(W.shape[1], dtype=W.dtype) + W.T @ W / s2
    cov = torch.linalg.inv(precision)
    gain = cov @ W.T / s2  # m(x) = gain @ (x - b)
    head = model.posterior_family.head
    D = W.shape[1]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.weight[:D] = gain
        head.bias[:D] = -gain @ model.bias.detach() + mean_shift
        head.bias[D:] = torch.log(var_scale * torch.diagonal(cov))


class SharedCovarianceGaussian(torch.distributions.Distribution):
    """N(loc_b, L L^T) for means `loc` `[B, D]` sharing one Cholesky factor `scale_tril` `[D, D]` (a proposal
    around the linear-Gaussian posterior, whose covariance is the same for every x): draws loc + eps L^T and
    densities by one triangular solve, where torch's MultivariateNormal would broadcast L over every draw."""

    arg_constraints: dict = {}
    has_rsample = True

    def __init__(self, loc: torch.Tensor, scale_tril: torch.Tensor) -> None:
        self.loc, self.scale_tril = loc, scale_tril
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=False)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        eps = torch.randn(*sample_shape, *self.loc.shape, dtype=self.loc.dtype, device=self.loc.device)
        return self.loc + eps @ self.scale_tril.T

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        D = self.loc.shape[-1]
        diff = (z - self.loc).reshape(-1, D)
        eps = torch.linalg.solve_triangular(self.scale_tril, diff.T, upper=False).T.reshape(z.shape)
        log_det = self.scale_tril.diagonal().log().sum()
        return -0.5 * eps.square().sum(-1) - log_det - 0.5 * D * math.log(2 * math.pi)


def inflated_posterior(model: LinearGaussian, x: torch.Tensor, scale: float) -> SharedCovarianceGaussian:
    """The exact posterior p(z | x) with its covariance multiplied by `scale`, batch `[B]`: log w - log p(x) =
    -(scale - 1) chi^2_D / 2 + (D / 2) log scale, so the weights are bounded for scale >= 1 and their spread
    (ESS) is set by D and scale alone."""
    with torch.no_grad():
        post = model.exact_posterior(x)
        return SharedCovarianceGaussian(post.loc, torch.linalg.cholesky(scale * post.covariance_matrix[0]))


#: `vaelab train` settings for a one-epoch run on a tiny slice of the bundled MNIST (seconds on a CPU).
TINY = [
    "--set", "data.subset=600", "--set", "data.valid_subset=100", "--set", "model.latent_dim=4",
    "--set", "model.encoder={type: mlp, hidden: [32]}", "--set", "model.decoder={type: mlp, hidden: [32]}",
    "--set", "train.epochs=1", "--set", "train.lr=1e-3", "--no-progress", "--no-eval",
]  # fmt: skip


def binary_images(n: int = 64, seed: int = 0) -> torch.Tensor:
    """Binary 4x4 images `[n, 1, 4, 4]`: noisy copies of two patterns (one half lit or the other)."""
    g = torch.Generator().manual_seed(seed)
    patterns = torch.full((2, 16), 0.1)
    patterns[0, :8], patterns[1, 8:] = 0.9, 0.9
    return torch.bernoulli(patterns[torch.randint(0, 2, (n,), generator=g)], generator=g).reshape(n, 1, 4, 4)


@vaelab.model_factory
def tiny_vae(latent_dim: int = 2, hidden: int = 16) -> nn.Module:
    """A VAE on `binary_images` built in Python (MLP encoder and decoder), recorded as this factory's call."""
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(16, hidden), nn.Tanh())
    decoder = nn.Sequential(nn.Linear(latent_dim, hidden), nn.Tanh(), nn.Linear(hidden, 16))
    return vaelab.VAE(
        encoder=encoder,
        posterior="diagonal_gaussian",
        prior="standard_normal",
        decoder=decoder,
        likelihood="bernoulli",
        latent_dim=latent_dim,
        event_shape=(1, 4, 4),
    )


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread while a module's tests run (import it into the module to use it): they are loops of
    small tensor operations, where a second thread buys nothing and, on shared busy cores, its spin-waiting slowed
    AIS 20-50x. Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
