"""The likelihood interface.

A decoder network emits `num_outputs` numbers per latent sample; the likelihood reshapes them to
`param_shape` and defines log p(x | z) summed over the event dimensions.

Shapes: data `x` is `[B, *event]`; decoder parameters are `[*S, B, *param_shape]` for any leading sample
dimensions `S`; `log_prob` returns `[*S, B]`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vaelab.errors import DataError


class Likelihood(nn.Module):
    """Base class: subclasses set `params_per_element` and implement `log_prob_elements`, `mean`, `sample`.

    >>> import math, torch, vaelab
    >>> class Laplace(vaelab.Likelihood):  # p(x | z) = prod_i Laplace(x_i; mu_i(z), 1)
    ...     def log_prob_elements(self, x, params):
    ...         return -(x - params).abs() - math.log(2)
    >>> lik = Laplace((1, 4, 4))
    >>> lik.param_shape, lik.num_outputs  # the decoder emits num_outputs numbers per latent sample
    ((1, 4, 4), 16)
    >>> lik.log_prob(torch.zeros(3, 1, 4, 4), torch.zeros(5, 3, 1, 4, 4)).shape  # x [B, *event], params [*S, B, ...]
    torch.Size([5, 3])
    """

    params_per_element: int = 1
    #: "binary", "gray" or "real": which data this likelihood models (checked by `validate`).
    data_kind: str = "real"

    def __init__(self, event_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.event_shape = tuple(event_shape)

    @property
    def param_shape(self) -> tuple[int, ...]:
        if self.params_per_element == 1:
            return self.event_shape
        return (self.params_per_element, *self.event_shape)

    @property
    def num_outputs(self) -> int:
        return math.prod(self.param_shape)

    def split_params(self, params: Tensor) -> tuple[Tensor, ...]:
        """`[*S, B, k, *event]` -> k tensors `[*S, B, *event]` (for k = `params_per_element` > 1)."""
        return params.unbind(dim=params.dim() - len(self.event_shape) - 1)

    def log_prob_elements(self, x: Tensor, params: Tensor) -> Tensor:
        """Elementwise log-density `[*S, B, *event]`."""
        raise NotImplementedError

    def log_prob(self, x: Tensor, params: Tensor) -> Tensor:
        """log p(x | z) summed over the event; `x` `[B, *event]`, `params` `[*S, B, *param]` -> `[*S, B]`."""
        return self.log_prob_elements(x, params).flatten(-len(self.event_shape)).sum(-1)

    def mean(self, params: Tensor) -> Tensor:
        """E[x | z], `[*S, B, *event]`."""
        raise NotImplementedError

    def sample(self, params: Tensor) -> Tensor:
        """x ~ p(x | z), `[*S, B, *event]`."""
        raise NotImplementedError

    def validate(self, x: Tensor) -> None:
        """Raise `DataError` if `x` cannot be data for this likelihood (shape, NaN, range or values)."""
        if tuple(x.shape[1:]) != self.event_shape:
            raise DataError(
                f"data of shape {tuple(x.shape[1:])} per example do not match the model's {self.event_shape}; "
                "build the model for this dataset"
            )
        if not torch.isfinite(x).all():
            raise DataError("the data contain NaN or Inf values; clean them before training")
