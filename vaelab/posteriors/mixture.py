"""Gaussian-mixture q(z | x) = sum_k alpha_k(x) N(z; mu_k(x), Sigma_k(x)) with K components whose weights,
means and covariances (diagonal or full) the encoder predicts (Morningstar et al., SIWAE, sec. 2 and
app. B.1/D.3: "a mixture of multivariate normal distributions with full covariance, with mixture weights
... predicted by the encoder").

The returned `ReparameterizedMixture` has no `rsample`; train it with a stratified objective (`selbo`,
`siwae`, ...: `vaelab.objectives.stratified`), which draws T samples from every component.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.distributions import MultivariateNormal

from vaelab.distributions import ReparameterizedMixture
from vaelab.errors import ConfigError
from vaelab.posteriors.base import PosteriorFamily
from vaelab.posteriors.diagonal_gaussian import diagonal_normal
from vaelab.posteriors.full_covariance import cholesky_factor, tril_size

COVARIANCES = ("diagonal", "full")


class GaussianMixture(PosteriorFamily):
    """One linear head `[B, F] -> [B, K * (1 + D + C)]`: per component a weight logit, a mean and C
    covariance parameters (C = D log-variances for `diagonal`, D(D+1)/2 Cholesky entries for `full`, see
    `cholesky_factor`). With `learn_weights=False` the weights are uniform, 1/K.

    Output: `ReparameterizedMixture` with logits `[B, K]` and components batch `[B, K]`, event `[D]`. Registry name
    `gaussian_mixture`; train it with a stratified objective (`vaelab.SIWAE`).

    >>> import torch, vaelab
    >>> q = vaelab.GaussianMixture(in_features=8, latent_dim=2, components=3)(torch.zeros(4, 8))  # h [4, 8]
    >>> q.log_weights.shape, q.stratified_rsample(5).shape, q.log_prob(torch.zeros(4, 2)).shape  # z [T, K, B, D]
    (torch.Size([4, 3]), torch.Size([5, 3, 4, 2]), torch.Size([4]))
    >>> from torch import nn
    >>> model = vaelab.VAE(nn.Flatten(), {"type": "gaussian_mixture", "components": 3, "covariance": "full"},
    ...                    "standard_normal", nn.Linear(2, 16), "bernoulli", latent_dim=2, event_shape=(1, 4, 4))
    >>> model.posterior_family.components, model.posterior_family.covariance
    (3, 'full')
    """

    def __init__(
        self,
        in_features: int,
        latent_dim: int,
        components: int = 4,
        covariance: str = "diagonal",
        learn_weights: bool = True,
        min_log_var: float | None = None,
        max_log_var: float | None = None,
        min_scale: float = 1e-4,
    ) -> None:
        super().__init__(in_features, latent_dim)
        if components < 1:
            raise ConfigError(f"a gaussian_mixture posterior needs components >= 1, got {components}")
        if covariance not in COVARIANCES:
            raise ConfigError(
                f"gaussian_mixture covariance must be one of {', '.join(COVARIANCES)}, not {covariance!r}"
            )
        if covariance == "full" and (min_log_var is not None or max_log_var is not None):
            raise ConfigError("min_log_var/max_log_var apply to covariance: diagonal; for full use min_scale")
        self.components, self.covariance, self.learn_weights = components, covariance, learn_weights
        self.min_log_var, self.max_log_var, self.min_scale = min_log_var, max_log_var, min_scale
        self.cov_params = latent_dim if covariance == "diagonal" else tril_size(latent_dim)
        self.head = nn.Linear(in_features, components * (int(learn_weights) + latent_dim + self.cov_params))

    def forward(self, h: Tensor) -> ReparameterizedMixture:
        K, D = self.components, self.latent_dim
        out = self.head(h).unflatten(-1, (K, -1))  # [B, K, 1 + D + C] (no logit column when weights are fixed)
        if self.learn_weights:
            logits, out = out[..., 0], out[..., 1:]
        else:
            logits = out.new_zeros(out.shape[:-1])
        loc, raw = out[..., :D], out[..., D:]
        if self.covariance == "diagonal":
            comps = diagonal_normal(loc, raw, self.min_log_var, self.max_log_var)
        else:
            comps = MultivariateNormal(loc, scale_tril=cholesky_factor(raw, D, self.min_scale), validate_args=False)
        return ReparameterizedMixture(logits, comps)
