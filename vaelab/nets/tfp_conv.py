"""The convolutional encoder and decoder of TensorFlow Probability's VAE example (`examples/vae.py`,
`make_encoder` / `make_decoder`), which SIWAE's VAE experiments use (Morningstar et al., app. D.3), for 28 x 28
images (any H, W divisible by 4). `b` = `base_depth` (32), activation leaky ReLU (slope 0.2, as tf.nn.leaky_relu):

    encoder  conv 5x5 b, conv 5x5 b /2, conv 5x5 2b, conv 5x5 2b /2 ('same'), conv 7x7 `features` ('valid'),
             flattened: `[..., C*H*W] -> [..., features]` (the example's last Dense is the posterior's head;
             its `features` = 4 x latent size, 64 at its default latent size 16)
    decoder  z as a 1 x 1 map, deconv 7x7 2b ('valid': H/4 x W/4), deconv 5x5 2b, deconv 5x5 2b x2, deconv 5x5 b,
             deconv 5x5 b x2, deconv 5x5 b ('same'), conv 5x5 to the likelihood's channels (no activation):
             `[..., D] -> [..., out_features]`, laid out as `[out_features / (H W), H, W]` (as `gated_conv_decoder`)

'same' stride-2 layers pad symmetrically (TF pads one more pixel at the bottom/right); sizes are TF's.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from vaelab.errors import ConfigError
from vaelab.nets.conv import image_shape, to_images
from vaelab.nets.mlp import _activation


def _act(name: str) -> nn.Module:
    return nn.LeakyReLU(0.2) if name == "leaky_relu" else _activation(name)


class TFPConvEncoder(nn.Module):
    """`[..., C*H*W]` (or `[..., C, H, W]`) -> `[..., features]`; see the module docstring."""

    def __init__(
        self, event_shape: Sequence[int], base_depth: int = 32, features: int = 64, activation: str = "leaky_relu"
    ):
        super().__init__()
        self.shape = c, h, w = image_shape(event_shape, "tfp_conv_encoder")
        if h % 4 or w % 4:
            raise ConfigError(f"tfp_conv_encoder needs image sides divisible by 4, got {h}x{w}")
        b, layers = base_depth, []
        for cin, cout, stride in ((c, b, 1), (b, b, 2), (b, 2 * b, 1), (2 * b, 2 * b, 2)):
            layers += [nn.Conv2d(cin, cout, 5, stride, padding=2), _act(activation)]
        layers += [nn.Conv2d(2 * b, features, (h // 4, w // 4)), _act(activation), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.out_features = features

    def forward(self, x: Tensor) -> Tensor:
        images, lead = to_images(x, self.shape)
        return self.body(images).reshape(*lead, self.out_features)


class TFPConvDecoder(nn.Module):
    """`[..., in_features]` latents -> `[..., out_features]`; see the module docstring."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        event_shape: Sequence[int],
        base_depth: int = 32,
        activation: str = "leaky_relu",
    ) -> None:
        super().__init__()
        _, h, w = image_shape(event_shape, "tfp_conv_decoder")
        if h % 4 or w % 4:
            raise ConfigError(f"tfp_conv_decoder needs image sides divisible by 4, got {h}x{w}")
        if out_features % (h * w):
            raise ConfigError(f"tfp_conv_decoder: {out_features} outputs are not a whole number of {h}x{w} maps")
        b = base_depth
        layers = [nn.ConvTranspose2d(in_features, 2 * b, (h // 4, w // 4)), _act(activation)]
        for cin, cout, stride in ((2 * b, 2 * b, 1), (2 * b, 2 * b, 2), (2 * b, b, 1), (b, b, 2), (b, b, 1)):
            layers += [nn.ConvTranspose2d(cin, cout, 5, stride, padding=2, output_padding=stride - 1), _act(activation)]
        layers.append(nn.Conv2d(b, out_features // (h * w), 5, padding=2))
        self.body = nn.Sequential(*layers)
        self.out_features = out_features

    def forward(self, z: Tensor) -> Tensor:
        lead = z.shape[:-1]
        out = self.body(z.reshape(-1, z.shape[-1], 1, 1))
        return out.reshape(*lead, self.out_features)
