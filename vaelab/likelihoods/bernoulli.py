"""Bernoulli likelihood for binary images, parameterised by logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vaelab.errors import DataError
from vaelab.likelihoods.base import Likelihood
from vaelab.registry import LIKELIHOODS


class Bernoulli(Likelihood):
    """p(x | z) = prod_i p_i^x_i (1 - p_i)^(1 - x_i), p = sigmoid(decoder output)."""

    data_kind = "binary"

    def log_prob_elements(self, x: Tensor, params: Tensor) -> Tensor:
        # x * l - softplus(l); fused and stable in binary_cross_entropy_with_logits.
        return -F.binary_cross_entropy_with_logits(params, x.expand_as(params), reduction="none")

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params)

    def sample(self, params: Tensor) -> Tensor:
        return torch.bernoulli(torch.sigmoid(params))

    def validate(self, x: Tensor) -> None:
        super().validate(x)
        if not ((x == 0) | (x == 1)).all():
            raise DataError(
                "a Bernoulli likelihood needs binary data (0/1) but the data have other values; "
                "use a binarized dataset (mnist_static, mnist) or likelihood: {type: gaussian} / discretized_logistic"
            )


@LIKELIHOODS.register("bernoulli")
def _bernoulli(event_shape: tuple[int, ...]) -> Bernoulli:
    return Bernoulli(event_shape)
