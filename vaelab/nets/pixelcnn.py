"""A conditional PixelCNN decoder (van den Oord et al. 2016, "Conditional image generation with PixelCNN
decoders"; the VampPrior paper's PixelHVAE, sec. 5.1 and Tables 1-5).

    p(x | h) = prod_i p(x_i | x_<i, h),   pixels i in raster order, channels of one pixel independent given x_<i,

with h the latent conditioning features. Layer l computes, with masked convolutions W (mask 'A' in the first
layer hides the centre pixel, 'B' after it shows it) and a 1 x 1 map V of the conditioning image c,

    y_l = tanh(W_f * y_(l-1) + V_f c) . sigmoid(W_g * y_(l-1) + V_g c)     (van den Oord et al. eq. 4),

plus a residual connection in the 'B' layers. The output at pixel i therefore depends on x only through the
pixels before i. `forward(x, h)` is the teacher-forced pass (all pixels at once: training and evaluation);
`sample(h, likelihood)` draws pixel by pixel, batched over images, recomputing only the window of pixels an
output can see (`reach` rows above and columns either side), which gives the same numbers as the full pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaelab.errors import ConfigError
from vaelab.likelihoods.base import Likelihood
from vaelab.nets.conv import image_shape, to_images
from vaelab.nets.mlp import GatedDense
from vaelab.progress import progress as progress_bar


class MaskedConv2d(nn.Conv2d):
    """'Same' convolution whose kernel sees only the pixels before the centre in raster order: mask 'A'
    excludes the centre, mask 'B' includes it. The mask multiplies the weight in every call, so masked
    weights get zero gradients."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, mask: str) -> None:
        super().__init__(in_channels, out_channels, kernel, padding=kernel // 2)
        if mask not in ("A", "B"):
            raise ValueError(f"mask must be 'A' or 'B', got {mask!r}")
        m, c = torch.ones(kernel, kernel), kernel // 2
        m[c, c + (mask == "B") :] = 0
        m[c + 1 :] = 0
        self.register_buffer("mask", m, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class ConditionalGatedLayer(nn.Module):
    """y = tanh(W_f * h + V_f c) . sigmoid(W_g * h + V_g c) (+ h in 'B' layers of equal width); `h`
    `[N, C_in, H, W]`, conditioning image `c` `[N, C_c, H, W]` -> `[N, C_out, H, W]`."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, mask: str, cond_channels: int) -> None:
        super().__init__()
        self.conv = MaskedConv2d(in_channels, 2 * out_channels, kernel, mask)
        self.cond = nn.Conv2d(cond_channels, 2 * out_channels, 1, bias=False)
        self.residual = mask == "B" and in_channels == out_channels

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        f, g = (self.conv(h) + self.cond(c)).chunk(2, dim=1)
        y = torch.tanh(f) * torch.sigmoid(g)
        return h + y if self.residual else y


class PixelCNN(nn.Module):
    """Conditional PixelCNN: images `[..., C, H, W]` (or flat) and features `[..., in_features]` ->
    likelihood parameters `[..., out_features]`, laid out as `[out_features / (H W), H, W]` flattened.

    The features become a `[cond_channels, H, W]` conditioning image through one GatedDense layer (the
    VampPrior code maps z1 and z2 to one 28 x 28 map each). Default: 8 layers of 64 channels, 3 x 3 kernels.
    """

    #: p(x | z) depends on x itself: models must call `forward(x, h)` (teacher forcing) and `sample`.
    autoregressive = True

    def __init__(
        self,
        event_shape: Sequence[int],
        in_features: int,
        out_features: int,
        channels: int = 64,
        layers: int = 8,
        kernel: int = 3,
        cond_channels: int = 2,
    ) -> None:
        super().__init__()
        self.shape = image_shape(event_shape, "pixelcnn")
        c, h, w = self.shape
        if kernel < 3 or kernel % 2 == 0 or layers < 1:
            raise ConfigError(
                f"pixelcnn needs an odd kernel >= 3 and layers >= 1, got kernel {kernel}, layers {layers}"
            )
        if out_features % (h * w):
            raise ConfigError(f"pixelcnn: {out_features} outputs are not a whole number of {h}x{w} maps")
        self.cond_shape = (cond_channels, h, w)
        self.condition_net = GatedDense(in_features, cond_channels * h * w)
        widths = [c] + [channels] * layers
        masks = ["A"] + ["B"] * (layers - 1)
        self.layers = nn.ModuleList(
            ConditionalGatedLayer(a, b, kernel, m, cond_channels)
            for a, b, m in zip(widths, widths[1:], masks, strict=False)
        )
        self.head = nn.Conv2d(channels, out_features // (h * w), 1)
        self.in_features, self.out_features = in_features, out_features
        #: how many rows above (and columns either side of) a pixel its output can see
        self.reach = layers * (kernel // 2)

    def condition(self, features: Tensor) -> Tensor:
        """Conditioning image `[N, cond_channels, H, W]` for features `[N, in_features]`."""
        return self.condition_net(features).reshape(-1, *self.cond_shape)

    def stack(self, images: Tensor, cond: Tensor) -> Tensor:
        """The masked layers and the 1 x 1 head on any window: `[N, C, h, w]`, `[N, C_c, h, w]` -> `[N, K, h, w]`."""
        y = images
        for layer in self.layers:
            y = layer(y, cond)
        return self.head(y)

    def forward(self, x: Tensor, features: Tensor) -> Tensor:
        """Teacher-forced parameters `[..., out_features]` for `x` `[..., C, H, W]` (or `[..., C*H*W]`) and
        `features` `[..., in_features]` with the same leading dimensions."""
        images, lead = to_images(x, self.shape)
        if features.shape[:-1] != lead:
            raise ValueError(f"x has leading dimensions {list(lead)} but the features {list(features.shape[:-1])}")
        out = self.stack(images, self.condition(features.reshape(-1, self.in_features)))
        return out.reshape(*lead, self.out_features)

    @torch.no_grad()
    def sample(self, features: Tensor, likelihood: Likelihood, progress: bool = True) -> tuple[Tensor, Tensor]:
        """x ~ p(x | features), pixel by pixel in raster order, batched over the leading dimensions of
        `features` `[..., in_features]`. Returns x `[..., C, H, W]` and the parameters of every pixel's
        conditional `[..., *likelihood.param_shape]` (equal to `forward(x, features)` on the result)."""
        lead, (_, h, w) = features.shape[:-1], self.shape
        cond = self.condition(features.reshape(-1, self.in_features))
        n, r = cond.shape[0], self.reach
        x = cond.new_zeros(n, *self.shape)
        params = cond.new_zeros(n, self.out_features // (h * w), h, w)
        pixel_shape = (n, *likelihood.param_shape[:-2], 1, 1)  # one pixel's [N, (k,) C, 1, 1]
        for p in progress_bar(range(h * w), desc="PixelCNN sampling", unit="pixel", enabled=progress):
            i, j = divmod(p, w)
            top, left, right = max(0, i - r), max(0, j - r), min(w, j + r + 1)
            window = self.stack(x[:, :, top : i + 1, left:right], cond[:, :, top : i + 1, left:right])
            params[:, :, i, j] = window[:, :, -1, j - left]
            x[:, :, i, j] = likelihood.sample(params[:, :, i, j].reshape(pixel_shape)).reshape(n, -1)
        return x.reshape(*lead, *self.shape), params.reshape(*lead, *likelihood.param_shape)
