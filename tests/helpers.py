"""Test helpers: linear-Gaussian models with a chosen (near-optimal or deliberately poor) encoder."""

from __future__ import annotations

import torch

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
