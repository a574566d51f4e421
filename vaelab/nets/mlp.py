"""Multi-layer perceptrons: plain (any activation) and gated (Dauphin et al. 2017, as in VampPrior/CP-VAE).

Every network maps `[..., in_features] -> [..., out_features]`; leading dimensions are flattened for the
matmuls and restored afterwards, so `[S, B, D]` latent samples go through a decoder in one call.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vaelab.errors import ConfigError

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
}


def _activation(name: str, after_linear: bool = False) -> nn.Module:
    """The activation `name`. `after_linear`: it only ever sees the fresh output of a Linear layer, which
    nothing else holds, so a ReLU may rectify it in place (one buffer less per layer; autograd-safe, as
    ReLU's backward uses its output and Linear's backward does not use its own)."""
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; choose one of: {', '.join(sorted(ACTIVATIONS))}")
    if name == "relu" and after_linear:
        return nn.ReLU(inplace=True)
    return ACTIVATIONS[name]()


class _Flat(nn.Module):
    """Runs `body` on `[N, F]` for input `[..., F]` and restores the leading dimensions."""

    body: nn.Module
    out_features: int

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        return self.body(x.reshape(-1, x.shape[-1])).reshape(*lead, self.out_features)


class MLP(_Flat):
    """Linear layers with an activation between them: in -> hidden... -> out.

    With `out_features=None` the network ends with the last hidden layer and its activation (an encoder
    body whose head belongs to the posterior family).
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (300, 300),
        out_features: int | None = None,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), _activation(activation, after_linear=True)]
            width = h
        if out_features is not None:
            layers.append(nn.Linear(width, out_features))
            width = out_features
        self.body = nn.Sequential(*layers)
        self.out_features = width


class GatedDense(nn.Module):
    """Gated linear unit h = (W x + b) * sigmoid(V x + c) (Dauphin et al. 2017, eq. 1); one fused matmul."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, 2 * out_features)

    def forward(self, x: Tensor) -> Tensor:
        h, g = self.linear(x).chunk(2, dim=-1)
        return h * torch.sigmoid(g)


class GatedMLP(_Flat):
    """Stack of `GatedDense` layers (VampPrior section 5.1: 2 x 300 gated units), optional linear head."""

    def __init__(self, in_features: int, hidden: Sequence[int] = (300, 300), out_features: int | None = None) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers.append(GatedDense(width, h))
            width = h
        if out_features is not None:
            layers.append(nn.Linear(width, out_features))
            width = out_features
        self.body = nn.Sequential(*layers)
        self.out_features = width
