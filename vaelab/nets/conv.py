"""Gated convolutional encoder and decoder (VampPrior paper, sec. 5.1 "convolutional layers with gating
mechanism"; the ConvHVAE of Tables 1-5, layer sizes from the authors' code).

Both map flat vectors to flat vectors like the MLPs, so they slot into any model: the encoder reads
`[..., prod(event)]` (or image-shaped `[..., C, H, W]`) and returns `[..., out_features]`; the decoder reads
`[..., in_features]` (latents), and returns `[..., out_features]` with `out_features` a multiple of H * W,
laid out as `[out_features / (H W), H, W]`, i.e. as a likelihood's `param_shape` `[k, C, H, W]` flattened.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vaelab.errors import ConfigError
from vaelab.nets.mlp import GatedDense


def image_shape(event_shape: Sequence[int], what: str) -> tuple[int, int, int]:
    """`event_shape` as `(C, H, W)`; `(H, W)` counts as one channel. ConfigError for other shapes."""
    shape = tuple(event_shape)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3:
        raise ConfigError(f"{what} needs image data (event shape [C, H, W]), got event shape {list(event_shape)}")
    return shape  # type: ignore[return-value]


def to_images(x: Tensor, shape: tuple[int, int, int]) -> tuple[Tensor, torch.Size]:
    """`[..., C*H*W]` or `[..., C, H, W]` -> (`[N, C, H, W]`, the leading dimensions `[...]`)."""
    if x.dim() >= 3 and tuple(x.shape[-3:]) == shape:
        lead = x.shape[:-3]
    elif x.shape[-1] == math.prod(shape):
        lead = x.shape[:-1]
    else:
        raise ValueError(f"expected inputs [..., {math.prod(shape)}] or [..., {list(shape)}], got {list(x.shape)}")
    return x.reshape(-1, *shape), lead


class GatedConv2d(nn.Module):
    """h = (W * x + b) . sigmoid(V * x + c) (Dauphin et al. 2017, eq. 1, with convolutions); one fused conv."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 2 * out_channels, kernel, stride, padding=kernel // 2)

    def forward(self, x: Tensor) -> Tensor:
        h, g = self.conv(x).chunk(2, dim=1)
        return h * torch.sigmoid(g)


class GatedConvEncoder(nn.Module):
    """Gated convolutions (padding k // 2), flattened, optionally a linear head: `[..., C*H*W] -> [..., F]`.

    Default: channels 32-32-64-64-6, kernels 7-3-5-3-3, strides 1-2-1-2-1, so 28 x 28 images give
    6 x 7 x 7 = 294 features (the VampPrior code's q(z2 | x)).
    """

    def __init__(
        self,
        event_shape: Sequence[int],
        channels: Sequence[int] = (32, 32, 64, 64, 6),
        kernels: Sequence[int] = (7, 3, 5, 3, 3),
        strides: Sequence[int] = (1, 2, 1, 2, 1),
        out_features: int | None = None,
    ) -> None:
        super().__init__()
        if not (len(channels) == len(kernels) == len(strides)) or not channels:
            raise ConfigError("gated_conv_encoder needs channels, kernels and strides lists of one equal length >= 1")
        if any(k % 2 == 0 for k in kernels):
            raise ConfigError(f"gated_conv_encoder needs odd kernel sizes, got {list(kernels)}")
        self.shape = image_shape(event_shape, "gated_conv_encoder")
        c, h, w = self.shape
        layers: list[nn.Module] = []
        for out, k, s in zip(channels, kernels, strides, strict=True):
            layers.append(GatedConv2d(c, out, k, s))
            c, h, w = out, (h - 1) // s + 1, (w - 1) // s + 1  # padding k // 2, odd k
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c * h * w, out_features) if out_features is not None else None
        self.out_features = out_features if out_features is not None else c * h * w

    def forward(self, x: Tensor) -> Tensor:
        images, lead = to_images(x, self.shape)
        out = self.body(images).flatten(1)
        if self.head is not None:
            out = self.head(out)
        return out.reshape(*lead, self.out_features)


class GatedConvDecoder(nn.Module):
    """`[..., in_features]` -> GatedDense to a `[dense_channels, H, W]` map -> gated 'same' convolutions ->
    1 x 1 convolution to `out_features / (H W)` channels, flattened (the VampPrior code's ConvHVAE p(x | z1, z2):
    GatedDense to 1 x 28 x 28, four gated 3 x 3 convolutions with 64 channels). With `out_features=None` the
    last convolution's features are returned flattened."""

    def __init__(
        self,
        in_features: int,
        out_features: int | None,
        event_shape: Sequence[int],
        channels: Sequence[int] = (64, 64, 64, 64),
        kernel: int = 3,
        dense_channels: int | None = None,
    ) -> None:
        super().__init__()
        c0, h, w = image_shape(event_shape, "gated_conv_decoder")
        if kernel % 2 == 0:
            raise ConfigError(f"gated_conv_decoder needs an odd kernel size, got {kernel}")
        c = dense_channels or c0
        self.map_shape = (c, h, w)
        self.dense = GatedDense(in_features, c * h * w)
        layers: list[nn.Module] = []
        for out in channels:
            layers.append(GatedConv2d(c, out, kernel))
            c = out
        self.body = nn.Sequential(*layers)
        if out_features is not None and out_features % (h * w):
            raise ConfigError(f"gated_conv_decoder: {out_features} outputs are not a whole number of {h}x{w} maps")
        self.head = nn.Conv2d(c, out_features // (h * w), 1) if out_features is not None else None
        self.out_features = out_features if out_features is not None else c * h * w

    def forward(self, z: Tensor) -> Tensor:
        lead = z.shape[:-1]
        h = self.dense(z.reshape(-1, z.shape[-1])).reshape(-1, *self.map_shape)
        h = self.body(h)
        if self.head is not None:
            h = self.head(h)
        return h.reshape(*lead, self.out_features)
