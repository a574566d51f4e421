"""CPU threads for torch: `--threads N` (every command that computes), else the config's `threads`, else
`$OMP_NUM_THREADS`, else 1.

One thread by default, because more thrash when other jobs hold cores: measured on this project's 2-core machine
with another job holding a core, two torch threads trained the quickstart model at 25 and 12 steps/s where one
thread (OMP_NUM_THREADS=1) gave 91 and 93, with bit-identical metrics. On an idle machine with many cores, ask for
more (`--threads 8`). A load average at or above the number of cores is reported in one line, since timings are
then slower than on an idle machine.
"""

from __future__ import annotations

import os
import sys

import torch

DEFAULT_THREADS = 1

#: On the CPU, the most decoder outputs one chunk of a batched decoder pass computes (IS samples, AIS chains): a few
#: MB of float32, so that a chunk's activations stay in cache and the elementwise work after the matmuls (bias,
#: activations, the likelihood and, for AIS, the backward to z) runs from cache rather than DRAM
#: (benchmarks/README.md: ~1.9x faster IS evaluation than 2**24-element chunks). Chunks change no draw: the
#: results are the same whatever the chunk size, up to round-off.
CPU_CHUNK_ELEMENTS = 2**20
_from_command_line: int | None = None  # --threads of the running command: wins over a config's `threads`


def default_threads() -> int:
    """`$OMP_NUM_THREADS` if it is a positive integer, else `DEFAULT_THREADS`."""
    text = os.environ.get("OMP_NUM_THREADS", "")
    return int(text) if text.isdigit() and int(text) >= 1 else DEFAULT_THREADS


def load_average() -> float:
    """The 1-minute load average (0 where the system has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def start_command(threads: int | None) -> int:
    """Before a command's work: use `threads` (its `--threads`; None: `default_threads()`, until a config names a
    count, `use_config_threads`), and warn in one line if the load average says the cores are taken."""
    global _from_command_line
    _from_command_line = threads
    n = threads or default_threads()
    torch.set_num_threads(n)
    load, cores = load_average(), os.cpu_count() or 1
    if load >= cores and os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 alone says it
        print(
            f"warning: load average {load:.1f} on {cores} cores: other jobs hold the cores, so this runs slower "
            f"than on an idle machine ({n} torch thread{'s' if n > 1 else ''}; --threads sets it)",
            file=sys.stderr,
        )
    return n


def use_config_threads(threads: int | None) -> None:
    """A config's `threads` (None: keep the current count), unless the command line gave `--threads`."""
    if threads is not None and _from_command_line is None:
        torch.set_num_threads(threads)
