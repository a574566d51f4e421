"""Neural networks used as encoders and decoders."""

from vaelab.nets.absolute import Absolute
from vaelab.nets.conv import GatedConv2d, GatedConvDecoder, GatedConvEncoder
from vaelab.nets.mlp import MLP, GatedDense, GatedMLP
from vaelab.nets.pixelcnn import MaskedConv2d, PixelCNN
from vaelab.nets.strided_conv import StridedConvEncoder, StridedDeconvDecoder
from vaelab.nets.tfp_conv import TFPConvDecoder, TFPConvEncoder
from vaelab.nets.wrappers import AffineSkip, Columns

__all__ = [
    "Absolute",
    "AffineSkip",
    "Columns",
    "MLP",
    "GatedConv2d",
    "GatedConvDecoder",
    "GatedConvEncoder",
    "GatedDense",
    "GatedMLP",
    "MaskedConv2d",
    "PixelCNN",
    "StridedConvEncoder",
    "StridedDeconvDecoder",
    "TFPConvDecoder",
    "TFPConvEncoder",
]
