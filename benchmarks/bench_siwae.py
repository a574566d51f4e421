"""Training speed of SIWAE with a K = 10 mixture posterior and T = 10 draws per component against IWAE with
k = 100 draws from a diagonal Gaussian: the same encoder body, the same 100 decoder passes per data point.

    python benchmarks/bench_siwae.py            # ~2-4 min on 2 cores
    python benchmarks/bench_siwae.py --quick    # smoke run, noisier

Model: the benchmark MLP VAE of bench_core.py (784-300-300-40, ReLU, Bernoulli, N(0, I) prior, Adam, batch 100,
static binarized MNIST); the mixture's head predicts 10 x (1 + 40 + 40) numbers instead of 2 x 40. Each workload
is `Trainer._step` (forward, backward, finiteness check, Adam). Target (issue 4): SIWAE costs at most 1.2x IWAE.

The workloads are timed in alternation (repeat r of each, then repeat r + 1, ...), and the cost ratio is the
median over repeats of the per-repeat ratio, so a change in the machine's load (shared cores) hits both sides.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from bench_core import Workload, build_trainer, cycle, train_batches  # noqa: E402

K, T, IWAE_K = 10, 10, 100
TARGET = 1.2


def workloads(quick: bool) -> list[Workload]:
    train, _ = common.mnist_static()
    batches = train_batches(train)
    mixture = [f"model.posterior={{type: gaussian_mixture, components: {K}}}", f"objective.options={{samples: {T}}}"]
    specs = [
        (f"IWAE k={IWAE_K}, diagonal Gaussian", "iwae", IWAE_K, []),
        (f"SIWAE K={K} x T={T}, diagonal mixture", "siwae", T, mixture),
        (f"SELBO K={K} x T={T}, diagonal mixture", "selbo", T, mixture),
    ]
    out = []
    for name, objective, samples, overrides in specs:
        trainer = build_trainer(objective, samples, overrides=overrides)
        trainer.model.train()
        nxt = cycle(batches)
        out.append(
            Workload(
                name,
                "train",
                "steps/s",
                lambda trainer=trainer, nxt=nxt: trainer._step(nxt(), 1.0, 1.0),
                1,
                common.train_step_flops(common.BATCH, IWAE_K),
                inner=2 if quick else 5,
                warmup=3 if quick else 10,
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    args = common.parse_args(__doc__.splitlines()[0], points=0, repeats=9, argv=argv)
    repeats = args.repeats or (3 if args.quick else 9)
    if common.load_avg_1min() > 0.5:
        print(f"warning: load average {common.load_avg()}: other processes share the cores", file=sys.stderr)
    ws = workloads(args.quick)
    for w in ws:
        for _ in range(w.warmup):
            w.fn()
    timings = common.interleaved([w.fn for w in ws], repeats, [w.inner for w in ws])
    print(common.machine_line())
    rows = []
    for w, t in zip(ws, timings, strict=True):
        rows.append([w.name, 1 / t.median, 1 / t.best, w.flops / t.median / 1e9, t.spread])
    print(common.table(rows, ["workload", "steps/s (median)", "steps/s (best)", "GFLOP/s", "spread"]))
    base = timings[0].seconds
    for w, t in zip(ws[1:], timings[1:], strict=True):
        ratios = [a / b for a, b in zip(t.seconds, base, strict=True)]
        print(
            f"{w.name} / IWAE k={IWAE_K}: cost ratio {statistics.median(ratios):.3f} (median of {repeats} interleaved "
            f"repeats; range {min(ratios):.3f}-{max(ratios):.3f}; best/best {t.best / timings[0].best:.3f})"
            + (f"; target <= {TARGET}" if w.name.startswith("SIWAE") else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
