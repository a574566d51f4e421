"""The in-memory :class:`Dataset`, binarization, and the public loading functions.

Randomness (all with dedicated ``torch.Generator`` objects, never the global RNG):

* dynamic binarization of ``train`` (``mnist``, ``omniglot``): pixel ``i`` of epoch ``e`` is 1 with
  probability ``k_i/255``, drawn from a generator seeded by ``derive_seed(seed, e, dataset, "train")``;
  the same (seed, epoch) always gives the same tensor, and other epochs or seeds give others;
* ``valid``/``test`` of dynamic datasets, and every split of statically binarized gray datasets
  (``fashion_mnist``), are binarized once at load from :data:`FIXED_BINARIZATION_SEED`, independent of
  ``seed``, so evaluation sets are identical across runs and machines.

Draws are ``torch.rand(shape, generator=g) < p`` over a whole split; changing that would change every
binarization (``tests/test_data.py`` pins the fixed ones by checksum).
"""

from __future__ import annotations

import importlib.util
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vaelab.errors import ConfigError, DatasetNotFound

from . import sources
from .registry import DATASETS, SYNTHETIC, Arrays, Built, DatasetSpec, SyntheticSpec, get_spec

FIXED_BINARIZATION_SEED = 777
"""Seed for the binarizations made once at load (dynamic datasets' valid/test, static gray datasets)."""


def derive_seed(*parts: int | str) -> int:
    """A well-mixed 63-bit seed from integers and strings (strings enter via CRC-32)."""
    ints = [zlib.crc32(p.encode()) if isinstance(p, str) else int(p) for p in parts]
    a, b = np.random.SeedSequence(ints).generate_state(2, dtype=np.uint32)
    return (int(a) << 31) ^ int(b)


def binarize(probs: torch.Tensor, seed: int, dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """Bernoulli draws with ``P(1) = probs`` (uint8 levels k/255, or float in [0,1]), seeded by ``seed``.

    One ``torch.rand`` over the whole tensor from a fresh generator, compared with ``probs``.
    """
    g = torch.Generator(device="cpu").manual_seed(seed)
    p = probs.float().div_(255) if probs.dtype == torch.uint8 else probs.float()
    u = torch.rand(probs.shape, generator=g)
    u.lt_(p)  # in place: 1.0 where u < p, else 0.0
    del p
    return u if dtype == torch.float32 else u.to(dtype)


class Dataset:
    """A loaded dataset: compact tensors in memory, float32 batches on demand.

    ``split(name, epoch)`` returns ``float32 [N, *event_shape]``. Static splits are converted once
    and the same tensor is returned on every call (treat it as read-only); the dynamic train split
    is drawn afresh per (seed, epoch), with the last epoch's tensor kept for repeated calls.
    """

    def __init__(
        self,
        name: str,
        event_shape: tuple[int, ...],
        value_kind: str,
        binarization: str,
        source: str,
        pixels: dict[str, torch.Tensor],
        labels: dict[str, torch.Tensor | None],
        seed: int = 0,
        description: str = "",
        valid_held_out: bool = True,
        log_density: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.name = name
        self.event_shape = tuple(event_shape)
        self.value_kind = value_kind
        self.binarization = binarization
        self.source = source
        self.seed = seed
        self.description = description
        self.valid_held_out = valid_held_out  # False: valid is part of train (monitoring only)
        self.log_density = log_density  # exact log p_data(x) [N] of x [N, *event] (a generated dataset), or None
        self._pixels = pixels
        self._labels = labels
        self._float: dict[str, torch.Tensor] = {}
        self._dynamic_cache: tuple[int, torch.Tensor] | None = None
        self.sizes: dict[str, int] = {k: int(v.shape[0]) for k, v in pixels.items()}

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={n}" for k, n in self.sizes.items())
        return f"Dataset({self.name!r}, {self.value_kind}, {self.event_shape}, {sizes})"

    def _check(self, split: str) -> None:
        if split not in self._pixels:
            raise ConfigError(
                f"unknown split {split!r} for dataset {self.name!r}: choose one of {', '.join(self._pixels)}"
            )

    def split(self, name: str, epoch: int = 0) -> torch.Tensor:
        """The ``name`` split as float32 ``[N, *event_shape]``; ``epoch`` matters for dynamic train only."""
        self._check(name)
        if self.binarization == "dynamic" and name == "train":
            if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
                raise ConfigError(f"epoch must be an integer >= 0, got {epoch!r}")
            epoch = int(epoch)
            if self._dynamic_cache is not None and self._dynamic_cache[0] == epoch:
                return self._dynamic_cache[1]
            self._dynamic_cache = None  # free the previous epoch before drawing the next
            x = binarize(self._pixels["train"], derive_seed(self.seed, epoch, self.name, "train"), torch.float32)
            self._dynamic_cache = (epoch, x)
            return x
        if name not in self._float:
            x = self._pixels[name].float()
            if self.value_kind == "gray":
                x.div_(255)
            self._float[name] = x
        return self._float[name]

    def labels(self, name: str) -> torch.Tensor | None:
        """int64 labels ``[N]`` of the ``name`` split, or None when the dataset has none."""
        self._check(name)
        return self._labels.get(name)


@dataclass(frozen=True)
class DatasetStatus:
    """Whether a registered dataset's files are present (checksums are verified on load)."""

    name: str
    available: bool
    location: str | None
    description: str
    note: str


def build_dataset(spec: DatasetSpec | SyntheticSpec, built: Built, source: str, seed: int = 0) -> Dataset:
    """Turn a spec's built splits into a :class:`Dataset`, applying its binarization."""
    pixels: dict[str, torch.Tensor] = {}
    for i, (split, arr) in enumerate(built.pixels.items()):
        arr = np.ascontiguousarray(arr)
        x = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
        if tuple(x.shape[1:]) != tuple(spec.event_shape):
            raise ConfigError(
                f"dataset spec {spec.name!r} built split {split!r} of shape {tuple(x.shape)}, "
                f"expected [N, {', '.join(map(str, spec.event_shape))}]"
            )
        fixed = spec.binarization == "static" or (spec.binarization == "dynamic" and split != "train")
        if fixed:
            x = binarize(x, derive_seed(FIXED_BINARIZATION_SEED, spec.name, split, i))
        pixels[split] = x
    labels = {
        k: (None if v is None else torch.from_numpy(np.asarray(v, dtype=np.int64))) for k, v in built.labels.items()
    }
    return Dataset(
        spec.name,
        spec.event_shape,
        spec.value_kind,
        spec.binarization,
        source,
        pixels,
        labels,
        seed,
        spec.description,
        getattr(spec, "valid_held_out", True),  # generated datasets always hold their valid split out
        getattr(spec, "log_density", None),
    )


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"dataset seed must be an integer >= 0, got {seed!r}")
    return int(seed)


def _wanted_files(spec: DatasetSpec) -> str:
    return ", or ".join(" + ".join(f.name for f in v.files) for v in spec.variants)


def _not_found(spec: DatasetSpec, search: sources.Search, path: object, why: str) -> DatasetNotFound:
    places = ", ".join(loc.describe() for loc in search.looked)
    if path is None and not os.environ.get(sources.ENV_DATA, "").strip():
        places = f"${sources.ENV_DATA} (unset), {places}"
    msg = f"dataset {spec.name!r} not found: looked for {_wanted_files(spec)} in {places}"
    if search.incomplete:
        msg += f" ({'; '.join(search.incomplete)})"
    if why:
        msg += f"; {why}"
    first = spec.variants[0].files[0].name
    fix = f"set {sources.ENV_DATA}=/dir containing {first}"
    if path is not None:
        fix = f"pass a path that contains {first}, or no path to search the usual places"
    if spec.download_variant is not None:
        fix += f", or run: vaelab datasets --download {spec.name}"
    return DatasetNotFound(f"{msg}; {fix}")


def _describe_found(found: sources.Found) -> str:
    files = list(found.files.values())
    where = str(files[0]) if len(files) == 1 else f"{', '.join(p.name for p in files)} in {files[0].parent}"
    return f"{where} [{found.location.label}; {found.variant.description}]"


def load_dataset(name: str, path: str | os.PathLike | None = None, seed: int = 0) -> Dataset:
    """Find, verify and load dataset ``name`` (see :mod:`vaelab.data.sources` for where it looks).

    ``seed`` drives the per-epoch binarization of dynamic datasets and seeded splits that the
    dataset documents as seed-dependent (Frey Faces); fixed binarizations/splits ignore it.

    >>> ds = load_dataset("mnist_static")  # bundled: always there
    >>> ds.event_shape, ds.split("test").shape
    ((1, 28, 28), torch.Size([10000, 1, 28, 28]))
    """
    if name in SYNTHETIC:  # generated from the seed, no files
        if path is not None:
            raise ConfigError(f"dataset {name!r} is generated in memory, not read from files; remove data.path")
        synthetic, seed = SYNTHETIC[name], _check_seed(seed)
        built = synthetic.generate(seed)
        return build_dataset(synthetic, built, f"generated in memory (seed {seed}); {built.note}", seed)
    spec = get_spec(name)
    seed = _check_seed(seed)
    search = sources.Search(found=None)
    loaded = _first_readable(spec, sources.iter_found(spec, path, search), search, explicit=path is not None)
    why = ""
    if loaded is None and path is None and spec.download_variant is not None:
        if not sources.downloads_enabled():
            why = f"downloads are off ({sources.ENV_DOWNLOAD}=0)"
        else:
            try:
                sources.download(spec)
                candidates = sources.iter_found(spec, None, sources.Search(None))
                loaded = _first_readable(spec, candidates, search, explicit=False)
            except sources.DownloadFailed as e:
                why = f"download failed: {e}"
    if loaded is None:
        raise _not_found(spec, search, path, why)
    found, arrays = loaded
    built = spec.build(arrays, found.variant, seed)
    source = _describe_found(found) + (f"; {built.note}" if built.note else "")
    return build_dataset(spec, built, source, seed)


def _first_readable(
    spec: DatasetSpec, candidates: Iterator[sources.Found], search: sources.Search, explicit: bool
) -> tuple[sources.Found, Arrays] | None:
    """Verify and parse the first candidate; skip (not fail on) files that belong to another dataset."""
    for found in candidates:
        try:
            return found, sources.read_variant(found, spec.name)
        except sources.ChecksumMismatch as e:
            other = None if explicit else sources.owner_of(e.path, exclude=spec.name)
            if other is None:
                raise
            search.incomplete.append(f"skipped {e.path}: it is a {other} file")
    return None


def list_datasets() -> list[DatasetStatus]:
    """One status per registered dataset: whether its files are present (no download, no hashing)."""
    out = []
    have_scipy = importlib.util.find_spec("scipy") is not None
    for spec in DATASETS.values():
        found = sources.locate(spec).found
        if found is None:
            note = f"not found; set {sources.ENV_DATA}=/dir containing {spec.variants[0].files[0].name}"
            if spec.download_variant is not None:
                note += f", or run: vaelab datasets --download {spec.name}"
            out.append(DatasetStatus(spec.name, False, None, spec.description, note))
            continue
        files = list(found.files.values())
        location = str(files[0]) if len(files) == 1 else str(files[0].parent)
        note = f"{found.location.label}: {found.variant.description}"
        if found.variant.needs_scipy and not have_scipy:
            note += " (reading it needs scipy, which is not installed: pip install scipy)"
        out.append(DatasetStatus(spec.name, True, location, spec.description, note))
    for synthetic in SYNTHETIC.values():
        out.append(DatasetStatus(synthetic.name, True, "generated in memory", synthetic.description, "synthetic"))
    return out


def download(name: str, force: bool = False) -> Path:
    """Download dataset ``name`` into the user cache (verifying checksums); returns the directory."""
    return sources.download(get_spec(name), force=force)
