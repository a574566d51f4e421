"""Parsers for the file formats datasets come in: ``.npz``, IDX, ``.amat`` text, MATLAB ``.mat``, ``.tar`` archives
and the pickled numpy batches of CIFAR's "python version".

Each parser takes bytes that have already been checksum-verified (or, for ``.mat`` files without a
trusted file checksum, bytes whose parsed arrays are verified next) and returns numpy arrays.
Malformed content raises :class:`~vaelab.errors.CorruptFile`.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import zipfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from vaelab.errors import CorruptFile, DataError


def _corrupt(what: str, why: str) -> CorruptFile:
    return CorruptFile(f"cannot read {what}: {why}; delete the file and fetch it again")


def read_npz(data: bytes, what: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Arrays ``keys`` from an ``.npz`` file (no pickles)."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise _corrupt(what, f"missing arrays {missing} (has {sorted(z.files)})")
            return {k: z[k] for k in keys}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise _corrupt(what, f"not a valid .npz ({e})") from None


def read_idx(data: bytes, what: str) -> np.ndarray:
    """A uint8 IDX array (the MNIST format: magic ``0x0000080N``, N big-endian int32 dims, raw bytes)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise _corrupt(what, "not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise _corrupt(what, "truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    n = int(np.prod(shape))
    if len(data) != header + n:
        raise _corrupt(what, f"IDX header says {n} values of shape {shape}, file holds {len(data) - header}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_amat(data: bytes, what: str, width: int = 784) -> np.ndarray:
    """Binary ``.amat`` text (one image per line, ``width`` values ``0``/``1`` separated by spaces)."""
    line = 2 * width
    if len(data) % line != 0:
        raise _corrupt(what, f"size {len(data)} is not a whole number of {line}-byte lines")
    raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, line)
    seps = raw[:, 1::2]
    if not ((seps[:, :-1] == ord(" ")).all() and (seps[:, -1] == ord("\n")).all()):
        raise _corrupt(what, "unexpected separators (expected single spaces and '\\n' line ends)")
    x = raw[:, 0::2] - ord("0")
    if x.size and x.max() > 1:
        raise _corrupt(what, "values other than 0 and 1")
    return np.ascontiguousarray(x, dtype=np.uint8)


def read_mat(data: bytes, what: str) -> dict[str, Any]:
    """All variables of a MATLAB (v4-v7.2) ``.mat`` file, via scipy (imported only here)."""
    try:
        import scipy.io
    except ImportError:
        raise DataError(
            f"reading {what} needs scipy, which is not installed: run `pip install scipy` "
            "or use the .npz copy of this dataset"
        ) from None
    try:
        return scipy.io.loadmat(io.BytesIO(data))
    except Exception as e:  # scipy raises many types (ValueError, MatReadError, TypeError...)
        raise _corrupt(what, f"not a readable .mat file ({type(e).__name__}: {e})") from None


def mat_array(mat: dict[str, Any], key: str, what: str) -> np.ndarray:
    """``mat[key]`` as an ndarray, or :class:`CorruptFile` naming the missing variable."""
    if key not in mat:
        names = sorted(k for k in mat if not k.startswith("__"))
        raise _corrupt(what, f"no variable {key!r} (has {names})")
    return np.asarray(mat[key])


def column_major_to_upright(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """Images stored as MATLAB column-major vectors ``[N, h*w]`` -> upright ``[N, h, w]``."""
    return np.ascontiguousarray(x.reshape(-1, w, h).transpose(0, 2, 1))


def read_tar_members(data: bytes, what: str, names: Sequence[str]) -> dict[str, bytes]:
    """The bytes of members ``names`` of an (uncompressed) tar archive, read in memory (nothing is extracted)."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            out = {}
            for name in names:
                try:
                    member = tar.getmember(name)
                except KeyError:
                    member = None
                handle = tar.extractfile(member) if member is not None and member.isfile() else None
                if handle is None:
                    raise _corrupt(what, f"the archive has no file {name!r}")
                out[name] = handle.read()
            return out
    except (tarfile.TarError, EOFError, OSError) as e:
        raise _corrupt(what, f"not a valid tar archive ({e})") from None


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles only builtin containers and numpy arrays: any other global (a function, a class) is refused, so a
    pickle cannot run code. Python 2 strings are read as latin-1 (numpy's own advice for Python 2 pickles)."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_pickled_dict(data: bytes, what: str) -> dict[str, Any]:
    """A pickled dict of numpy arrays, lists and strings (CIFAR's batches), keys as ``str`` (Python 2 pickles'
    byte-string keys decoded); refuses pickles of anything else."""
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as e:  # pickle raises many types (UnpicklingError, EOFError, ValueError, ...)
        raise _corrupt(what, f"not a readable pickle of arrays ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise _corrupt(what, f"expected a pickled dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def to_uint8_levels(x: np.ndarray, what: str, binary: bool) -> np.ndarray:
    """Float/int pixel data -> uint8: {0,1} if ``binary``, else 0..255 levels; refuses other values."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        out = x
    else:
        r = np.rint(x)
        if not np.array_equal(r, x) or (r.size and (r.min() < 0 or r.max() > 255)):
            raise _corrupt(what, "pixel values are not integers in 0..255")
        out = r.astype(np.uint8)
    if binary and out.size and out.max() > 1:
        raise _corrupt(what, "expected binary pixels (0/1)")
    return np.ascontiguousarray(out)


def to_probabilities(x: np.ndarray, what: str) -> np.ndarray:
    """Intensities in [0, 1] -> uint8 k/255 when exactly representable, else float32 (kept exact)."""
    x = np.asarray(x, dtype=np.float64)
    if x.size and (not np.isfinite(x).all() or x.min() < 0 or x.max() > 1):
        raise _corrupt(what, "pixel intensities outside [0, 1]")
    k = np.rint(x * 255)
    if np.allclose(k / 255, x, rtol=0, atol=1e-6):
        return k.astype(np.uint8)
    return x.astype(np.float32)
