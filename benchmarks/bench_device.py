"""Throughput of vaelab's three hot paths on one device, and against the same machine's CPU.

    python benchmarks/bench_device.py --device cuda --cpu-too   # GPU figures and ratios to this machine's CPU
    python benchmarks/bench_device.py --device cpu --quick      # smoke run (seconds)

On the VampPrior paper's VAE (gated MLPs 784-300-300-40, Bernoulli, static MNIST; `configs/vae_mnist_static.yaml`):
1. training: `Trainer.train_epoch` on 20 (`--quick`) or 200 batches (ELBO, batch 100, `adam_normgrad` as the config
   says; the split on the device, the loss and non-finite checks read back at the epoch's end), steps/s; and the
   same loop reading back every step (`readback_every = 1`: the one-sync-per-step loop of before), steps/s;
2. IS evaluation: `evaluate_log_likelihood` at k = 5,000 on test points, (x, z) pairs/s;
3. AIS: `vaelab.mcmc.ais` from q(z|x), 16 chains x `points` points x 10 leapfrog steps, gradient evaluations/s.
Each figure is the median of `--repeats` timed calls after a warm-up, with the device synchronised around each
call (CUDA work is asynchronous). CPU and device figures come from the same invocation on the same machine, so
their ratio is a ratio; prints one Markdown table and writes it as JSON to `--out` if given. On CUDA it also runs 10
training steps under `torch.cuda.set_sync_debug_mode("error")` and says whether any of them synchronised the host.
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


def measure(device: torch.device, quick: bool, repeats: int) -> tuple[dict[str, float], object]:
    """The figures on `device`, and the trainer they were measured with."""
    from vaelab.config import load_config
    from vaelab.evaluation import evaluate_log_likelihood
    from vaelab.mcmc import ais
    from vaelab.recording import build_run
    from vaelab.train.trainer import Trainer

    cfg = load_config(REPO / "configs" / "vae_mnist_static.yaml", budget="full")
    cfg.train.progress = False
    steps = 20 if quick else 200
    cfg.data.subset = cfg.data.batch_size * steps  # one epoch: `steps` steps
    run = build_run(cfg, Path("/nonexistent"), str(device))  # the run directory is never written
    trainer = Trainer(cfg, Path("/nonexistent"), run.model, run.dataset, run.device)
    out = {}
    for key, every in (("train steps/s", trainer.readback_every), ("train steps/s, read back every step", 1)):
        trainer.readback_every = every
        out[key] = steps / timed(lambda: trainer.train_epoch(1), device, repeats)
    trainer.readback_every = Trainer.readback_every
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
    return out, trainer


def host_syncs(trainer, device: torch.device, steps: int = 10) -> str:
    """Run `steps` training steps (batch, step, tally) with CUDA's sync debug mode raising on any host sync."""
    from vaelab.train.steps import StepTally

    data = trainer.placed("train", trainer.train_data(1))
    bs = trainer.cfg.data.batch_size
    order = torch.arange(steps * bs, device=data.index_device)
    tally = StepTally(device)
    trainer.model.train()
    _sync(device)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i in range(steps):
            tally.add(*trainer._step(data.batch(order[i * bs : (i + 1) * bs]), 1.0, 1.0))
    except RuntimeError as err:
        return f"a host sync in the step loop: {err}"
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return f"none in {steps} training steps (data on the device: {data.on_device})"


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
    figures, trainer = measure(device, args.quick, args.repeats)
    figures = {str(device): figures}
    syncs = host_syncs(trainer, device) if device.type == "cuda" else None
    if args.cpu_too and device.type != "cpu":
        figures["cpu"] = measure(torch.device("cpu"), args.quick, args.repeats)[0]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"vaelab hot paths on {name}; CPU threads {torch.get_num_threads()}; torch {torch.__version__}")
    cols = list(figures)
    print("| workload | " + " | ".join(cols) + (" | ratio |" if len(cols) == 2 else " |"))
    print("|---|" + "---|" * (len(cols) + (len(cols) == 2)))
    for key in figures[cols[0]]:
        vals = [figures[c][key] for c in cols]
        ratio = f" | {vals[0] / vals[1]:.1f}x" if len(cols) == 2 else ""
        print(f"| {key} | " + " | ".join(f"{v:,.0f}" for v in vals) + ratio + " |")
    if syncs is not None:
        print(f"host syncs: {syncs}")
    if args.out:
        record = {"device": name, "figures": figures, "host_syncs": syncs}
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
