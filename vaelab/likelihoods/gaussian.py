"""Gaussian likelihood with fixed, learned (shared) or decoder-predicted variance."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vaelab.errors import ConfigError
from vaelab.likelihoods.base import Likelihood

_LOG_2PI = math.log(2 * math.pi)


class Gaussian(Likelihood):
    """p(x | z) = N(x; mu(z), sigma^2), elementwise.

    variance:
      * "fixed": sigma is the constant `sigma`;
      * "learned": one learned log-sigma per data element, shared over data points;
      * "decoder": the decoder predicts log-sigma per element (two outputs per element).

    Registry name `gaussian` (e.g. `likelihood={"type": "gaussian", "variance": "decoder"}`).

    >>> import torch, vaelab
    >>> lik = vaelab.Gaussian((4,), variance="fixed", sigma=1.0)
    >>> lik.log_prob(torch.zeros(2, 4), torch.zeros(5, 2, 4))[0]  # -4 log(2 pi) / 2 at x = mu
    tensor([-3.6758, -3.6758])
    >>> vaelab.Gaussian((4,), variance="decoder").param_shape  # [loc, log_sigma] per element
    (2, 4)
    """

    def __init__(
        self, event_shape: tuple[int, ...], variance: str = "learned", sigma: float = 1.0, min_log_sigma: float = -7.0
    ) -> None:
        super().__init__(event_shape)
        if variance not in ("fixed", "learned", "decoder"):
            raise ConfigError(f"gaussian variance must be 'fixed', 'learned' or 'decoder', not {variance!r}")
        if sigma <= 0:
            raise ConfigError(f"gaussian sigma must be positive, got {sigma}")
        self.variance = variance
        self.min_log_sigma = min_log_sigma
        self.params_per_element = 2 if variance == "decoder" else 1
        init = torch.full(tuple(event_shape), math.log(sigma))
        if variance == "learned":
            self.log_sigma = nn.Parameter(init)
        else:
            self.register_buffer("log_sigma", init)

    def _loc_log_sigma(self, params: Tensor) -> tuple[Tensor, Tensor]:
        if self.variance == "decoder":
            loc, log_sigma = self.split_params(params)
        else:
            loc, log_sigma = params, self.log_sigma
        return loc, log_sigma.clamp(min=self.min_log_sigma)

    def log_prob_elements(self, x: Tensor, params: Tensor) -> Tensor:
        loc, log_sigma = self._loc_log_sigma(params)
        return -0.5 * (((x - loc) * torch.exp(-log_sigma)) ** 2 + _LOG_2PI) - log_sigma

    def mean(self, params: Tensor) -> Tensor:
        return self._loc_log_sigma(params)[0]

    def sample(self, params: Tensor) -> Tensor:
        loc, log_sigma = self._loc_log_sigma(params)
        return loc + torch.exp(log_sigma) * torch.randn_like(loc)
