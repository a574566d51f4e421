"""The built-in datasets, the files we accept for each, and how their splits are made.

Checksums (every one was checked against real data; see each entry):

* vaelab's compact ``.npz`` copies (``/work/shared/datasets`` in CI): sha256 computed from those files.
* ``binarized_mnist_*.amat``: sha256 of the bundled arrays rendered as ``.amat`` text; the renderings'
  git blob hashes equal those of the ``.amat`` files committed in public VAE repositories.
* MNIST IDX: the official ``.gz`` md5s and the widely published sha256s of the same ``.gz`` files; the
  uncompressed sha256s were computed from ``mnist.npz`` rendered as IDX and equal the published sha256s
  of the official uncompressed files (so ``mnist.npz`` is byte-identical to the official release).
* Fashion-MNIST IDX: upstream ``.gz`` md5s, and uncompressed sha256s computed from Debian's
  ``dataset-fashion-mnist`` (its ``.gz`` were recompressed; the uncompressed bytes equal upstream's).
* CIFAR-10 (``cifar-10-python.tar.gz`` from https://www.cs.toronto.edu/~kriz/, and its extracted
  ``cifar-10-batches-py/`` files): the md5s torchvision publishes (``torchvision/datasets/cifar.py``: ``tgz_md5``,
  ``train_list``, ``test_list``, ``meta``) and the archive's sha256 that Keras checks
  (``keras/datasets/cifar10.py``, ``file_hash``); 170,498,071 bytes.
* ``.mat`` files: the md5s published for them. ``frey_rawface.mat`` has no published checksum: its
  parsed 1965x560 pixel array must hash to the sha256 of ``freyfaces.npz``'s images.

Splits and randomness (all documented in ``Dataset.source`` too):

* ``mnist`` / ``fashion_mnist``: train = first 50,000 of the 60,000 training images, valid = the last
  10,000 (as VampPrior does), test = the 10,000 test images.
* ``fashion_mnist`` is binarized statically: once at load, Bernoulli(k/255), fixed seed
  (``FIXED_BINARIZATION_SEED``), identical on every machine and for every ``seed``.
* ``fashion_mnist_threshold``: Cremer et al.'s version (their loader, lxuechen/inference-suboptimality
  ``Binarized_Fashion``): pixel = 1 iff k/255 >= 0.5 (k >= 128), no randomness; train = first 55,000 of the
  training images, valid = the last 5,000, test = the 10,000 test images.
* ``mnist_60k``: MNIST with dynamic binarization trained on all 60,000 training images (AIWAE sec. 5 and
  xqding/AIWAE; Burda et al.'s IWAE protocol); valid = the last 10,000 of them, so it is *not* held out:
  validation figures are training-set figures, and early stopping on it is refused.
* ``caltech101``: Marlin's ``split1`` when its ``.mat`` is found anywhere; otherwise a random
  permutation of the full 8,671 images seeded with :data:`CALTECH_SPLIT_SEED` (independent of ``seed``)
  gives 4,100 / 2,264 / 2,307 — the same sizes, not the same images.
* ``freyfaces``: a random permutation of the 1,965 frames seeded by ``seed`` gives 1,565 / 200 / 200.
* ``omniglot``: train = first 23,000 of Burda's 24,345 training images, valid = the last 1,345 (file
  order; VampPrior shuffles first with an unseeded RNG, which cannot be reproduced), test = 8,070.
* ``cifar10``: Cremer et al.'s split (their loader, lxuechen/inference-suboptimality ``loader.py`` ``CIFAR10``,
  ``valid_size=0.1``: ``valid_idx = indices[:5000]``): valid = the first 5,000 of the 50,000 training images
  (file order: ``data_batch_1`` first), train = the other 45,000, test = the 10,000 test images; 8-bit RGB
  ``[3, 32, 32]`` levels k/255, i.e. "rescaled to [0, 1]" (sec. 6.1.3), not binarized.
* ``mnist_column``: MNIST's files and splits, each image reduced to its centre column (column 14 of 0..27,
  top to bottom), gray levels k/255 (SIWAE sec. 4.2: classification from the centremost column).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import torch

from vaelab.errors import CorruptFile

from . import formats
from .dataset import derive_seed
from .registry import Arrays, Built, DatasetSpec, FileSpec, Variant, register

CALTECH_SPLIT_SEED = 20100101
"""Seed of the fallback Caltech 101 split of the full set (used only when split1 is not found)."""

FREY_SPLIT_SIZES = (1565, 200, 200)
CALTECH_SPLIT_SIZES = (4100, 2264, 2307)
MNIST_VALID = 10000
FASHION_THRESHOLD_VALID = 5000
OMNIGLOT_VALID = 1345
CIFAR_VALID = 5000

_MNIST_IDX_BASES = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
_FASHION_BASES = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
_AMAT_BASE = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"


def _need(arr: np.ndarray, shape: tuple[int | None, ...], what: str) -> np.ndarray:
    ok = arr.ndim == len(shape) and all(s is None or s == d for s, d in zip(shape, arr.shape, strict=True))
    if not ok:
        want = "x".join("N" if s is None else str(s) for s in shape)
        raise CorruptFile(f"{what} has shape {arr.shape}, expected {want}; delete the file and fetch it again")
    return arr


def _idx_files(bases: tuple[str, ...], sums: Mapping[str, tuple[tuple[str, ...], str]]) -> tuple[FileSpec, ...]:
    out = []
    for stem, (gz_sums, content_sha) in sums.items():
        out.append(
            FileSpec(
                name=f"{stem}.gz",
                checksums=gz_sums,
                content_checksums=(content_sha,),
                urls=tuple(b + f"{stem}.gz" for b in bases),
                aliases=(stem,),
            )
        )
    return tuple(out)


# ----------------------------------------------------------------------------------------- mnist_static


def _parse_static_npz(p: Mapping[str, bytes]) -> Arrays:
    z = formats.read_npz(p["mnist_static_binarized.npz"], "mnist_static_binarized.npz", ("train", "valid", "test"))
    return {k: _need(np.unpackbits(v, axis=1), (None, 784), k) for k, v in z.items()}


def _parse_static_amat(p: Mapping[str, bytes]) -> Arrays:
    return {
        k: formats.read_amat(p[f"binarized_mnist_{k}.amat"], f"binarized_mnist_{k}.amat")
        for k in ("train", "valid", "test")
    }


def _build_static(a: Arrays, v: Variant, seed: int) -> Built:
    return Built(
        pixels={k: a[k].reshape(-1, 1, 28, 28) for k in ("train", "valid", "test")},
        labels={k: None for k in ("train", "valid", "test")},
        note="Larochelle & Murray static binarization (fixed splits, no labels)",
    )


_AMAT_SHA256 = {
    "train": "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d",
    "valid": "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2",
    "test": "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c",
}

MNIST_STATIC = DatasetSpec(
    name="mnist_static",
    description="MNIST, static binarization of Larochelle & Murray (2011): 50,000/10,000/10,000, no labels",
    event_shape=(1, 28, 28),
    value_kind="binary",
    binarization="none",
    variants=(
        Variant(
            key="npz",
            description="vaelab bit-packed .npz",
            files=(
                FileSpec(
                    "mnist_static_binarized.npz",
                    checksums=("sha256:df14a884cb4aa7ac6692463fb31798a687c4e762c73c23a8ae3114fbec4e6093",),
                ),
            ),
            parse=_parse_static_npz,
        ),
        Variant(
            key="amat",
            description="original .amat text files",
            files=tuple(
                FileSpec(
                    f"binarized_mnist_{k}.amat",
                    checksums=(f"sha256:{s}",),
                    urls=(_AMAT_BASE + f"binarized_mnist_{k}.amat",),
                )
                for k, s in _AMAT_SHA256.items()
            ),
            parse=_parse_static_amat,
        ),
    ),
    build=_build_static,
    has_labels=False,
    split_sizes={"train": 50000, "valid": 10000, "test": 10000},
    bundled="mnist_static_binarized.npz",
)

# ------------------------------------------------------------------------------------------------ mnist

_IDX_KEYS = {
    "train-images-idx3-ubyte": "x_train",
    "train-labels-idx1-ubyte": "y_train",
    "t10k-images-idx3-ubyte": "x_test",
    "t10k-labels-idx1-ubyte": "y_test",
}
_IDX_SHAPES = {"x_train": (60000, 28, 28), "y_train": (60000,), "x_test": (10000, 28, 28), "y_test": (10000,)}


def _parse_idx(p: Mapping[str, bytes]) -> Arrays:
    out = {}
    for stem, key in _IDX_KEYS.items():
        out[key] = _need(formats.read_idx(p[f"{stem}.gz"], stem), _IDX_SHAPES[key], stem)
    return out


def _parse_mnist_npz(p: Mapping[str, bytes]) -> Arrays:
    z = formats.read_npz(p["mnist.npz"], "mnist.npz", tuple(_IDX_SHAPES))
    return {k: _need(v, _IDX_SHAPES[k], f"mnist.npz:{k}") for k, v in z.items()}


def _build_mnist_like(a: Arrays, v: Variant, seed: int, train_on_all: bool = False) -> Built:
    """valid = the last 10,000 training images; train = the others, or all 60,000 (`train_on_all`: not held out)."""
    x, y = a["x_train"], a["y_train"].astype(np.int64)
    end = None if train_on_all else -MNIST_VALID
    train = "all 60,000 training images" if train_on_all else "first 50,000 of the training images"
    return Built(
        pixels={
            "train": x[:end, None],
            "valid": x[-MNIST_VALID:, None],
            "test": a["x_test"][:, None],
        },
        labels={"train": y[:end], "valid": y[-MNIST_VALID:], "test": a["y_test"].astype(np.int64)},
        note=f"train = {train}, valid = last 10,000" + (" of them (not held out)" if train_on_all else ""),
    )


def _build_mnist(a: Arrays, v: Variant, seed: int, train_on_all: bool = False) -> Built:
    b = _build_mnist_like(a, v, seed, train_on_all)
    b.note += f"; train binarized per epoch from (seed={seed}, epoch), valid/test binarized once with a fixed seed"
    return b


def _build_mnist_60k(a: Arrays, v: Variant, seed: int) -> Built:
    return _build_mnist(a, v, seed, train_on_all=True)


def _build_fashion_threshold(a: Arrays, v: Variant, seed: int) -> Built:
    x, y, n = a["x_train"], a["y_train"].astype(np.int64), FASHION_THRESHOLD_VALID
    binary = {k: (arr >= 128).astype(np.uint8)[:, None] for k, arr in (("train", x), ("test", a["x_test"]))}
    return Built(
        pixels={"train": binary["train"][:-n], "valid": binary["train"][-n:], "test": binary["test"]},
        labels={"train": y[:-n], "valid": y[-n:], "test": a["y_test"].astype(np.int64)},
        note="pixel = 1 iff k/255 >= 0.5 (Cremer et al.'s code); train = first 55,000 of the training images, "
        "valid = last 5,000",
    )


def _build_fashion(a: Arrays, v: Variant, seed: int) -> Built:
    b = _build_mnist_like(a, v, seed)
    b.note += "; binarized once (static) with a fixed seed"
    return b


MNIST = DatasetSpec(
    name="mnist",
    description="MNIST with dynamic binarization each epoch: 50,000/10,000/10,000, labels 0..9",
    event_shape=(1, 28, 28),
    value_kind="binary",
    binarization="dynamic",
    variants=(
        Variant(
            key="npz",
            description="grayscale .npz (x_train, y_train, x_test, y_test)",
            files=(
                FileSpec(
                    "mnist.npz",
                    checksums=(
                        "sha256:06af5dfe73b70e3bc1c36439982b18a8d76803db9b544f6fdf838a37fbb01b64",  # vaelab CI copy
                        "sha256:731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",  # Keras copy
                    ),
                ),
            ),
            parse=_parse_mnist_npz,
        ),
        Variant(
            key="idx",
            description="official IDX files",
            files=_idx_files(
                _MNIST_IDX_BASES,
                {
                    "train-images-idx3-ubyte": (
                        (
                            "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873",
                            "sha256:440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                        ),
                        "sha256:ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                    ),
                    "train-labels-idx1-ubyte": (
                        (
                            "md5:d53e105ee54ea40749a09fcbcd1e9432",
                            "sha256:3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                        ),
                        "sha256:65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                    ),
                    "t10k-images-idx3-ubyte": (
                        (
                            "md5:9fb629c4189551a2d022fa330f9573f3",
                            "sha256:8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                        ),
                        "sha256:0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                    ),
                    "t10k-labels-idx1-ubyte": (
                        (
                            "md5:ec29112dd5afa0611ce80d1b7f02629c",
                            "sha256:f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                        ),
                        "sha256:ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
                    ),
                },
            ),
            parse=_parse_idx,
        ),
    ),
    build=_build_mnist,
    has_labels=True,
    split_sizes={"train": 50000, "valid": 10000, "test": 10000},
)

# ---------------------------------------------------------------------------------------- fashion_mnist

FASHION_MNIST = DatasetSpec(
    name="fashion_mnist",
    description="Fashion-MNIST, binarized once with a fixed seed: 50,000/10,000/10,000, labels 0..9",
    event_shape=(1, 28, 28),
    value_kind="binary",
    binarization="static",
    variants=(
        Variant(
            key="idx",
            description="IDX files",
            files=_idx_files(
                _FASHION_BASES,
                {
                    "train-images-idx3-ubyte": (
                        ("md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d",),
                        "sha256:c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                    ),
                    "train-labels-idx1-ubyte": (
                        ("md5:25c81989df183df01b3e8a0aad5dffbe",),
                        "sha256:bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                    ),
                    "t10k-images-idx3-ubyte": (
                        ("md5:bef4ecab320f06d8554ea6380940ec79",),
                        "sha256:5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                    ),
                    "t10k-labels-idx1-ubyte": (
                        ("md5:bb300cfdad3c16e7a12a480ee83cd310",),
                        "sha256:0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
                    ),
                },
            ),
            parse=_parse_idx,
        ),
    ),
    build=_build_fashion,
    has_labels=True,
    split_sizes={"train": 50000, "valid": 10000, "test": 10000},
    system_dirs=("/usr/share/datasets/fashion-mnist",),
)

# ------------------------------------------------------------------------------------------- caltech101


def _caltech_images(x: np.ndarray, what: str) -> np.ndarray:
    """Column-major rows with 1 = background -> upright ``[N, 1, 28, 28]`` uint8 with 1 = object."""
    x = formats.to_uint8_levels(_need(np.asarray(x), (None, 784), what), what, binary=True)
    return (1 - formats.column_major_to_upright(x, 28, 28))[:, None]


def _caltech_labels(y: np.ndarray, n: int, what: str) -> np.ndarray:
    y = np.asarray(y).reshape(-1).astype(np.int64)
    if y.shape[0] != n or (n and (y.min() < 1 or y.max() > 101)):
        raise CorruptFile(f"{what}: expected {n} labels in 1..101; delete the file and fetch it again")
    return y - 1


def _parse_caltech_split1(p: Mapping[str, bytes]) -> Arrays:
    name = "caltech101_silhouettes_28_split1.mat"
    m = formats.read_mat(p[name], name)
    out = {}
    for split, key in (("train", "train"), ("valid", "val"), ("test", "test")):
        x = _caltech_images(formats.mat_array(m, f"{key}_data", name), f"{name}:{key}_data")
        out[f"x_{split}"] = x
        out[f"y_{split}"] = _caltech_labels(formats.mat_array(m, f"{key}_labels", name), len(x), name)
    return out


def _parse_caltech_full_npz(p: Mapping[str, bytes]) -> Arrays:
    name = "caltech101_silhouettes28_full.npz"
    z = formats.read_npz(p[name], name, ("X", "Y"))
    x = _caltech_images(np.unpackbits(_need(z["X"], (None, 98), name), axis=1), name)
    return {"x": x, "y": _caltech_labels(z["Y"], len(x), name)}


def _parse_caltech_full_mat(p: Mapping[str, bytes]) -> Arrays:
    name = "caltech101_silhouettes_28.mat"
    m = formats.read_mat(p[name], name)
    x = formats.mat_array(m, "X", name)
    if x.ndim == 2 and x.shape[0] == 784 and x.shape[1] != 784:
        x = x.T
    x = _caltech_images(x, name)
    return {"x": x, "y": _caltech_labels(formats.mat_array(m, "Y", name), len(x), name)}


def _build_caltech(a: Arrays, v: Variant, seed: int) -> Built:
    if v.key == "split1":
        return Built(
            pixels={s: a[f"x_{s}"] for s in ("train", "valid", "test")},
            labels={s: a[f"y_{s}"] for s in ("train", "valid", "test")},
            note="Marlin's split1 (4,100/2,264/2,307); upright, 1 = object",
        )
    n = len(a["x"])
    if n != sum(CALTECH_SPLIT_SIZES):
        raise CorruptFile(f"the Caltech 101 full set has {n} images, expected {sum(CALTECH_SPLIT_SIZES)}")
    g = torch.Generator().manual_seed(derive_seed(CALTECH_SPLIT_SEED, "caltech101-split"))
    perm = torch.randperm(n, generator=g).numpy()
    a1, a2 = CALTECH_SPLIT_SIZES[0], CALTECH_SPLIT_SIZES[0] + CALTECH_SPLIT_SIZES[1]
    idx = {"train": perm[:a1], "valid": perm[a1:a2], "test": perm[a2:]}
    return Built(
        pixels={s: a["x"][i] for s, i in idx.items()},
        labels={s: a["y"][i] for s, i in idx.items()},
        note=(
            f"split1 not found: fixed random 4,100/2,264/2,307 split of the full set (seed {CALTECH_SPLIT_SEED}),"
            " NOT Marlin's split1; upright, 1 = object"
        ),
    )


CALTECH101 = DatasetSpec(
    name="caltech101",
    description="Caltech 101 Silhouettes 28x28 (upright, 1 = object): 4,100/2,264/2,307, labels 0..100",
    event_shape=(1, 28, 28),
    value_kind="binary",
    binarization="none",
    variants=(
        Variant(
            key="split1",
            description="Marlin's split1 .mat",
            files=(
                FileSpec(
                    "caltech101_silhouettes_28_split1.mat",
                    checksums=("md5:4483e9c14b188fd09937f9ea6f9ea777",),
                    urls=("https://people.cs.umass.edu/~marlin/data/caltech101_silhouettes_28_split1.mat",),
                ),
            ),
            parse=_parse_caltech_split1,
            needs_scipy=True,
        ),
        Variant(
            key="full-npz",
            description="full set, vaelab .npz (seeded split, not split1)",
            files=(
                FileSpec(
                    "caltech101_silhouettes28_full.npz",
                    checksums=("sha256:afcb044529615bf4bdcbc2f79fc3920cff1a0b6b2a12856de0d78f7967042178",),
                ),
            ),
            parse=_parse_caltech_full_npz,
            tier=1,
        ),
        Variant(
            key="full-mat",
            description="full set .mat (seeded split, not split1)",
            files=(FileSpec("caltech101_silhouettes_28.mat", checksums=("md5:1432d2809e8bf111f1104a234731ddb1",)),),
            parse=_parse_caltech_full_mat,
            tier=1,
            needs_scipy=True,
        ),
    ),
    build=_build_caltech,
    has_labels=True,
    split_sizes=dict(zip(("train", "valid", "test"), CALTECH_SPLIT_SIZES, strict=True)),
)

# -------------------------------------------------------------------------------------------- freyfaces


def _parse_frey_npz(p: Mapping[str, bytes]) -> Arrays:
    z = formats.read_npz(p["freyfaces.npz"], "freyfaces.npz", ("images",))
    return {"images": _need(z["images"], (1965, 28, 20), "freyfaces.npz:images")}


def _parse_frey_mat(p: Mapping[str, bytes]) -> Arrays:
    name = "frey_rawface.mat"
    ff = _need(formats.mat_array(formats.read_mat(p[name], name), "ff", name), (560, 1965), name)
    x = formats.to_uint8_levels(ff, name, binary=False)
    return {"images": np.ascontiguousarray(x.T).reshape(-1, 28, 20)}


def _build_frey(a: Arrays, v: Variant, seed: int) -> Built:
    x = a["images"]
    g = torch.Generator().manual_seed(derive_seed(seed, "freyfaces-split"))
    perm = torch.randperm(len(x), generator=g).numpy()
    a1, a2 = FREY_SPLIT_SIZES[0], FREY_SPLIT_SIZES[0] + FREY_SPLIT_SIZES[1]
    idx = {"train": perm[:a1], "valid": perm[a1:a2], "test": perm[a2 : a2 + FREY_SPLIT_SIZES[2]]}
    return Built(
        pixels={s: x[i][:, None] for s, i in idx.items()},
        labels={s: None for s in idx},
        note=f"random 1,565/200/200 split of the 1,965 frames, seeded by seed={seed}",
    )


FREYFACES = DatasetSpec(
    name="freyfaces",
    description="Frey Faces 28x20 gray (k/255): seeded 1,565/200/200 split of 1,965 frames, no labels",
    event_shape=(1, 28, 20),
    value_kind="gray",
    binarization="none",
    variants=(
        Variant(
            key="npz",
            description="vaelab .npz",
            files=(
                FileSpec(
                    "freyfaces.npz",
                    checksums=("sha256:3c70375e0a9c4751ad49ad5f1f692bd094c46f133cf4aa8ea77d1cb14e1efcd1",),
                ),
            ),
            parse=_parse_frey_npz,
        ),
        Variant(
            key="mat",
            description="Roweis' original .mat (pixels verified after parsing)",
            files=(FileSpec("frey_rawface.mat", urls=("https://cs.nyu.edu/~roweis/data/frey_rawface.mat",)),),
            parse=_parse_frey_mat,
            array_checksums=(("images", "sha256:2438ba4f0d2a6bd8bac43de756141eaa33c8d248dd613d464bdb1210d9b7af78"),),
            needs_scipy=True,
        ),
    ),
    build=_build_frey,
    has_labels=False,
    split_sizes=dict(zip(("train", "valid", "test"), FREY_SPLIT_SIZES, strict=True)),
)

# --------------------------------------------------------------------------------------------- omniglot


def parse_omniglot_mat(p: Mapping[str, bytes]) -> Arrays:
    """Burda's ``chardata.mat``: ``data``/``testdata`` [784, N] in [0,1], column-major images;
    ``target``/``testtarget`` [50, N] one-hot alphabets (optional) -> labels 0..49."""
    name = "chardata.mat"
    m = formats.read_mat(p[name], name)
    out: Arrays = {}
    for split, key, tkey in (("train", "data", "target"), ("test", "testdata", "testtarget")):
        raw = _need(formats.mat_array(m, key, name), (784, None), f"{name}:{key}")
        x = formats.to_probabilities(raw.T, f"{name}:{key}")
        out[f"x_{split}"] = formats.column_major_to_upright(x, 28, 28)[:, None]
        if tkey in m:
            t = np.asarray(m[tkey])
            if t.ndim != 2 or t.shape[1] != raw.shape[1]:
                raise CorruptFile(f"{name}:{tkey} has shape {t.shape}, expected [alphabets, {raw.shape[1]}]")
            out[f"y_{split}"] = t.argmax(axis=0).astype(np.int64)
    return out


def _build_omniglot(a: Arrays, v: Variant, seed: int) -> Built:
    x, y = a["x_train"], a.get("y_train")
    return Built(
        pixels={"train": x[:-OMNIGLOT_VALID], "valid": x[-OMNIGLOT_VALID:], "test": a["x_test"]},
        labels={
            "train": None if y is None else y[:-OMNIGLOT_VALID],
            "valid": None if y is None else y[-OMNIGLOT_VALID:],
            "test": a.get("y_test"),
        },
        note=(
            f"valid = last {OMNIGLOT_VALID:,} training images (file order); train binarized per epoch from "
            f"(seed={seed}, epoch), valid/test binarized once with a fixed seed; labels = alphabet"
        ),
    )


OMNIGLOT = DatasetSpec(
    name="omniglot",
    description="Omniglot 28x28 (Burda et al.), dynamic binarization: 23,000/1,345/8,070, alphabet labels",
    event_shape=(1, 28, 28),
    value_kind="binary",
    binarization="dynamic",
    variants=(
        Variant(
            key="mat",
            description="Burda's chardata.mat",
            files=(
                FileSpec(
                    "chardata.mat",
                    checksums=("md5:21ecaf34373511aa7691cf2e0802aa3d",),
                    urls=("https://raw.githubusercontent.com/yburda/iwae/master/datasets/OMNIGLOT/chardata.mat",),
                ),
            ),
            parse=parse_omniglot_mat,
            needs_scipy=True,
        ),
    ),
    build=_build_omniglot,
    has_labels=True,
    split_sizes={"train": 23000, "valid": 1345, "test": 8070},
)

# ---------------------------------------------------------------------------------------------- cifar10

_CIFAR_BATCHES = {  # file -> md5 (torchvision/datasets/cifar.py)
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_TAR = "cifar-10-python.tar.gz"


def _cifar_batch(data: bytes, what: str, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One pickled CIFAR batch: ``data`` uint8 ``[N, 3072]`` (1,024 red, then green, then blue values, rows top to
    bottom) -> images ``[N, 3, 32, 32]`` and int64 labels ``[N]`` in 0..9."""
    d = formats.read_pickled_dict(data, what)
    if "data" not in d or "labels" not in d:
        raise CorruptFile(f"{what} lacks 'data' or 'labels' (has {sorted(d)}); delete it and fetch it again")
    x = _need(np.asarray(d["data"]), (n, 3072), what)
    y = np.asarray(d["labels"], dtype=np.int64).reshape(-1)
    if x.dtype != np.uint8 or len(y) != len(x) or (len(y) and (y.min() < 0 or y.max() > 9)):
        raise CorruptFile(
            f"{what}: expected uint8 pixels and one label in 0..9 per image; delete it and fetch it again"
        )
    return np.ascontiguousarray(x.reshape(-1, 3, 32, 32)), y


def _parse_cifar_batches(p: Mapping[str, bytes]) -> Arrays:
    """The seven files of ``cifar-10-batches-py`` -> ``x_train`` ``[N, 3, 32, 32]`` (N = 50,000: ``data_batch_1``
    to ``_5`` in order), ``y_train``, ``x_test`` ``[10000, 3, 32, 32]``, ``y_test`` (``batches.meta`` must name the
    10 classes)."""
    meta = formats.read_pickled_dict(p["batches.meta"], "batches.meta")
    if len(meta.get("label_names", ())) != 10:
        raise CorruptFile("batches.meta does not name 10 classes: not CIFAR-10; delete it and fetch it again")
    train = [_cifar_batch(p[f"data_batch_{i}"], f"data_batch_{i}") for i in range(1, 6)]
    x_test, y_test = _cifar_batch(p["test_batch"], "test_batch")
    out = {
        "x_train": np.concatenate([x for x, _ in train]),
        "y_train": np.concatenate([y for _, y in train]),
        "x_test": x_test,
        "y_test": y_test,
    }
    return out  # 50,000 and 10,000 images in the verified files (10,000 per batch)


def _parse_cifar_tar(p: Mapping[str, bytes]) -> Arrays:
    members = formats.read_tar_members(p[_CIFAR_TAR], _CIFAR_TAR, [f"{_CIFAR_DIR}/{n}" for n in _CIFAR_BATCHES])
    return _parse_cifar_batches({n.rpartition("/")[2]: b for n, b in members.items()})


def _build_cifar(a: Arrays, v: Variant, seed: int) -> Built:
    x, y, n = a["x_train"], a["y_train"], CIFAR_VALID
    if len(x) <= n:
        raise CorruptFile(f"CIFAR-10 has {len(x)} training images, fewer than the {n} held out; fetch it again")
    return Built(
        pixels={"train": x[n:], "valid": x[:n], "test": a["x_test"]},
        labels={"train": y[n:], "valid": y[:n], "test": a["y_test"]},
        note="valid = first 5,000 training images (Cremer et al.'s loader), train = the other 45,000; levels k/255",
    )


CIFAR10 = DatasetSpec(
    name="cifar10",
    description="CIFAR-10 32x32 RGB, levels k/255: 45,000/5,000/10,000 (valid = first 5,000 of train), labels 0..9",
    event_shape=(3, 32, 32),
    value_kind="gray",
    binarization="none",
    variants=(
        Variant(
            key="tar",
            description="the python-version archive cifar-10-python.tar.gz",
            files=(
                FileSpec(
                    _CIFAR_TAR,
                    checksums=(
                        "md5:c58f30108f718f92721af3b95e74349a",  # torchvision tgz_md5
                        "sha256:6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",  # Keras file_hash
                    ),
                    urls=(f"https://www.cs.toronto.edu/~kriz/{_CIFAR_TAR}",),
                ),
            ),
            parse=_parse_cifar_tar,
        ),
        Variant(
            key="batches",
            description="extracted cifar-10-batches-py files",
            files=tuple(
                FileSpec(name, checksums=(f"md5:{md5}",), aliases=(f"{_CIFAR_DIR}/{name}",))
                for name, md5 in _CIFAR_BATCHES.items()
            ),
            parse=_parse_cifar_batches,
        ),
    ),
    build=_build_cifar,
    has_labels=True,
    split_sizes={"train": 45000, "valid": CIFAR_VALID, "test": 10000},
)

# ----------------------------------------------------------------------------------------- mnist_column

MNIST_CENTRE_COLUMN = 14


def _build_mnist_column(a: Arrays, v: Variant, seed: int) -> Built:
    b = _build_mnist_like(a, v, seed)
    pixels = {k: x[:, 0, :, MNIST_CENTRE_COLUMN] for k, x in b.pixels.items()}  # [N, 1, 28, 28] -> [N, 28]
    return Built(pixels, b.labels, b.note + f"; column {MNIST_CENTRE_COLUMN} of each image, gray levels k/255")


MNIST_COLUMN = dataclasses.replace(
    MNIST,
    name="mnist_column",
    description="the centre column (28 gray pixels) of each MNIST image, labels 0..9 (SIWAE sec. 4.2)",
    event_shape=(28,),
    value_kind="gray",
    binarization="none",
    build=_build_mnist_column,
)

FASHION_MNIST_THRESHOLD = dataclasses.replace(
    FASHION_MNIST,
    name="fashion_mnist_threshold",
    description="Fashion-MNIST thresholded at 0.5 (Cremer et al.'s code): 55,000/5,000/10,000, labels 0..9",
    binarization="none",
    build=_build_fashion_threshold,
    split_sizes={"train": 55000, "valid": 5000, "test": 10000},
)

MNIST_60K = dataclasses.replace(
    MNIST,
    name="mnist_60k",
    description="MNIST, dynamic binarization, train = all 60,000 (AIWAE); valid = last 10,000 of them (not held out)",
    build=_build_mnist_60k,
    split_sizes={"train": 60000, "valid": 10000, "test": 10000},
    valid_held_out=False,
)

for _spec in (
    MNIST_STATIC,
    MNIST,
    MNIST_60K,
    FASHION_MNIST,
    FASHION_MNIST_THRESHOLD,
    CALTECH101,
    FREYFACES,
    OMNIGLOT,
    MNIST_COLUMN,
    CIFAR10,
):
    register(_spec, replace=True)
