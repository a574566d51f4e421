"""Categorical likelihood over class labels, parameterised by logits (the decoder of a VIB classifier)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vaelab.errors import ConfigError, DataError
from vaelab.likelihoods.base import Likelihood


class Categorical(Likelihood):
    """p(y | z) = softmax(l)_y for decoder logits l `[*S, B, C]` and labels y `[B]` in {0, ..., C-1}.

    A label is a scalar, so `event_shape` is `()` and `param_shape` is `(C,)`. `mean` is E[onehot(y) | z],
    the class probabilities `[*S, B, C]`. Registry name `categorical`.

    >>> import torch, vaelab
    >>> lik = vaelab.Categorical(classes=3)
    >>> lik.param_shape, lik.log_prob(torch.tensor([0, 2]), torch.zeros(5, 2, 3))[0]  # uniform logits: -log 3
    ((3,), tensor([-1.0986, -1.0986]))
    """

    data_kind = "labels"

    def __init__(self, classes: int = 10) -> None:
        super().__init__(())
        if classes < 2:
            raise ConfigError(f"a categorical likelihood needs classes >= 2, got {classes}")
        self.classes = classes
        self.params_per_element = classes

    def log_prob(self, y: Tensor, params: Tensor) -> Tensor:
        """log softmax(l)_y `[*S, B]` for labels `y` `[B]` and logits `params` `[*S, B, C]`."""
        index = y.expand(params.shape[:-1]).unsqueeze(-1)
        return torch.gather(F.log_softmax(params, -1), -1, index).squeeze(-1)

    def mean(self, params: Tensor) -> Tensor:
        return torch.softmax(params, -1)

    def sample(self, params: Tensor) -> Tensor:
        return torch.distributions.Categorical(logits=params, validate_args=False).sample()

    def validate(self, y: Tensor) -> None:
        """Labels must be an int64 vector `[N]` with values in {0, ..., classes-1}."""
        if y.dtype != torch.int64 or y.dim() != 1:
            raise DataError(
                f"a categorical likelihood needs int64 labels [N], got {y.dtype} of shape {tuple(y.shape)}; "
                "use a labelled dataset (e.g. mnist_column)"
            )
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.classes):
            raise DataError(
                f"labels range over {int(y.min())}..{int(y.max())} but the likelihood has {self.classes} classes; "
                f"set likelihood.classes to {int(y.max()) + 1}"
            )
