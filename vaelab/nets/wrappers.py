"""Networks built around another network (`body`, any NETWORKS entry), for SIWAE's VAE experiments (app. D.3):

* `columns`: an encoder that reads only some columns of the image, `[..., C*H*W] -> body([..., C*H*len(columns)])`,
  pixels in the order channel, row (top to bottom), column. With `columns: [14]` it sees what the `mnist_column`
  dataset holds (MNIST's centre column) while the model's likelihood is of the whole image (SIWAE sec. 4.3: the
  encoder is given the centre column, the decoder reconstructs the image; Doersch 2016, sec. 5.1).
* `affine_skip`: a decoder body(z) + W z + b, "a skip connection, represented as a single affine layer to project
  the latent space directly to the output space", so the encoder gets gradients early in training (app. D.3).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vaelab.nets.conv import image_shape, to_images


class Columns(nn.Module):
    """Keeps columns `columns` of images `[..., C*H*W]` (or `[..., C, H, W]`) and runs `body` on the
    `[..., C*H*len(columns)]` pixels that remain: `[..., C*H*W] -> [..., body.out_features]`."""

    def __init__(self, event_shape: Sequence[int], columns: Sequence[int], body: nn.Module) -> None:
        super().__init__()
        self.shape = image_shape(event_shape, "the columns network")
        self.register_buffer("columns", torch.as_tensor(list(columns), dtype=torch.long), persistent=False)
        self.body = body
        self.out_features = body.out_features

    def forward(self, x: Tensor) -> Tensor:
        images, lead = to_images(x, self.shape)  # [N, C, H, W]
        kept = images.index_select(-1, self.columns).flatten(1)  # [N, C * H * len(columns)]
        out = self.body(kept)
        return out.reshape(*lead, self.out_features)


class AffineSkip(nn.Module):
    """body(z) + W z + b: `[..., in_features] -> [..., out_features]`."""

    def __init__(self, body: nn.Module, in_features: int, out_features: int) -> None:
        super().__init__()
        self.body, self.skip = body, nn.Linear(in_features, out_features)
        self.out_features = out_features

    def forward(self, z: Tensor) -> Tensor:
        return self.body(z) + self.skip(z)
