"""The fixed decoder |z| of SIWAE's toy problem (Morningstar et al., sec. 4.1): x ~ N(|z|, sigma^2 I)."""

from __future__ import annotations

from torch import Tensor, nn

from vaelab.errors import ConfigError
from vaelab.registry import NETWORKS


class Absolute(nn.Module):
    """`[..., D] -> [..., D]`, elementwise |z|; no parameters (the toy's generative model is known)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.in_features = self.out_features = features

    def forward(self, z: Tensor) -> Tensor:
        return z.abs()


@NETWORKS.register("absolute")
def _absolute(in_features: int, out_features: int | None) -> Absolute:
    if out_features is not None and out_features != in_features:
        raise ConfigError(
            f"decoder absolute maps {in_features} latents to as many outputs, but the likelihood needs {out_features}; "
            "use a likelihood with one parameter per element (gaussian with variance fixed) and latent_dim = data dim"
        )
    return Absolute(in_features)
