"""The fixed decoder |z| of SIWAE's toy problem (Morningstar et al., sec. 4.1): x ~ N(|z|, sigma^2 I)."""

from __future__ import annotations

from torch import Tensor, nn


class Absolute(nn.Module):
    """`[..., D] -> [..., D]`, elementwise |z|; no parameters (the toy's generative model is known)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.in_features = self.out_features = features

    def forward(self, z: Tensor) -> Tensor:
        return z.abs()
