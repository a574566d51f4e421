"""Models: compositions of encoder, posterior family, prior, decoder and likelihood."""

from vaelab.models.classifier import Classifier
from vaelab.models.hvae import HVAE, HierarchicalPosterior, HierarchicalPrior, PixelHVAE
from vaelab.models.linear_gaussian import LinearGaussian
from vaelab.models.vae import VAE
from vaelab.models.vib import VIB

__all__ = [
    "HVAE",
    "VAE",
    "VIB",
    "Classifier",
    "HierarchicalPosterior",
    "HierarchicalPrior",
    "LinearGaussian",
    "PixelHVAE",
]
