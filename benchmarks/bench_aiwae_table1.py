"""Throughput of every cell of AIWAE Table 1 (Ding & Freedman 2019) and of its NLL protocol, on one thread.

Training: `Trainer._step` (objective, backward, Adam) of `configs/aiwae/mnist.yaml` for AIWAE K in {1, 5, 50} x
T in {5, 8, 11} and of `configs/iwae_mnist.yaml` for IWAE-K, each at its full budget (the paper's batch: 128 for
AIWAE, 20 for IWAE), on real mnist_60k training batches, timed by this thread's CPU time (`time.thread_time`), so
that other jobs on the machine slow the wall clock but not the rate (they still cost some cache; see
benchmarks/README.md). NLL: AIS as `vaelab evaluate RUN --ais aiwae` runs it (16 chains from q(z|x), 10 leapfrog
steps, one adapted step size), on 100 test points at once, with `--temps` temperatures instead of 10,000: the cost
is linear in the temperatures, so the seconds per point of the protocol are the measured ones x 10,000 / temps.

    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/bench_aiwae_table1.py --seconds 20 --temps 40

Prints one line per cell: steps per CPU-second, epochs per thread-hour, thread-hours for the config's epochs, with
the load average when it was measured; then the AIS seconds per test point.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def cells() -> list[tuple[str, list[str]]]:
    """(name, `--set` overrides) of every Table 1 cell, IWAE-K first in each K as in the paper."""
    out = []
    for k in (1, 5, 50):
        out.append((f"iwae k={k}", ["configs/iwae_mnist.yaml", f"objective.options.samples={k}"]))
        for t in (5, 8, 11):
            chains = [f"objective.options.chains={k}", f"objective.options.temperatures={t}"]
            out.append((f"aiwae K={k} T={t}", ["configs/aiwae/mnist.yaml", *chains]))
    return out


def step_rate(config: str, overrides: list[str], seconds: float, warmup: int = 2) -> tuple[float, int, int, int]:
    """Optimiser steps per CPU-second of the config's training step; also (steps timed, batch, epochs)."""
    from vaelab.config import load_config
    from vaelab.config.build import build_model
    from vaelab.data import load_dataset
    from vaelab.train.trainer import Trainer

    cfg = load_config(ROOT / config, ["train.progress=false", *overrides], budget="full")
    torch.manual_seed(0)
    dataset = load_dataset(cfg.data.name)
    model = build_model(cfg.model, dataset.event_shape)
    trainer = Trainer(cfg, Path("/tmp/vaelab-bench-never-written"), model, dataset, torch.device("cpu"))
    trainer.model.train()
    train = dataset.split("train")
    b = cfg.data.batch_size
    g = torch.Generator().manual_seed(0)
    batches = [torch.bernoulli(train[i * b : (i + 1) * b].float(), generator=g) for i in range(16)]
    for i in range(warmup):
        trainer._step(batches[i % 16], 1.0, 1.0)
    n, start = 0, time.thread_time()
    while time.thread_time() - start < seconds or n < 3:
        trainer._step(batches[n % 16], 1.0, 1.0)
        n += 1
    return n / (time.thread_time() - start), n, b, cfg.train.epochs


def ais_seconds_per_point(temps: int, points: int) -> float:
    """CPU seconds per test point of the `aiwae` AIS preset at `temps` temperatures, `points` annealed together,
    on the AIWAE config's freshly initialised model."""
    from vaelab.config import load_config
    from vaelab.config.build import build_model
    from vaelab.data import load_dataset
    from vaelab.evaluation import annealed
    from vaelab.mcmc.options import PRESETS

    cfg = load_config(ROOT / "configs/aiwae/mnist.yaml", budget="full")
    dataset = load_dataset(cfg.data.name)
    torch.manual_seed(0)
    model = build_model(cfg.model, dataset.event_shape).eval()
    x = dataset.split("test")[:points]
    options = dataclasses.replace(PRESETS["aiwae"], temps=temps, batch_size=points, seed=0)
    start = time.thread_time()
    annealed.evaluate_ais(model, x, options, progress=False)
    return (time.thread_time() - start) / points


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=20.0, help="CPU seconds timed per cell (default 20)")
    p.add_argument("--temps", type=int, default=40, help="AIS temperatures measured (default 40; protocol 10,000)")
    p.add_argument("--points", type=int, default=100, help="test points annealed together (default 100)")
    p.add_argument("--only", help="measure only the cells whose name contains this (e.g. 'K=50')")
    p.add_argument("--no-ais", action="store_true", help="skip the NLL measurement")
    args = p.parse_args()
    torch.set_num_threads(1)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"
    )
    for name, (config, *overrides) in cells():
        if args.only and args.only not in name:
            continue
        rate, n, batch, epochs = step_rate(config, overrides, args.seconds)
        steps_per_epoch = -(-60_000 // batch)
        hours = epochs * steps_per_epoch / rate / 3600
        print(
            f"{name}: {rate:.3g} steps/CPU-s ({n} steps, batch {batch}), {3600 * rate / steps_per_epoch:.3g} "
            f"epochs/thread-h, {hours:.3g} thread-h for {epochs} epochs; load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )
    if not args.no_ais:
        s = ais_seconds_per_point(args.temps, args.points)
        full = s * 10_000 / args.temps
        print(
            f"AIS 16 chains x {args.temps} temperatures x 10 leapfrog from q, {args.points} points together: {s:.3g} "
            f"CPU-s per point; the protocol's 10,000 temperatures: {full:.3g} s per point, {500 * full / 3600:.3g} "
            f"thread-h for 500 points, {10_000 * full / 3600:.3g} for 10,000; load average {os.getloadavg()[0]:.2f}"
        )


if __name__ == "__main__":
    main()
