"""Neural networks used as encoders and decoders."""

from vaelab.nets.absolute import Absolute
from vaelab.nets.conv import GatedConv2d, GatedConvDecoder, GatedConvEncoder
from vaelab.nets.mlp import MLP, GatedDense, GatedMLP
from vaelab.nets.pixelcnn import MaskedConv2d, PixelCNN

__all__ = [
    "Absolute",
    "MLP",
    "GatedConv2d",
    "GatedConvDecoder",
    "GatedConvEncoder",
    "GatedDense",
    "GatedMLP",
    "MaskedConv2d",
    "PixelCNN",
]
