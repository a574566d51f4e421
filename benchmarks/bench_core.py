"""CPU speed of vaelab's hot paths, as fractions of this machine's fp32 matmul peak.

    python benchmarks/bench_core.py            # full run (a few minutes)
    python benchmarks/bench_core.py --quick    # smoke run (seconds; noisier figures)

Workloads (MLP VAE 784-300-300-40, ReLU, Bernoulli likelihood, diagonal Gaussian q, N(0, I) prior, Adam,
static binarized MNIST):

* training: `Trainer._step` (the trainer's real step: forward, backward, finiteness checks, Adam) at
  batch 100 for the ELBO (analytic KL, 1 sample) and IWAE (k = 5);
* IS evaluation: `vaelab.evaluation.evaluate_log_likelihood` at k = 5000 on test points, in (x, z)-pairs/s.

Each figure is also given as achieved GFLOP/s (matmul FLOPs, counted analytically; see common.py) and as
a fraction of the measured fp32 matmul peak.
"""

from __future__ import annotations

import itertools
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

TARGETS = {"train": 0.60, "is": 0.70}


@dataclass(eq=False)
class Workload:
    """One timed workload: `fn()` does `units` units of work (1 step, or points * k pairs)."""

    name: str
    kind: str  # "train" or "is" (which target applies)
    unit: str  # "steps/s" or "pairs/s"
    fn: Callable[[], object]
    units: float
    flops: float  # matmul FLOPs per call
    inner: int = 1  # calls per timed block
    warmup: int = 1


@dataclass
class Result:
    name: str
    kind: str
    unit: str
    rate: float  # units per second (median over repeats)
    best: float  # units per second (fastest repeat)
    gflops: float  # achieved matmul GFLOP/s at the median rate
    spread: float  # (max - min) / median of the repeats

    @classmethod
    def of(cls, w: Workload, t: common.Timing) -> Result:
        return cls(w.name, w.kind, w.unit, w.units / t.median, w.units / t.best, w.flops / t.median / 1e9, t.spread)


def vaelab_config(objective: str = "elbo", samples: int = 1, overrides: Sequence[str] = ()):
    """The benchmark model's config; `overrides` (e.g. `model.prior={type: vampprior}`) are applied last."""
    from vaelab.config import load_config

    mlp = f"{{type: mlp, hidden: [{common.HIDDEN[0]}, {common.HIDDEN[1]}], activation: relu}}"
    objective_opts = f"{{samples: {samples}}}" if objective == "iwae" else "{samples: 1, analytic_kl: true}"
    return load_config(
        None,
        [
            "data.name=mnist_static",
            f"data.batch_size={common.BATCH}",
            f"model.latent_dim={common.LATENT}",
            f"model.encoder={mlp}",
            f"model.decoder={mlp}",
            "model.posterior={type: diagonal_gaussian}",
            "model.prior={type: standard_normal}",
            "model.likelihood={type: bernoulli}",
            f"objective.type={objective}",
            f"objective.options={objective_opts}",
            "objective.warmup_epochs=0",
            "train.lr=1e-3",
            "train.grad_clip=null",
            "train.progress=false",
            *overrides,
        ],
    )


def build_trainer(objective: str = "elbo", samples: int = 1, seed: int = 0, overrides: Sequence[str] = ()):
    """A `Trainer` for the benchmark model on static MNIST (its run directory is never written to)."""
    from vaelab.config.build import build_model
    from vaelab.data import load_dataset
    from vaelab.train.trainer import Trainer

    cfg = vaelab_config(objective, samples, overrides)
    torch.manual_seed(seed)
    dataset = load_dataset(cfg.data.name)
    model = build_model(cfg.model, dataset.event_shape)
    run_dir = Path(tempfile.gettempdir()) / "vaelab-bench"  # never written: only `_step` is called
    return Trainer(cfg, run_dir, model, dataset, torch.device("cpu"))


def train_batches(train: torch.Tensor, n: int = 50) -> list[torch.Tensor]:
    """`n` fixed random batches of real training images, cycled through by the training workloads."""
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(train.shape[0], generator=g)
    return [train[order[i * common.BATCH : (i + 1) * common.BATCH]].contiguous() for i in range(n)]


def cycle(batches: list[torch.Tensor]) -> Callable[[], torch.Tensor]:
    it = itertools.cycle(batches)
    return lambda: next(it)


def train_name(objective: str, samples: int) -> str:
    return "train ELBO (analytic KL)" if objective == "elbo" else f"train IWAE k={samples}"


def vaelab_train(
    objective: str, samples: int, train: torch.Tensor, quick: bool, overrides: Sequence[str] = ()
) -> tuple[Workload, torch.nn.Module]:
    """`Trainer._step` on real batches; returns the workload and the model it trains."""
    trainer = build_trainer(objective, samples, overrides=overrides)
    trainer.model.train()
    nxt = cycle(train_batches(train))
    w = Workload(
        train_name(objective, samples),
        "train",
        "steps/s",
        lambda: trainer._step(nxt(), 1.0, 1.0),
        1,
        common.train_step_flops(common.BATCH, samples),
        inner=20 if quick else 100,
        warmup=10 if quick else 200,
    )
    return w, trainer.model


def vaelab_is(model: torch.nn.Module, test: torch.Tensor, points: int, **kwargs) -> Workload:
    """`evaluate_log_likelihood` at k = 5000 on the first `points` test points."""
    from vaelab.evaluation import evaluate_log_likelihood

    model.eval()
    x, k = test[:points], common.IS_SAMPLES
    return Workload(
        f"IS eval k={k} ({points} pts)",
        "is",
        "pairs/s",
        lambda: evaluate_log_likelihood(model, x, k, progress=False, **kwargs),
        points * k,
        common.is_eval_flops(points, k),
    )


def vaelab_workloads(quick: bool, points: int | None = None) -> list[Workload]:
    train, test = common.mnist_static()
    elbo, model = vaelab_train("elbo", 1, train, quick)
    iwae, _ = vaelab_train("iwae", 5, train, quick)
    for _ in range(elbo.warmup):  # move the evaluated model off its initialisation
        elbo.fn()
    return [elbo, iwae, vaelab_is(model, test, points or (20 if quick else 200))]


def measure(workloads: list[Workload], repeats: int) -> list[Result]:
    for w in workloads:
        for _ in range(w.warmup):
            w.fn()
    timings = common.interleaved([w.fn for w in workloads], repeats, [w.inner for w in workloads])
    return [Result.of(w, t) for w, t in zip(workloads, timings, strict=True)]


class Peak:
    """The fp32 matmul peak, measured at the start and again at the end of a run; the higher counts (other
    processes on the machine can only lower a measurement)."""

    def __init__(self, quick: bool) -> None:
        self.sizes = (1024, 2048) if quick else (1024, 2048, 3072, 4096)
        self.values: list[tuple[float, int]] = []

    def measure(self) -> float:
        self.values.append(common.matmul_peak(self.sizes))
        return self.value

    @property
    def value(self) -> float:
        return max(v for v, _ in self.values)

    def describe(self) -> str:
        each = ", ".join(f"{v:.1f} (n = {n})" for v, n in self.values)
        return (
            f"fp32 matmul peak: {self.value:.1f} GFLOP/s (best square sgemm, {torch.get_num_threads()} threads; "
            f"measurements: {each})"
        )


def result_rows(results: list[Result], peak: float) -> list[list[object]]:
    return [
        [
            r.name,
            f"{r.rate:,.0f} {r.unit}",
            f"{r.best:,.0f}",
            r.gflops,
            f"{r.gflops / peak:.0%}",
            f"{r.gflops / peak * r.best / r.rate:.0%}",
            f"{TARGETS[r.kind]:.0%}",
            f"{r.spread:.0%}",
        ]
        for r in results
    ]


RESULT_HEADER = ["workload", "rate (median)", "best", "GFLOP/s", "of peak", "best of peak", "target", "spread"]


def load_warning() -> None:
    load = common.load_avg_1min()
    if load > 0.5:
        print(
            f"note: the 1-minute load average is {load:.2f}: other processes share the cores and the figures "
            "(the matmul peak included) will be low and noisy"
        )


def main(argv: list[str] | None = None) -> None:
    args = common.parse_args(__doc__.split("\n\n")[0], points=200, repeats=7, argv=argv)
    print(f"machine: {common.machine_line()}")
    load_warning()
    peak = Peak(args.quick)
    peak.measure()
    results = measure(vaelab_workloads(args.quick, args.points), args.repeats or (3 if args.quick else 7))
    peak.measure()
    print(peak.describe() + "\n")
    print(common.table(result_rows(results, peak.value), RESULT_HEADER))
    print(f"\nload average after: {common.load_avg()}")


if __name__ == "__main__":
    main()
