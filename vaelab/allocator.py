"""glibc malloc settings for a `vaelab` command: keep freed tensor memory in the process instead of handing it back to
the kernel, so that a training step's large tensors are not page-faulted and zero-filled anew on every step.

PyTorch's CPU allocator takes each tensor from malloc and frees it when the tensor dies. glibc serves a chunk above
its mmap threshold (128 KiB, raised on the fly up to 32 MiB) by a fresh `mmap` and `munmap`s it on free, and trims the
top of its heap back to the kernel when more than twice that threshold is free there. A step whose tensors are
several MB (CP-VAE with K = 150 categories: `[100, 150, 300]` float32, 18 MB each) then faults in and zeroes those pages
in the kernel every step (and some of its tensors, 34 MiB, are above that ceiling). `tune_malloc` sets, through
`mallopt`, which applies to allocations from then on:

* `M_MMAP_THRESHOLD` = 64 MiB (`MMAP_THRESHOLD`): chunks up to 64 MiB come from the heap; larger ones (a data set's
  tensors) are still mmap'ed and given back when freed, as before (older glibc takes at most 32 MiB,
  `OLD_MMAP_LIMIT`: that, then);
* `M_TRIM_THRESHOLD` = 1 GiB (`TRIM_THRESHOLD`): the heap's top is given back only when more than 1 GiB of it is free.

The process then keeps its heap at its high-water mark instead of returning it between steps. Measured with
`python benchmarks/bench_allocator.py` (benchmarks/README.md, "Allocator": one torch thread, process CPU time per
training step, medians of 5 processes, load average 3.5-4 on 2 cores): configs/cpvae/toy_k150.yaml 170 -> 127 ms
(-25%; minor faults 19,700 -> 440 per step; peak RSS 533 -> 550 MB); configs/vae_mnist_static.yaml, the HVAE +
VampPrior and AIWAE K = 5 T = 5 already fault at most a few hundred pages per step and change within the noise
(AIWAE's peak RSS 748 -> 818 MB, presumably data-loading chunks below 64 MiB now kept in the heap). glibc's environment
variables with no limit on the mmap threshold (16 GiB) gave the same speed-up but 410 MB more peak RSS for AIWAE.

Applied on Linux with glibc only (`os.confstr("CS_GNU_LIBC_VERSION")`); nothing happens on macOS, Windows or musl,
when `VAELAB_MALLOC_TUNING=0`, or when the environment already sets glibc's own malloc variables (`MALLOC_*_`,
`GLIBC_TUNABLES`): those win.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Mapping

#: Set to 0 to leave glibc's malloc settings alone.
VARIABLE = "VAELAB_MALLOC_TUNING"
MMAP_THRESHOLD = 64 * 2**20  # twice glibc's own ceiling for its dynamic threshold (32 MiB on 64-bit)
TRIM_THRESHOLD = 2**30
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc <malloc.h>
#: The largest mmap threshold older glibc's `mallopt` takes (HEAP_MAX_SIZE / 2 = DEFAULT_MMAP_THRESHOLD_MAX, 32 MiB on
#: 64-bit, in the 2.26 source; 2.36 takes any int): `tune_malloc` falls back to it where a larger one is refused.
OLD_MMAP_LIMIT = 4 * 2**20 * ctypes.sizeof(ctypes.c_long)
#: The environment variables through which a user sets glibc's malloc: any of them, and `tune_malloc` does nothing.
GLIBC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")


def glibc_version() -> str | None:
    """glibc's version ("2.36") if this process runs on glibc, else None (musl, macOS, Windows)."""
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION")  # "glibc 2.36"; unknown name (ValueError) or None elsewhere
    except (AttributeError, ValueError, OSError):
        return None
    if not text or not text.startswith("glibc "):
        return None
    return text.split()[1]


def tune_malloc(
    environ: Mapping[str, str] | None = None, mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD
) -> bool:
    """Set glibc's `M_MMAP_THRESHOLD` and `M_TRIM_THRESHOLD` (bytes, below 2**31; module docstring) for the rest of
    the process; True if both were set (an mmap threshold that glibc refuses as too high lowered to `OLD_MMAP_LIMIT`).
    False, changing nothing, when `environ` (default `os.environ`) has `VAELAB_MALLOC_TUNING=0` or sets glibc's malloc
    itself, off Linux, or without glibc."""
    env = os.environ if environ is None else environ
    if env.get(VARIABLE, "1").strip() == "0" or not sys.platform.startswith("linux"):
        return False
    if any(name in env for name in GLIBC_VARIABLES) or "glibc.malloc." in env.get("GLIBC_TUNABLES", ""):
        return False
    if glibc_version() is None:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own libc
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mmap threshold first: setting either fixes glibc's dynamic thresholds at their current values
    # older glibc refuses one above OLD_MMAP_LIMIT (setting nothing): that limit then
    refused = mallopt(M_MMAP_THRESHOLD, mmap_threshold) != 1
    if refused and (mmap_threshold <= OLD_MMAP_LIMIT or mallopt(M_MMAP_THRESHOLD, OLD_MMAP_LIMIT) != 1):
        return False
    return mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1
