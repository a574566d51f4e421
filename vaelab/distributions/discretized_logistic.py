"""Discretized logistic distribution over n evenly spaced levels in [0, 1] (Kingma et al. 2016, IAF).

Level k (k = 0..n-1) is the value k/(n-1). Its probability is the logistic mass of the bin
[x - h, x + h] with h = 1/(2(n-1)); the first and last bins extend to -inf and +inf (as in PixelCNN++)
so the n probabilities sum to exactly one. VampPrior's reference code drops that tail mass instead,
which makes its log-likelihoods slightly lower; ours is a proper distribution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Distribution, constraints


class DiscretizedLogistic(Distribution):
    """Per-element discretized logistic with location `loc` and log-scale `log_scale` (same shape)."""

    arg_constraints = {"loc": constraints.real, "log_scale": constraints.real}
    has_rsample = False

    def __init__(self, loc: Tensor, log_scale: Tensor, levels: int = 256, validate_args: bool | None = None):
        self.loc, self.log_scale = torch.broadcast_tensors(loc, log_scale)
        self.levels = levels
        super().__init__(self.loc.shape, validate_args=validate_args)

    @property
    def support(self):  # the grid {k/(n-1)}; checked by the likelihood, not here
        return constraints.unit_interval

    @property
    def mean(self) -> Tensor:
        return self.loc.clamp(0.0, 1.0)

    def log_prob(self, value: Tensor) -> Tensor:
        """log P(x) = log(sigmoid(a) - sigmoid(b)), a, b the scaled bin edges, computed as
        log sigmoid(a) + log sigmoid(-b) + log(1 - exp(b - a)), which is stable for every bin."""
        half = 0.5 / (self.levels - 1)
        inv_s = torch.exp(-self.log_scale)
        centred = value - self.loc
        upper = torch.where(value >= 1.0 - half, torch.inf, (centred + half) * inv_s)
        lower = torch.where(value <= half, -torch.inf, (centred - half) * inv_s)
        return F.logsigmoid(upper) + F.logsigmoid(-lower) + torch.log(-torch.expm1(lower - upper))

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device).clamp(1e-6, 1 - 1e-6)
            x = self.loc + torch.exp(self.log_scale) * (torch.log(u) - torch.log1p(-u))
            return torch.round(x.clamp(0.0, 1.0) * (self.levels - 1)) / (self.levels - 1)
