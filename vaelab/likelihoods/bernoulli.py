"""Bernoulli likelihood for binary images, parameterised by logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vaelab.errors import DataError
from vaelab.likelihoods.base import Likelihood


class Bernoulli(Likelihood):
    """p(x | z) = prod_i p_i^x_i (1 - p_i)^(1 - x_i), p = sigmoid(decoder output). Registry name `bernoulli`.

    >>> import torch, vaelab
    >>> lik = vaelab.Bernoulli((1, 28, 28))
    >>> log_p = lik.log_prob(torch.zeros(3, 1, 28, 28), torch.zeros(5, 3, 1, 28, 28))  # logits 0: p_i = 1/2
    >>> log_p.shape, round(log_p[0, 0].item(), 2)  # 784 log(1/2)
    (torch.Size([5, 3]), -543.43)
    """

    data_kind = "binary"

    def log_prob_elements(self, x: Tensor, params: Tensor) -> Tensor:
        # x * l - softplus(l); fused and stable in binary_cross_entropy_with_logits.
        return -F.binary_cross_entropy_with_logits(params, x.expand_as(params), reduction="none")

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        """log p(x | z) `[*S, B]`. Without autograd (evaluation, where `params` is `[k, B, *event]` for many
        samples k) this is sum(x l - softplus(l)) computed in one buffer the size of `params`, in place:
        fewer passes over memory and fewer such buffers than the cross-entropy. With autograd it is the
        cross-entropy (one fused kernel each way, the faster choice for training-sized batches)."""
        if torch.is_grad_enabled() and (params.requires_grad or x.requires_grad):
            return super().log_prob(x, params)
        out = F.softplus(params)  # softplus(l), then softplus(l) - x l: -log p elementwise, in place
        out.addcmul_(params, x, value=-1)
        return -out.flatten(-len(self.event_shape)).sum(-1)

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
