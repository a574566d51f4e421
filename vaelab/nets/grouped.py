"""MLPs with one set of weights per group: shared by all data points (G = 1, an amortised network) or one
per data point (G = B, the per-data-point networks of a locally optimised flow, Cremer et al. 2018 sec. 6.4).

Weights are `[G, in, out]` tensors, so B independent networks are trained by one optimiser as one tensor
and evaluated together with one batched matmul; no Python loop runs over data points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vaelab.nets.mlp import _activation


class GroupedLinear(nn.Module):
    """h -> h W_g + b_g for inputs `[*S, B, in]`, where the group g of column b is b (G = B) or 0 (G = 1).

    Weights `[G, in, out]` start Xavier-uniform (Glorot & Bengio 2010) independently per group, or at zero
    (`zero=True`: an output layer that starts as the zero map); biases start at zero.
    """

    def __init__(self, in_features: int, out_features: int, groups: int = 1, zero: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features, self.groups, self.zero = in_features, out_features, groups, zero
        self.weight = nn.Parameter(torch.zeros(groups, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(groups, out_features))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Fresh initial values: Xavier-uniform weights (zero if `zero`), zero biases."""
        self.bias.zero_()
        if self.zero:
            self.weight.zero_()
        else:
            bound = math.sqrt(6.0 / (self.in_features + self.out_features))
            self.weight.uniform_(-bound, bound)

    def forward(self, h: Tensor) -> Tensor:
        groups = self.weight.shape[0]  # not self.groups: `optimize_local` calls this with a subset's rows of weights
        if groups == 1:
            return torch.addmm(self.bias[0], h.reshape(-1, self.in_features), self.weight[0]).reshape(
                *h.shape[:-1], self.out_features
            )
        B = h.shape[-2]
        if groups != B:
            raise ValueError(f"a network with {groups} groups got a batch of {B} data points")
        lead = h.shape[:-2]
        hb = h.reshape(-1, B, self.in_features).transpose(0, 1)  # [B, S, in]
        out = torch.baddbmm(self.bias.unsqueeze(1), hb, self.weight)  # [B, S, out]
        return out.transpose(0, 1).reshape(*lead, B, self.out_features)


class GroupedMLP(nn.Module):
    """in -> hidden... -> out with an activation between layers, `[*S, B, in] -> [*S, B, out]`, with G groups
    of weights (`GroupedLinear`). `zero_output`: the last layer starts at zero, so the network starts as the
    zero function (a flow step then starts as the identity)."""

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        activation: str = "elu",
        groups: int = 1,
        zero_output: bool = False,
    ) -> None:
        super().__init__()
        widths = [in_features, *hidden, out_features]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            last = i == len(widths) - 2
            layers.append(GroupedLinear(a, b, groups, zero=last and zero_output))
            if not last:
                layers.append(_activation(activation))
        self.body = nn.Sequential(*layers)
        self.in_features, self.out_features, self.groups = in_features, out_features, groups

    def forward(self, h: Tensor) -> Tensor:
        return self.body(h)


def repeat_groups(module: nn.Module, groups: int) -> None:
    """Turn every single-group `GroupedLinear` inside `module` into `groups` identical copies (in place): the
    shared networks of an amortised flow become per-data-point networks that start where it was."""
    for layer in module.modules():
        if isinstance(layer, GroupedLinear) and layer.groups != groups:
            if layer.groups != 1:
                raise ValueError(f"cannot regroup a layer of {layer.groups} groups into {groups}")
            layer.weight = nn.Parameter(layer.weight.detach().expand(groups, -1, -1).clone())
            layer.bias = nn.Parameter(layer.bias.detach().expand(groups, -1).clone())
            layer.groups = groups
    for m in module.modules():
        if isinstance(m, GroupedMLP):
            m.groups = groups
