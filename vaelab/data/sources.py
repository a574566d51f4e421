"""Finding dataset files, verifying their checksums, and downloading them.

Places searched, in order (the first complete, verified variant wins):

1. an explicit ``path`` (a file, or a directory and its ``<dataset>/`` subdirectory); nothing else;
2. ``$VAELAB_DATA`` (one or more directories separated by ``os.pathsep``), each also with ``<dataset>/``;
3. the user cache ``$XDG_CACHE_HOME/vaelab/<dataset>`` (default ``~/.cache/vaelab/<dataset>``);
4. system directories of the dataset (Fashion-MNIST: Debian's ``/usr/share/datasets/fashion-mnist``);
5. the copy bundled inside the package (``mnist_static`` only);
6. a download into the user cache, unless ``VAELAB_DOWNLOAD=0``.

Variants of a lower ``tier`` are looked for in all places before those of a higher one (Caltech's
``split1`` file beats the full set wherever each is). Every file is checksum-verified before it is
parsed; results are cached in-process per (path, size, mtime).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from vaelab.errors import CorruptFile, DataError

from .registry import Arrays, DatasetSpec, FileSpec, Variant

ENV_DATA = "VAELAB_DATA"
ENV_DOWNLOAD = "VAELAB_DOWNLOAD"
DOWNLOAD_TIMEOUT_S = 60.0


class ChecksumMismatch(CorruptFile):
    """A file whose checksum matches none of the accepted ones; ``path`` names it."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


class DownloadFailed(DataError):
    """A download could not be completed (network error, HTTP error, or no mirror worked)."""


@dataclass(frozen=True)
class Location:
    """A directory searched for dataset files, with a short label saying why it is searched."""

    label: str
    directory: Path

    def describe(self) -> str:
        """``label dir`` plus a note when the directory does not exist."""
        missing = "" if self.directory.is_dir() else " (missing)"
        return f"{self.label} {self.directory}{missing}"


@dataclass
class Found:
    """A complete variant found on disk: the file for each canonical name, and where it was found."""

    variant: Variant
    files: dict[str, Path]
    location: Location


@dataclass
class Search:
    """The outcome of :func:`locate`: what was found, and every place looked (for error messages)."""

    found: Found | None
    looked: list[Location] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- places


def cache_root() -> Path:
    """The user cache directory for vaelab (``$XDG_CACHE_HOME/vaelab`` or ``~/.cache/vaelab``)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "vaelab"


def cache_dir(name: str) -> Path:
    """Where downloads of dataset ``name`` go."""
    return cache_root() / name


def bundled_dir() -> Path:
    """The directory of data files shipped inside the package."""
    return Path(str(resources.files("vaelab.data") / "bundled"))


def downloads_enabled() -> bool:
    """False when ``VAELAB_DOWNLOAD`` is ``0`` (or ``false``/``no``/``off``)."""
    return os.environ.get(ENV_DOWNLOAD, "1").strip().lower() not in ("0", "false", "no", "off")


def _with_subdir(label: str, d: Path, name: str) -> list[Location]:
    return [Location(label, d), Location(label, d / name)]


def search_locations(spec: DatasetSpec, path: str | os.PathLike | None = None) -> list[Location]:
    """The directories searched for ``spec``, in order (see module docstring)."""
    if path is not None:
        return _with_subdir("path", Path(path).expanduser(), spec.name)
    locs: list[Location] = []
    env = os.environ.get(ENV_DATA, "")
    for part in env.split(os.pathsep):
        if part.strip():
            locs += _with_subdir(f"${ENV_DATA}", Path(part.strip()).expanduser(), spec.name)
    locs.append(Location("user cache", cache_dir(spec.name)))
    locs += [Location("system directory", Path(d)) for d in spec.system_dirs]
    if spec.bundled is not None:
        locs.append(Location("bundled copy", bundled_dir()))
    return locs


def _find_file(directory: Path, f: FileSpec) -> Path | None:
    for n in f.names:
        p = directory / n
        if p.is_file():
            return p
    return None


def locate(spec: DatasetSpec, path: str | os.PathLike | None = None) -> Search:
    """Find the first complete variant of ``spec`` (by tier, then place, then variant order)."""
    search = Search(found=None)
    search.found = next(iter_found(spec, path, search), None)
    return search


def iter_found(spec: DatasetSpec, path: str | os.PathLike | None, search: Search) -> Iterator[Found]:
    """Every complete variant of ``spec`` on disk, best first; fills ``search.looked``/``incomplete``."""
    if path is not None and Path(path).expanduser().is_file():
        found = _locate_file(spec, Path(path).expanduser(), search)
        if found is not None:
            yield found
        return
    locs = search_locations(spec, path)
    search.looked = locs
    for tier in sorted({v.tier for v in spec.variants}):
        variants = [v for v in spec.variants if v.tier == tier]
        for loc in locs:
            if not loc.directory.is_dir():
                continue
            for v in variants:
                if loc.label == "bundled copy" and spec.bundled not in v.files[0].names:
                    continue
                hits = {f.name: _find_file(loc.directory, f) for f in v.files}
                present = {k: p for k, p in hits.items() if p is not None}
                if len(present) == len(v.files):
                    yield Found(v, present, loc)
                elif present:
                    missing = [k for k, p in hits.items() if p is None]
                    search.incomplete.append(f"{loc.directory} lacks {', '.join(missing)}")


def owner_of(path: Path, exclude: str) -> str | None:
    """The name of another registered dataset whose accepted file ``path`` is, if any."""
    from .registry import DATASETS

    data = None
    for spec in DATASETS.values():
        if spec.name == exclude:
            continue
        for v in spec.variants:
            for f in v.files:
                if path.name in f.names and f.verifiable:
                    data = path.read_bytes() if data is None else data
                    if _match(data, f, str(path)) is not None:
                        return spec.name
    return None


def _locate_file(spec: DatasetSpec, p: Path, search: Search) -> Found | None:
    """An explicit file: match by name (its siblings complete the variant), else by checksum."""
    loc = Location("path", p.parent)
    search.looked = [Location("file", p)]
    for v in sorted(spec.variants, key=lambda v: v.tier):
        for f in v.files:
            if p.name in f.names:
                files = {g.name: (p if g is f else _find_file(p.parent, g)) for g in v.files}
                missing = [k for k, q in files.items() if q is None]
                if missing:
                    search.incomplete.append(f"{p.parent} lacks {', '.join(missing)}")
                    continue
                return Found(v, {k: q for k, q in files.items() if q is not None}, loc)
    if search.incomplete:
        return None
    # Unknown name: identify a single-file variant by its checksum.
    singles = [v for v in spec.variants if len(v.files) == 1 and v.files[0].verifiable]
    if singles:
        data = p.read_bytes()
        for v in singles:
            if _match(data, v.files[0], str(p)) is not None:
                _remember(p, v.files[0])
                return Found(v, {v.files[0].name: p}, loc)
        accepted = ", ".join(n for v in spec.variants for f in v.files for n in f.names)
        raise CorruptFile(
            f"{p} is not a known copy of dataset {spec.name!r}: its sha256 {_hex('sha256', data)} matches no "
            f"accepted file ({accepted}); check the path, or delete the file and fetch it again"
        )
    return None


# ------------------------------------------------------------------------------------------ checksums

_VERIFIED: set[tuple[str, int, int, tuple[str, ...]]] = set()
"""(resolved path, size, mtime_ns, accepted checksums) of files that verified in this process."""


def _hex(algo: str, data: bytes) -> str:
    h = hashlib.md5(usedforsecurity=False) if algo == "md5" else hashlib.new(algo)
    h.update(data)
    return h.hexdigest()


def _matches(data: bytes, checksums: Iterable[str]) -> str | None:
    digests: dict[str, str] = {}
    for c in checksums:
        algo, _, want = c.partition(":")
        if algo not in digests:
            digests[algo] = _hex(algo, data)
        if digests[algo] == want:
            return c
    return None


def _gunzip(data: bytes, what: str) -> bytes:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise CorruptFile(
            f"{what} is not a valid gzip file ({e}): it is truncated or damaged; delete it and fetch it again"
        ) from None


def _match(data: bytes, f: FileSpec, what: str) -> bytes | None:
    """The payload of ``data`` if it matches one of ``f``'s checksums, else None."""
    if _matches(data, f.checksums):
        return _gunzip(data, what) if data[:2] == b"\x1f\x8b" else data
    if data[:2] == b"\x1f\x8b":
        try:
            content = gzip.decompress(data)
        except (OSError, EOFError, zlib.error):
            return None
        return content if _matches(content, f.content_checksums) else None
    return data if _matches(data, f.content_checksums) else None


def _expected(f: FileSpec) -> str:
    parts = list(f.checksums) + [f"{c} (uncompressed)" for c in f.content_checksums]
    return " or ".join(parts)


def read_verified(path: Path, f: FileSpec, dataset: str) -> bytes:
    """The payload of ``path`` (gunzipped if ``.gz``) after checking it against ``f``'s checksums.

    Raises :class:`CorruptFile` (naming the file, expected and actual checksums) on a mismatch.
    Files with no file checksum are returned as read; their variant's array checksums are checked later.
    """
    data = path.read_bytes()
    if not f.verifiable:
        return data
    key = _key(path, f)
    if key in _VERIFIED and len(data) == key[1]:
        return _gunzip(data, str(path)) if data[:2] == b"\x1f\x8b" else data
    payload = _match(data, f, str(path))
    if payload is None:
        if data[:2] == b"\x1f\x8b":
            try:
                inner = f"uncompressed {_hex('sha256', gzip.decompress(data))}"
            except (OSError, EOFError, zlib.error) as e:
                inner = f"not a valid gzip stream: {e}"
            actual = f"sha256 {_hex('sha256', data)} ({inner})"
        else:
            actual = f"sha256 {_hex('sha256', data)}"
        raise ChecksumMismatch(
            f"checksum mismatch for {path} ({len(data):,} bytes): got {actual}, expected {_expected(f)}; "
            f"the file is truncated, damaged or a different file: delete it and re-fetch it "
            f"(vaelab datasets --download {dataset})",
            path,
        )
    _VERIFIED.add(key)
    return payload


def _key(path: Path, f: FileSpec) -> tuple[str, int, int, tuple[str, ...]]:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, f.checksums + f.content_checksums)


def _remember(path: Path, f: FileSpec) -> None:
    _VERIFIED.add(_key(path, f))


def verify_arrays(arrays: Arrays, variant: Variant, what: str) -> None:
    """Check ``variant.array_checksums`` (sha256 of C-ordered array bytes) on parsed arrays."""
    for key, want in variant.array_checksums:
        a = np.ascontiguousarray(arrays[key])
        algo = want.partition(":")[0]
        got = f"{algo}:{_hex(algo, a.tobytes())}"
        if got != want:
            raise CorruptFile(
                f"contents of {what} do not match the known dataset: array {key!r} has {got}, expected {want}; "
                "delete the file and fetch it again"
            )


def read_variant(found: Found, dataset: str) -> Arrays:
    """Verify and parse all files of a found variant."""
    v = found.variant
    payloads = {f.name: read_verified(found.files[f.name], f, dataset) for f in v.files}
    what = ", ".join(str(p) for p in found.files.values())
    arrays = v.parse(payloads)
    if v.array_checksums:
        verify_arrays(arrays, v, what)
    return arrays


# ------------------------------------------------------------------------------------------- download


def _fetch(url: str, dest: Path, f: FileSpec, variant: Variant, desc: str) -> None:
    """Download ``url`` to ``dest`` via a temp file in the same directory; verify, then rename."""
    from vaelab.progress import progress

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            req = urllib.request.Request(url, headers={"User-Agent": "vaelab"})
            with urllib.request.urlopen(req, timeout=DOWNLOAD_TIMEOUT_S) as resp:
                total = resp.headers.get("Content-Length")
                with progress(
                    total=int(total) if total and total.isdigit() else None,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=desc,
                ) as bar:
                    while chunk := resp.read(1 << 20):
                        out.write(chunk)
                        bar.update(len(chunk))
        data = tmp.read_bytes()
        if f.verifiable:
            if _match(data, f, url) is None:
                raise CorruptFile(
                    f"download of {url} has sha256 {_hex('sha256', data)}, expected {_expected(f)}; "
                    "the mirror served a different or truncated file"
                )
        elif variant.array_checksums and len(variant.files) == 1:
            verify_arrays(variant.parse({f.name: data}), variant, url)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def download(spec: DatasetSpec, force: bool = False) -> Path:
    """Download ``spec``'s downloadable variant into the user cache; returns the directory.

    Files already there that verify are kept (unless ``force``). Raises :class:`DownloadFailed` when
    no mirror can be reached and :class:`CorruptFile` when every mirror served a wrong file.
    """
    v = spec.download_variant
    if v is None:
        raise DataError(
            f"dataset {spec.name!r} has no download source: put its files in ${ENV_DATA} "
            f"({', '.join(f.name for var in spec.variants for f in var.files)})"
        )
    target = cache_dir(spec.name)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(
            f"cannot create the download directory {target} ({e.strerror}): set XDG_CACHE_HOME to a writable "
            f"directory, or put the files in a directory named by ${ENV_DATA}"
        ) from None
    for f in v.files:
        dest = target / f.name
        if dest.is_file() and not force and _already_good(dest, f, v, spec.name):
            continue
        errors: list[str] = []
        corrupt_only = True
        for url in f.urls:
            try:
                _fetch(url, dest, f, v, f"{spec.name}: {f.name}")
                break
            except CorruptFile as e:
                errors.append(str(e))
            except (urllib.error.URLError, OSError, ValueError) as e:
                corrupt_only = False
                errors.append(" ".join(f"{url}: {getattr(e, 'reason', None) or e}".split()))
        else:
            cls = CorruptFile if corrupt_only else DownloadFailed
            raise cls(
                f"could not download {f.name} for {spec.name!r} ({'; '.join(errors)}); check the network, "
                f"or fetch the file yourself into {target} or a directory named by ${ENV_DATA}"
            )
    return target


def _already_good(dest: Path, f: FileSpec, v: Variant, dataset: str) -> bool:
    try:
        if f.verifiable:
            read_verified(dest, f, dataset)
        elif v.array_checksums and len(v.files) == 1:
            verify_arrays(v.parse({f.name: dest.read_bytes()}), v, str(dest))
        else:
            return False
    except CorruptFile:
        return False
    return True
