"""Models: compositions of encoder, posterior family, prior, decoder and likelihood."""

from vaelab.models.linear_gaussian import LinearGaussian
from vaelab.models.vae import VAE

__all__ = ["VAE", "LinearGaussian"]
