"""Datasets for vaelab: a registry of the benchmark datasets, verified loading, and binarization.

>>> ds = load_dataset("mnist_static")          # the bundled copy; no download needed
>>> x = ds.split("train")                       # float32 [50000, 1, 28, 28], values in {0, 1}

Where files are looked for and how they are verified: :mod:`vaelab.data.sources`. Which files each
dataset accepts, their checksums and how splits are made: :mod:`vaelab.data.catalog`. Binarization and
the :class:`Dataset` object: :mod:`vaelab.data.dataset`.
"""

from __future__ import annotations

from . import catalog as _catalog  # noqa: F401  (registers the built-in datasets)
from . import toy_abs as _toy_abs  # noqa: F401  (registers the generated SIWAE toy)
from . import toy_mixture1d as _toy_mixture1d  # noqa: F401  (registers the generated CP-VAE toy)
from .dataset import (
    FIXED_BINARIZATION_SEED,
    Dataset,
    DatasetStatus,
    download,
    list_datasets,
    load_dataset,
)
from .registry import (
    DATASETS,
    SYNTHETIC,
    DatasetSpec,
    FileSpec,
    SyntheticSpec,
    UnknownDataset,
    Variant,
    register,
    register_synthetic,
)

__all__ = [
    "DATASETS",
    "FIXED_BINARIZATION_SEED",
    "SYNTHETIC",
    "SyntheticSpec",
    "Dataset",
    "DatasetSpec",
    "DatasetStatus",
    "FileSpec",
    "UnknownDataset",
    "Variant",
    "download",
    "list_datasets",
    "load_dataset",
    "register",
    "register_synthetic",
]
