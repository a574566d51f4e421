"""Throughput of vaelab's three hot paths on one device, and against the same machine's CPU.

    python benchmarks/bench_device.py --device cuda --cpu-too   # GPU figures and ratios to this machine's CPU
    python benchmarks/bench_device.py --device cpu --quick      # smoke run (seconds)

On the VampPrior paper's VAE (gated MLPs 784-300-300-40, Bernoulli, static MNIST; `configs/vae_mnist_static.yaml`):
1. training: `Trainer._step` (ELBO, batch 100, `adam_normgrad` as the config says), steps/s;
2. IS evaluation: `evaluate_log_likelihood` at k = 5,000 on test points, (x, z) pairs/s;
3. AIS: `vaelab.mcmc.ais` from q(z|x), 16 chains x `points` points x 10 leapfrog steps, gradient evaluations/s.
Each figure is the median of `--repeats` timed calls after a warm-up, with the device synchronised around each
call (CUDA work is asynchronous). CPU and device figures come from the same invocation on the same machine, so
their ratio is a ratio; prints one Markdown table and writes it as JSON to `--out` if given.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median seconds of `fn()` over `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(device: torch.device, quick: bool, repeats: int) -> dict[str, float]:
    from vaelab.config import load_config
    from vaelab.evaluation import evaluate_log_likelihood
    from vaelab.mcmc import ais
    from vaelab.recording import build_run
    from vaelab.train.trainer import Trainer

    cfg = load_config(REPO / "configs" / "vae_mnist_static.yaml", budget="full")
    cfg.train.progress = False
    run = build_run(cfg, Path("/nonexistent"), str(device))  # the run directory is never written
    trainer = Trainer(cfg, Path("/nonexistent"), run.model, run.dataset, run.device)
    train = run.dataset.split("train")[: 100 * 20].to(device)
    batches = [train[i * 100 : (i + 1) * 100] for i in range(20)]
    steps = 20 if quick else 200

    def train_steps():
        for i in range(steps):
            trainer._step(batches[i % 20], 1.0, 1.0)

    out = {"train steps/s": steps / timed(train_steps, device, repeats)}
    model = run.model.eval()
    points = 20 if quick else (1000 if device.type == "cuda" else 100)
    x = run.dataset.split("test")[:points].to(device)
    k = 5000
    t = timed(lambda: evaluate_log_likelihood(model, x, k, progress=False), device, repeats)
    out["IS pairs/s"] = points * k / t
    temps, chains, ais_points = (5, 16, 20) if quick else (21, 16, 100 if device.type == "cpu" else 1000)
    ais_x = run.dataset.split("test")[:ais_points].to(device)

    def anneal():
        ais(model, ais_x, chains=chains, schedule=temps, leapfrog_steps=10, init="posterior", progress=False)

    t = timed(anneal, device, repeats)
    out["AIS gradient evaluations/s"] = chains * ais_points * (temps - 1) * 11 / t
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--cpu-too", action="store_true", help="also measure this machine's CPU (all its cores)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", help="write the figures as JSON here")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_device: no CUDA device here; use --device cpu", file=sys.stderr)
        return 2
    figures = {str(device): measure(device, args.quick, args.repeats)}
    if args.cpu_too and device.type != "cpu":
        figures["cpu"] = measure(torch.device("cpu"), args.quick, args.repeats)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"vaelab hot paths on {name}; CPU threads {torch.get_num_threads()}; torch {torch.__version__}")
    cols = list(figures)
    print("| workload | " + " | ".join(cols) + (" | ratio |" if len(cols) == 2 else " |"))
    print("|---|" + "---|" * (len(cols) + (len(cols) == 2)))
    for key in figures[cols[0]]:
        vals = [figures[c][key] for c in cols]
        ratio = f" | {vals[0] / vals[1]:.1f}x" if len(cols) == 2 else ""
        print(f"| {key} | " + " | ".join(f"{v:,.0f}" for v in vals) + ratio + " |")
    if args.out:
        Path(args.out).write_text(json.dumps({"device": name, "figures": figures}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
