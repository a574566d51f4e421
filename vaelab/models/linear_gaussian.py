"""Linear-Gaussian model p(z) = N(0, I), p(x | z) = N(W z + b, s^2 I), whose log p(x) and posterior are
exact; the test bed for every estimator (DESIGN.md, "Verifying numbers").

Closed forms (Bishop 2006, sec. 2.3.3, 12.2):
  p(x) = N(x; b, W W^T + s^2 I);
  p(z | x) = N(z; A^-1 W^T (x - b) / s^2, A^-1) with precision A = I + W^T W / s^2.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.distributions import MultivariateNormal

from vaelab.likelihoods import Gaussian
from vaelab.models.vae import VAE
from vaelab.nets import MLP
from vaelab.posteriors import DiagonalGaussian
from vaelab.priors import StandardNormal


class LinearGaussian(VAE):
    """A linear-Gaussian VAE of data dimension `x_dim` and latent dimension `latent_dim`.

    The decoder is the affine map W z + b (so W = decoder weight); the encoder is affine with a
    diagonal-Gaussian family, which cannot represent the correlated exact posterior: the gap is real.
    """

    def __init__(self, x_dim: int, latent_dim: int, sigma: float = 1.0, learn_sigma: bool = False) -> None:
        likelihood = Gaussian((x_dim,), variance="learned" if learn_sigma else "fixed", sigma=sigma)
        super().__init__(
            encoder=MLP(x_dim, []),
            posterior=DiagonalGaussian(x_dim, latent_dim),
            prior=StandardNormal(latent_dim),
            decoder=MLP(latent_dim, [], x_dim),
            likelihood=likelihood,
        )

    @property
    def weight(self) -> Tensor:
        """W `[x_dim, latent_dim]`."""
        return self.decoder.body[0].weight

    @property
    def bias(self) -> Tensor:
        return self.decoder.body[0].bias

    @property
    def noise_var(self) -> Tensor:
        return torch.exp(2 * self.likelihood.log_sigma[0])

    def marginal(self) -> MultivariateNormal:
        """p(x) = N(b, W W^T + s^2 I)."""
        W = self.weight
        cov = W @ W.T + self.noise_var * torch.eye(W.shape[0], dtype=W.dtype, device=W.device)
        return MultivariateNormal(self.bias, covariance_matrix=cov)

    def exact_log_marginal(self, x: Tensor) -> Tensor:
        """log p(x) `[B]` for `x` `[B, x_dim]`."""
        return self.marginal().log_prob(x)

    def exact_posterior(self, x: Tensor) -> MultivariateNormal:
        """p(z | x), batch `[B]`, event `[D]`."""
        W, s2 = self.weight, self.noise_var
        precision = torch.eye(W.shape[1], dtype=W.dtype, device=W.device) + W.T @ W / s2
        cov = torch.linalg.inv(precision)
        mean = (x - self.bias) @ W @ cov / s2  # cov is symmetric
        return MultivariateNormal(mean, precision_matrix=precision.expand(x.shape[0], -1, -1))

    @classmethod
    def random(cls, x_dim: int, latent_dim: int, sigma: float = 1.0, seed: int = 0, dtype=torch.float64):
        """A model with standard-normal entries in W and b (float64 by default), for tests."""
        g = torch.Generator().manual_seed(seed)
        m = cls(x_dim, latent_dim, sigma).to(dtype)
        with torch.no_grad():
            m.weight.copy_(torch.randn(x_dim, latent_dim, generator=g, dtype=dtype))
            m.bias.copy_(torch.randn(x_dim, generator=g, dtype=dtype))
        return m
