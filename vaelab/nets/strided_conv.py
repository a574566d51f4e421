"""Strided convolutional encoder and transposed-convolutional decoder with batch norm: Cremer, Li & Duvenaud
(2018), Table 9 (CIFAR-10), with the sizes of the authors' code (lxuechen/inference-suboptimality, `cvae.py`).

Defaults are Table 9's, for 3 x 32 x 32 images, activation ELU (sec. 6.1.3 "for all neural networks"):

    encoder  4x4 conv 64 /2, BN, ELU; 4x4 conv 128 /2, BN, ELU; 4x4 conv 256 /2, BN, ELU ('valid':
             32 -> 15 -> 6 -> 2), flattened: `[..., 3*32*32] -> [..., 256*2*2]` (the posterior's head is
             Table 9's "FC. 32 + 32")
    decoder  FC z -> 256 x 2 x 2, ELU; 4x4 deconv 128 x2, BN, ELU; 4x4 deconv 64 x2, BN, ELU; 4x4 deconv 3 x2
             (2 -> 6 -> 15 -> 32): the locations before the likelihood's sigmoid; beside it the MLP
             z -> 64 -> 32 -> 3 (ELU) gives one log-scale per channel, broadcast over the pixels

Three stride-2 transposed convolutions do reach 32 x 32 from 2 x 2 because no layer pads: each mirrors one
'valid' convolution of the encoder, out = (in - 1) * 2 + 4 (+ 1 where the encoder's floor dropped a pixel,
6 -> 15: the authors' `output_padding=1` on their second deconvolution). The decoder computes these paddings
from the image size, so it fits any size the encoder does.

Batch norm makes a network's output depend on its mode: train mode normalises by the batch's statistics (and
updates the running ones), eval mode by the running statistics. Every estimator (`vaelab.evaluation`) runs the
model in eval mode; the trainer switches back to train mode for its steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vaelab.errors import ConfigError
from vaelab.nets.conv import image_shape, to_images
from vaelab.nets.mlp import MLP, _activation


def valid_sizes(size: int, layers: int, kernel: int, stride: int) -> list[int]:
    """Side lengths through `layers` unpadded convolutions: s_0 = `size`, s_{i+1} = (s_i - k) // stride + 1."""
    sizes = [size]
    for _ in range(layers):
        sizes.append((sizes[-1] - kernel) // stride + 1)
    if sizes[-1] < 1:
        raise ConfigError(
            f"{layers} unpadded {kernel}x{kernel} convolutions of stride {stride} do not fit {size} pixels"
        )
    return sizes


def _block(conv: nn.Module, channels: int, batch_norm: bool, activation: str) -> list[nn.Module]:
    return [conv, *([nn.BatchNorm2d(channels)] if batch_norm else []), _activation(activation)]


class StridedConvEncoder(nn.Module):
    """Unpadded `kernel` x `kernel` convolutions of stride `stride`, one per entry of `channels`, each followed by
    batch norm (when `batch_norm`) and the activation; flattened: `[..., C*H*W]` (or `[..., C, H, W]`) ->
    `[..., F]`, F = channels[-1] * h * w with h, w from `valid_sizes`. Registry name `strided_conv_encoder`."""

    def __init__(
        self,
        event_shape: Sequence[int],
        channels: Sequence[int] = (64, 128, 256),
        kernel: int = 4,
        stride: int = 2,
        batch_norm: bool = True,
        activation: str = "elu",
    ) -> None:
        super().__init__()
        if not channels:
            raise ConfigError("strided_conv_encoder needs at least one entry in channels")
        self.shape = c, h, w = image_shape(event_shape, "strided_conv_encoder")
        layers: list[nn.Module] = []
        for out in channels:
            layers += _block(nn.Conv2d(c, out, kernel, stride), out, batch_norm, activation)
            c = out
        self.body = nn.Sequential(*layers, nn.Flatten())
        hs, ws = (valid_sizes(s, len(channels), kernel, stride)[-1] for s in (h, w))
        self.out_features = c * hs * ws

    def forward(self, x: Tensor) -> Tensor:
        images, lead = to_images(x, self.shape)
        return self.body(images).reshape(*lead, self.out_features)


class StridedDeconvDecoder(nn.Module):
    """`[..., in_features]` latents -> `[..., out_features]` likelihood parameters, laid out as
    `[out_features / (H W), H, W]` (as `gated_conv_decoder`).

    h_0 = act(W z + b) as a `[channels[0], h_L, w_L]` map (L = len(channels), sizes from `valid_sizes`), then
    transposed convolutions (kernel, stride, no padding, output paddings that land on the encoder's sizes) to
    `channels[1:]`, each with batch norm (when `batch_norm`) and the activation, and a last one to the output
    channels, with no activation.

    With `scale_hidden` (Table 9's discretized logistic, channel-wise scales): the last layer gives the C locations
    per pixel `mu [N, C, H, W]`, and `MLP(z; scale_hidden) -> log s [N, C]` one log-scale per channel, broadcast:
    the output is `[mu, log s] [N, 2, C, H, W]` flattened, so `out_features` must be 2 C H W (the
    `discretized_logistic` likelihood's parameters). With `scale_hidden: null` the last layer gives all
    `out_features / (H W)` channels (e.g. C for a Bernoulli). Registry name `strided_deconv_decoder`.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        event_shape: Sequence[int],
        channels: Sequence[int] = (256, 128, 64),
        kernel: int = 4,
        stride: int = 2,
        batch_norm: bool = True,
        activation: str = "elu",
        scale_hidden: Sequence[int] | None = (64, 32),
    ) -> None:
        super().__init__()
        if not channels:
            raise ConfigError("strided_deconv_decoder needs at least one entry in channels")
        c, h, w = image_shape(event_shape, "strided_deconv_decoder")
        if out_features % (h * w):
            raise ConfigError(f"strided_deconv_decoder: {out_features} outputs are not a whole number of {h}x{w} maps")
        if scale_hidden is not None and out_features != 2 * c * h * w:
            raise ConfigError(
                f"strided_deconv_decoder with scale_hidden gives a location per pixel and a log-scale per channel "
                f"(2 x {c} x {h} x {w} = {2 * c * h * w} outputs, the discretized_logistic likelihood's), but the "
                f"likelihood needs {out_features}; set scale_hidden: null for other likelihoods"
            )
        layers = len(channels)
        hs, ws = valid_sizes(h, layers, kernel, stride), valid_sizes(w, layers, kernel, stride)
        self.map_shape = (channels[0], hs[-1], ws[-1])
        self.dense = nn.Sequential(nn.Linear(in_features, channels[0] * hs[-1] * ws[-1]), _activation(activation))
        outs = [*channels[1:], c if scale_hidden is not None else out_features // (h * w)]
        body: list[nn.Module] = []
        for i, out in enumerate(outs):
            a, b = layers - i, layers - i - 1  # from sizes[a] to sizes[b]
            pad = tuple(s[b] - ((s[a] - 1) * stride + kernel) for s in (hs, ws))
            conv = nn.ConvTranspose2d(channels[i], out, kernel, stride, output_padding=pad)
            body += _block(conv, out, batch_norm, activation) if i < len(outs) - 1 else [conv]
        self.body = nn.Sequential(*body)
        self.scale = MLP(in_features, list(scale_hidden), c, activation) if scale_hidden is not None else None
        self.out_features = out_features

    def forward(self, z: Tensor) -> Tensor:
        lead, flat = z.shape[:-1], z.reshape(-1, z.shape[-1])
        out = self.body(self.dense(flat).reshape(-1, *self.map_shape))  # [N, C', H, W]
        if self.scale is not None:
            log_scale = self.scale(flat)[:, :, None, None].expand_as(out)  # [N, C] -> [N, C, H, W]
            out = torch.stack([out, log_scale], dim=1)  # [N, 2, C, H, W]
        return out.reshape(*lead, self.out_features)
