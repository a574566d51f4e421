"""Priors p(z) over the latent vector."""

from vaelab.priors.base import Prior
from vaelab.priors.standard_normal import StandardNormal

__all__ = ["Prior", "StandardNormal"]
