"""vaelab: latent variable models with rich posteriors and priors, and honest measurement of how good they are.

>>> import vaelab
>>> vaelab.__version__
'0.1.0'

The Python API (README "Library"): `load_dataset`, `VAE`, `HVAE`, `fit`, `load`, `evaluate`, `ais`, `bdmc` (with
their `AISOptions`), `gaps`, `model_factory`, and the component classes (posterior families, priors, likelihoods,
objectives), each of which `VAE` and `fit` also take by its registry name. They are imported on first use, so
`import vaelab` stays cheap.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vaelab")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0+unknown"

_POSTERIORS = ("PosteriorFamily", "DiagonalGaussian", "FullCovarianceGaussian", "GaussianMixture")
_PRIORS = ("Prior", "StandardNormal", "MixtureOfGaussians", "VampPrior", "DistributionPrior")
_LIKELIHOODS = ("Likelihood", "Bernoulli", "Gaussian", "Categorical", "DiscretizedLogisticLikelihood")
_OBJECTIVES = ("Objective", "ELBO", "IWAE", "SIWAE", "AIWAE")

#: public name -> the module that defines it (imported by `__getattr__` when the name is first used).
_LAZY = {
    "load_dataset": "vaelab.data",
    "VAE": "vaelab.models.vae",
    "fit": "vaelab.fitting",
    "TensorData": "vaelab.fitting",
    "load": "vaelab.recording",
    "model_factory": "vaelab.recording",
    "evaluate": "vaelab.measure",
    "ais": "vaelab.measure",
    "bdmc": "vaelab.measure",
    "gaps": "vaelab.measure",
    "HVAE": "vaelab.models.hvae",
    "AISOptions": "vaelab.mcmc.options",
    "AuxiliaryFlowPosterior": "vaelab.posteriors",
    "PerPoint": "vaelab.posteriors",
    **dict.fromkeys(_POSTERIORS, "vaelab.posteriors"),
    **dict.fromkeys(_PRIORS, "vaelab.priors"),
    **dict.fromkeys(_LIKELIHOODS, "vaelab.likelihoods"),
    **dict.fromkeys(_OBJECTIVES, "vaelab.objectives"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'vaelab' has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
