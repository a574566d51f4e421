"""Shared helpers for the benchmarks: thread setup, the matmul peak, timing, FLOP counts, data and tables.

FLOP convention: only matrix products are counted, 2*m*n*k per linear layer (bias adds, activations and
likelihood terms are not counted). A training step counts the forward pass once and the backward pass as
twice the forward (gradients with respect to the inputs and to the weights), i.e. 3x the forward FLOPs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

# The benchmark model: MLP VAE 784-300-300-40 (encoder 784-300-300, Gaussian head 300 -> 2*40; decoder
# 40-300-300-784), batch 100, as in Burda et al. (2016) and the VampPrior paper.
DATA_DIM, HIDDEN, LATENT, BATCH = 784, (300, 300), 40, 100
IS_SAMPLES = 5000


_clock = time.perf_counter


def parse_args(description: str, points: int, repeats: int, argv: list[str] | None = None) -> argparse.Namespace:
    """The options both benchmark scripts take; `points` and `repeats` are their full-run defaults."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="short smoke run")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--cpu-clock", action="store_true", help="time by thread CPU time (needs --threads 1)")
    p.add_argument("--points", type=int, default=None, help=f"test points for IS evaluation (default {points})")
    p.add_argument("--repeats", type=int, default=None, help=f"timed repeats per workload (default {repeats}; quick 3)")
    args = p.parse_args(argv)
    setup_threads(args.threads, args.cpu_clock)
    return args


def setup_threads(threads: int | None = None, cpu_clock: bool = False) -> int:
    """Use all cores (or `threads`) for intra-op parallelism; returns the number used.

    `cpu_clock` times with the calling thread's CPU time instead of the wall clock: with one thread (all
    work then runs on the calling thread) the figures no longer count time the thread spent descheduled,
    which makes them comparable on a machine that other processes are using.
    """
    global _clock
    n = threads or os.cpu_count() or 1
    if cpu_clock and n != 1:
        raise SystemExit("--cpu-clock needs --threads 1 (other threads' work would not be counted)")
    torch.set_num_threads(n)
    _clock = time.thread_time if cpu_clock else time.perf_counter
    return n


def clock_name() -> str:
    return "thread CPU time" if _clock is time.thread_time else "wall clock"


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_avg() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def load_avg_1min() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def machine_line() -> str:
    return (
        f"{cpu_model()}, {os.cpu_count()} logical cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, timed by {clock_name()}, load average {load_avg()}"
    )


# --- timing -------------------------------------------------------------------------------------------
@dataclass
class Timing:
    """Seconds per call over repeats (each repeat times `inner` calls and divides)."""

    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def spread(self) -> float:
        """(max - min) / median over the repeats: how noisy the measurement was."""
        return (max(self.seconds) - min(self.seconds)) / self.median


def time_it(fn: Callable[[], object], repeats: int = 7, inner: int = 1, warmup: int = 2) -> Timing:
    """Call `fn` `warmup` times, then time `repeats` blocks of `inner` calls; per-call seconds."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = _clock()
        for _ in range(inner):
            fn()
        out.append((_clock() - t0) / inner)
    return Timing(out)


def interleaved(fns: Sequence[Callable[[], object]], repeats: int, inner: Sequence[int]) -> list[Timing]:
    """Time several workloads in alternation (repeat r of each, then repeat r + 1, ...), so that a change
    in the machine's load hits all of them alike. `inner[i]` calls of `fns[i]` per block."""
    out: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = _clock()
            for _ in range(inner[i]):
                fn()
            out[i].append((_clock() - t0) / inner[i])
    return [Timing(t) for t in out]


def matmul_peak(sizes: Sequence[int] = (1024, 2048, 3072, 4096), repeats: int = 5) -> tuple[float, int]:
    """Best fp32 GEMM rate (GFLOP/s) over square sizes `n`: C = A B with A, B `[n, n]`. Returns (rate, n)."""
    best, best_n = 0.0, 0
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        c = torch.empty(n, n)
        t = time_it(lambda a=a, b=b, c=c: torch.mm(a, b, out=c), repeats=repeats, warmup=2)
        rate = 2 * n**3 / t.best / 1e9
        if rate > best:
            best, best_n = rate, n
    return best, best_n


# --- FLOP counts --------------------------------------------------------------------------------------
def linear_flops(rows: int, widths: Sequence[int]) -> int:
    """2 * rows * in * out summed over consecutive widths (a chain of linear layers)."""
    return sum(2 * rows * a * b for a, b in zip(widths[:-1], widths[1:], strict=False))


def encoder_flops(rows: int) -> int:
    return linear_flops(rows, (DATA_DIM, *HIDDEN)) + linear_flops(rows, (HIDDEN[-1], 2 * LATENT))


def decoder_flops(rows: int) -> int:
    return linear_flops(rows, (LATENT, *reversed(HIDDEN), DATA_DIM))


def train_step_flops(batch: int = BATCH, samples: int = 1) -> int:
    """Forward + backward (2x forward) matmul FLOPs of one step with `samples` latent draws per point."""
    return 3 * (encoder_flops(batch) + decoder_flops(batch * samples))


def is_eval_flops(points: int, samples: int = IS_SAMPLES) -> int:
    """Forward matmul FLOPs of IS evaluation: one encoder pass per point, one decoder pass per (x, z)."""
    return encoder_flops(points) + decoder_flops(points * samples)


# --- data ---------------------------------------------------------------------------------------------
def mnist_static() -> tuple[torch.Tensor, torch.Tensor]:
    """Static binarized MNIST (train, test) as float32 `[N, 1, 28, 28]`, from vaelab's data loader."""
    from vaelab.data import load_dataset

    ds = load_dataset("mnist_static")
    return ds.split("train"), ds.split("test")


# --- output -------------------------------------------------------------------------------------------
def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    cells = [[str(c) for c in header]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [
        "  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(c: object) -> str:
    if isinstance(c, float):
        if c >= 1000:
            return f"{c:,.0f}"
        if c >= 100:
            return f"{c:.1f}"
        return f"{c:.3g}" if c < 1 else f"{c:.2f}"
    return str(c)
