"""The dataset registry: what a dataset is, which files make it, and how they become splits.

A dataset (:class:`DatasetSpec`) lists one or more accepted *variants* (:class:`Variant`), each a set
of files (:class:`FileSpec`) with the checksums of the copies we trust and a parser that turns the
verified file contents into named numpy arrays. The spec's ``build`` function then makes the
train/valid/test splits from those arrays. Adding a dataset is one call to :func:`register`.

Checksums are strings ``"sha256:<hex>"`` or ``"md5:<hex>"``. ``FileSpec.checksums`` are of the file as
stored; ``FileSpec.content_checksums`` are of the gunzipped content of a ``.gz`` file (so copies that were
recompressed, e.g. by Debian, still verify) and equally of the uncompressed file itself. A variant whose
files have no trusted file checksum must give ``array_checksums``: the sha256 of parsed arrays, checked
before any data is used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from vaelab.errors import ConfigError, DatasetNotFound

if TYPE_CHECKING:
    from torch import Tensor

Arrays = dict[str, np.ndarray]

VALUE_KINDS = ("binary", "gray")
BINARIZATIONS = ("none", "static", "dynamic")
HASH_ALGORITHMS = ("sha256", "md5")


class UnknownDataset(ConfigError, DatasetNotFound):
    """A dataset name that is not registered (both a configuration error and a missing dataset)."""


@dataclass(frozen=True)
class FileSpec:
    """One file of a variant: its canonical name, accepted checksums and download URLs (mirrors)."""

    name: str
    checksums: tuple[str, ...] = ()
    content_checksums: tuple[str, ...] = ()
    urls: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """All accepted file names, canonical first."""
        return (self.name, *self.aliases)

    @property
    def verifiable(self) -> bool:
        """Whether the raw file can be checked before parsing."""
        return bool(self.checksums or self.content_checksums)


@dataclass(frozen=True)
class Variant:
    """A set of files that together hold a dataset, and how to parse them.

    ``parse`` receives the verified payloads (gunzipped for ``.gz`` files) keyed by canonical file
    name and returns named arrays. ``tier`` orders variants by preference across all locations
    (lower first); variants of equal tier are searched location by location.
    """

    key: str
    description: str
    files: tuple[FileSpec, ...]
    parse: Callable[[Mapping[str, bytes]], Arrays]
    tier: int = 0
    array_checksums: tuple[tuple[str, str], ...] = ()
    needs_scipy: bool = False

    @property
    def downloadable(self) -> bool:
        """Whether every file has at least one URL."""
        return all(f.urls for f in self.files)


@dataclass
class Built:
    """Splits made by a spec's ``build``: pixel arrays ``[N, *event_shape]`` and optional labels.

    Pixel arrays are uint8 (binary {0,1}, or gray levels 0..255 meaning k/255) or float32
    probabilities in [0, 1] (only as the source of a dynamic binarization). ``note`` describes how
    the splits were made and is appended to ``Dataset.source``.
    """

    pixels: dict[str, np.ndarray]
    labels: dict[str, np.ndarray | None]
    note: str = ""


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset.

    ``binarization``: ``"none"`` (values used as stored), ``"static"`` (gray data binarized once at load
    with a fixed seed) or ``"dynamic"`` (train re-binarized each epoch from (seed, epoch); valid/test
    binarized once with a fixed seed). ``build(arrays, variant, seed)`` makes the splits.
    ``system_dirs`` are extra directories searched after the user cache (e.g. a Debian package);
    ``bundled`` names a file inside ``vaelab/data/bundled`` searched last. ``valid_held_out`` is False when
    the valid split is part of train (monitoring only: the trainer refuses early stopping on it).
    """

    name: str
    description: str
    event_shape: tuple[int, ...]
    value_kind: str
    binarization: str
    variants: tuple[Variant, ...]
    build: Callable[[Arrays, Variant, int], Built]
    has_labels: bool
    split_sizes: dict[str, int] = field(default_factory=dict)
    system_dirs: tuple[str, ...] = ()
    bundled: str | None = None
    valid_held_out: bool = True

    @property
    def download_variant(self) -> Variant | None:
        """The first variant (by tier, then order) that can be downloaded, if any."""
        for v in sorted(self.variants, key=lambda v: v.tier):
            if v.downloadable:
                return v
        return None


DATASETS: dict[str, DatasetSpec] = {}


@dataclass(frozen=True)
class SyntheticSpec:
    """A dataset generated in memory from its seed, with no files: ``generate(seed)`` returns its splits as a
    :class:`Built` (float32 values for ``value_kind="real"``). Registered with :func:`register_synthetic`."""

    name: str
    description: str
    event_shape: tuple[int, ...]
    value_kind: str
    generate: Callable[[int], Built]
    has_labels: bool
    split_sizes: dict[str, int] = field(default_factory=dict)
    binarization: str = "none"
    #: The exact log p_data(x) `[N]` of points x `[N, *event_shape]` under the generating distribution, when it is
    #: known: `vaelab evaluate` reports it beside the model's estimate (`data_log_likelihood`, `gap_to_data`).
    log_density: Callable[[Tensor], Tensor] | None = None


SYNTHETIC: dict[str, SyntheticSpec] = {}


def register_synthetic(spec: SyntheticSpec) -> SyntheticSpec:
    """Add a generated dataset (toy data) to :data:`SYNTHETIC`; its name must not be a file dataset's."""
    if spec.name in DATASETS or spec.name in SYNTHETIC:
        raise ConfigError(f"dataset {spec.name!r} is already registered")
    if spec.value_kind not in (*VALUE_KINDS, "real"):
        raise ConfigError(f"synthetic dataset {spec.name!r}: value_kind must be binary, gray or real")
    SYNTHETIC[spec.name] = spec
    return spec


def _check_checksum(text: str, where: str) -> None:
    algo, _, digest = text.partition(":")
    n = {"sha256": 64, "md5": 32}.get(algo)
    if n is None or len(digest) != n or any(c not in "0123456789abcdef" for c in digest):
        raise ConfigError(f"bad checksum {text!r} in {where}: use 'sha256:<64 hex>' or 'md5:<32 hex>'")


def register(spec: DatasetSpec, replace: bool = False) -> DatasetSpec:
    """Add ``spec`` to :data:`DATASETS` after checking it is self-consistent; returns it."""
    where = f"dataset spec {spec.name!r}"
    if spec.name in DATASETS and not replace:
        raise ConfigError(f"{where} is already registered: pass replace=True to override it")
    if spec.value_kind not in VALUE_KINDS:
        raise ConfigError(f"{where}: value_kind must be one of {', '.join(VALUE_KINDS)}")
    if spec.binarization not in BINARIZATIONS:
        raise ConfigError(f"{where}: binarization must be one of {', '.join(BINARIZATIONS)}")
    if spec.binarization != "none" and spec.value_kind != "binary":
        raise ConfigError(f"{where}: a binarized dataset must have value_kind 'binary'")
    if not spec.variants:
        raise ConfigError(f"{where}: needs at least one file variant")
    keys = [v.key for v in spec.variants]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"{where}: variant keys must be unique, got {keys}")
    for v in spec.variants:
        for f in v.files:
            for c in (*f.checksums, *f.content_checksums):
                _check_checksum(c, f"{where}, file {f.name}")
            if not f.verifiable and not v.array_checksums:
                raise ConfigError(
                    f"{where}: file {f.name} has no checksum and variant {v.key!r} has no array checksums; "
                    "every file must be verifiable"
                )
        for _, c in v.array_checksums:
            _check_checksum(c, f"{where}, variant {v.key}")
    if spec.bundled is not None and not any(
        len(v.files) == 1 and spec.bundled in v.files[0].names for v in spec.variants
    ):
        raise ConfigError(f"{where}: bundled file {spec.bundled} is not a single-file variant")
    DATASETS[spec.name] = spec
    return spec


def get_spec(name: str) -> DatasetSpec:
    """The registered spec called ``name``; :class:`UnknownDataset` lists the valid names otherwise."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        names = ", ".join(sorted([*DATASETS, *SYNTHETIC]))
        raise UnknownDataset(f"unknown dataset {name!r}: choose one of {names}") from None
