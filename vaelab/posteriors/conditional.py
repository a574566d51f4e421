"""Categorical x Gaussian posterior q(z, c | x) = q(c | x) q(z | x, c) (CP-VAE, Lavda et al., eq. 6, sec. 3.2).

From encoder features h `[B, F]`:

    q(c | x)    = Cat(pi(h)),                 pi = softmax(W_pi h + b_pi)   (`logit_activation: elu`: softmax(ELU(.)),
                                                                             the authors' code's q(c | x), an ablation),
    q(z | x, c) = N(mu(h, c), diag sigma^2(h, c)),

where (mu, log sigma^2) come from a gated layer on the concatenation [h, c] (Figure 2; Dauphin et al. 2017):
u = (A [h, c] + a) * sigmoid(G [h, c] + g), then a linear head (`hidden=None`: the linear head on [h, c]
directly, as the authors' code does). The layer's pre-activation is W_h h + W_c c + b, so for all K one-hot
categories at once it is W_h h + (W_c)^T rows: `[B, K, .]` from one matmul on h; a relaxed c `[*S, B, K]`
(Gumbel-Softmax) gives W_h h + c W_c^T.

Summing c out, q(z | x) = sum_k pi_k(x) q(z | x, c = k) is a mixture, returned as a `ReparameterizedMixture`
(`CategoricalGaussianPosterior`), so the IS evaluator and anything that needs only q(z | x) apply unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaelab.distributions import DiagonalNormal, ReparameterizedMixture
from vaelab.errors import ConfigError
from vaelab.posteriors.base import PosteriorFamily
from vaelab.posteriors.diagonal_gaussian import diagonal_normal

LOGIT_ACTIVATIONS = (None, "elu")


class CategoricalGaussianPosterior(ReparameterizedMixture):
    """q(z | x) = sum_k pi_k q(z | x, c = k) for a batch `[B]`, keeping the two levels of q(z, c | x).

    `log_weights` `[B, K]` is log q(c | x); `component_distribution` (a `DiagonalNormal`, batch `[B, K]`, event
    `[D]`) holds q(z | x, c = k) for every k; `given(c)` is q(z | x, c) for one-hot or relaxed `c` `[*S, B, K]`.
    """

    def __init__(self, logits: Tensor, components: DiagonalNormal, conditional: Callable[[Tensor], DiagonalNormal]):
        super().__init__(logits, components)
        self._conditional = conditional

    def given(self, c: Tensor) -> DiagonalNormal:
        """q(z | x, c) with batch `[*S, B]` for category vectors `c` `[*S, B, K]` on the simplex (one-hot, or a
        Gumbel-Softmax relaxation: CP-VAE eq. 11); reparameterisable in the encoder and in `c`."""
        return self._conditional(c)


class CategoricalGaussian(PosteriorFamily):
    """Heads of q(c | x) and, through a gated layer conditioned on c, of q(z | x, c) (see the module docstring).

    Args:
        categories: K, the number of values of c.
        hidden: width of the gated layer on [h, c] (None: linear heads on [h, c]).
        min_log_var, max_log_var: optional clamp of log sigma^2 (VampPrior's and CP-VAE's code: [-6, 2]).
        logit_activation: None (eq. 6: linear logits), or "elu": ELU on the logits of q(c | x), as the authors'
            code has them (macio232/cp-vae models/cp_vae_z_xc.py, NonLinear(300, K, activation=nn.ELU())).
    """

    def __init__(
        self,
        in_features: int,
        latent_dim: int,
        categories: int = 10,
        hidden: int | None = 300,
        min_log_var: float | None = None,
        max_log_var: float | None = None,
        logit_activation: str | None = None,
    ) -> None:
        super().__init__(in_features, latent_dim)
        if logit_activation not in LOGIT_ACTIVATIONS:
            raise ConfigError(
                "posterior categorical_gaussian: logit_activation must be null or "
                f"{', '.join(a for a in LOGIT_ACTIVATIONS if a)}, not {logit_activation!r}"
            )
        self.logit_activation = logit_activation
        if categories < 1:
            raise ConfigError(f"posterior categorical_gaussian needs categories >= 1, got {categories}")
        if hidden is not None and hidden < 1:
            raise ConfigError(f"posterior categorical_gaussian needs hidden >= 1 or null, got {hidden}")
        self.categories, self.hidden = categories, hidden
        self.min_log_var, self.max_log_var = min_log_var, max_log_var
        self.logits_head = nn.Linear(in_features, categories)
        width = 2 * (hidden if hidden is not None else latent_dim)
        self.joint = nn.Linear(in_features + categories, width)  # the layer on [h, c], used split as W_h h + W_c c
        self.head = nn.Linear(hidden, 2 * latent_dim) if hidden is not None else None

    def _gaussian(self, base: Tensor) -> DiagonalNormal:
        """q(z | x, c) from the layer's pre-activation `[..., width]`."""
        if self.head is not None:
            a, g = base.chunk(2, dim=-1)
            base = self.head(a * torch.sigmoid(g))
        mu, log_var = base.chunk(2, dim=-1)
        return diagonal_normal(mu, log_var, self.min_log_var, self.max_log_var)

    def forward(self, h: Tensor) -> CategoricalGaussianPosterior:
        """`h` `[B, F]` -> q(z | x) with K components `[B, K, D]` and weights q(c | x) `[B, K]`."""
        f = self.in_features
        w_h, w_c = self.joint.weight[:, :f], self.joint.weight[:, f:]  # [width, F], [width, K]
        base = F.linear(h, w_h, self.joint.bias)  # [B, width]
        components = self._gaussian(base.unsqueeze(-2) + w_c.T)  # one-hot c = e_k adds column k of W_c: [B, K, .]
        logits = self.logits_head(h)
        if self.logit_activation == "elu":
            logits = F.elu(logits)
        return CategoricalGaussianPosterior(logits, components, lambda c: self._gaussian(base + c @ w_c.T))
