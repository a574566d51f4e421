"""The posterior-family interface."""

from __future__ import annotations

from torch import Tensor, nn
from torch.distributions import Distribution


class PosteriorFamily(nn.Module):
    """Maps encoder features `h` `[B, F]` to q(z | x), a distribution with batch shape `[B]` and event `[D]`.

    The returned distribution must provide `rsample(sample_shape)` -> `[*S, B, D]` (reparameterised) and
    `log_prob(z)` -> `[*S, B]`; `mean` and `entropy()` are used where present (active units, analytic KL).
    """

    def __init__(self, in_features: int, latent_dim: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.latent_dim = latent_dim

    def forward(self, h: Tensor) -> Distribution:
        raise NotImplementedError
