"""Neural networks used as encoders and decoders."""

from vaelab.nets.mlp import MLP, GatedDense, GatedMLP

__all__ = ["MLP", "GatedDense", "GatedMLP"]
