"""vaelab: latent variable models with rich posteriors and priors, and honest measurement of how good they are.

>>> import vaelab
>>> vaelab.__version__
'0.1.0'
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vaelab")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
