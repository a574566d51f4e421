"""Discretized logistic likelihood for 8-bit grayscale images (Kingma et al. 2016; VampPrior's Frey Faces)."""

from __future__ import annotations

import torch
from torch import Tensor

from vaelab.distributions import DiscretizedLogistic
from vaelab.errors import DataError
from vaelab.likelihoods.base import Likelihood


class DiscretizedLogisticLikelihood(Likelihood):
    """The decoder predicts a location (through a sigmoid, in [0, 1]) and a log-scale per pixel.

    Data must lie on the grid k/(levels-1); see `vaelab.distributions.DiscretizedLogistic`. Registry name
    `discretized_logistic`.

    >>> import torch, vaelab
    >>> lik = vaelab.DiscretizedLogisticLikelihood((1, 4, 4))
    >>> x = torch.randint(0, 256, (3, 1, 4, 4)) / 255  # on the grid k / 255
    >>> lik.param_shape, lik.log_prob(x, torch.zeros(5, 3, 2, 1, 4, 4)).shape  # [loc, log_scale] per pixel
    ((2, 1, 4, 4), torch.Size([5, 3]))
    """

    params_per_element = 2
    data_kind = "gray"

    def __init__(self, event_shape: tuple[int, ...], levels: int = 256, min_log_scale: float = -7.0) -> None:
        super().__init__(event_shape)
        self.levels = levels
        self.min_log_scale = min_log_scale

    def distribution(self, params: Tensor) -> DiscretizedLogistic:
        raw_loc, raw_log_scale = self.split_params(params)
        return DiscretizedLogistic(torch.sigmoid(raw_loc), raw_log_scale.clamp(min=self.min_log_scale), self.levels)

    def log_prob_elements(self, x: Tensor, params: Tensor) -> Tensor:
        return self.distribution(params).log_prob(x)

    def mean(self, params: Tensor) -> Tensor:
        return self.distribution(params).mean

    def sample(self, params: Tensor) -> Tensor:
        return self.distribution(params).sample()

    def validate(self, x: Tensor) -> None:
        super().validate(x)
        k = x * (self.levels - 1)
        if (x < 0).any() or (x > 1).any() or (k - k.round()).abs().max() > 1e-3:
            raise DataError(
                f"the discretized logistic needs data on the grid k/{self.levels - 1} in [0, 1]; "
                "use a grayscale dataset scaled to [0, 1] (e.g. freyfaces) or a gaussian likelihood"
            )
