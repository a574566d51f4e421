"""The bench_core workloads run with pythae 0.1.2 (VAE and IWAE) and with vaelab, timed in alternation.

    pip install -r benchmarks/requirements.txt     # see that file: pythae without its dependency pins
    python benchmarks/bench_pythae.py [--quick]

Both libraries get the same network: encoder 784-300-300 (ReLU) with a linear head 300 -> 2 * 40 giving
the Gaussian mean and log-variance, decoder 40-300-300-784 (ReLU); the same batches of static binarized
MNIST; the same torch Adam (pythae's trainer builds `torch.optim.Adam(params, lr)`, which we reproduce).

* training: pythae's own step (`BaseTrainer.train_step`/`_optimizers_step`): `model({"data": x})`,
  `zero_grad`, `loss.backward()`, `optimizer.step()`, `loss.item()`. vaelab: `Trainer._step`.
* IS evaluation: pythae's `VAE.get_nll(data, n_samples=5000, batch_size=b)`, which loops over data points
  and, per point, over `5000 / b` chunks of `b` copies of the point (running the encoder on every copy).
  The fastest `b` (swept below, with and without `torch.no_grad()`) is used for the comparison.
  vaelab: `evaluate_log_likelihood` at k = 5000.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_core  # noqa: E402
import common  # noqa: E402
from bench_core import Workload  # noqa: E402


def pythae_model(kind: str = "vae", samples: int = 5, seed: int = 0, components: int = 500):
    """A pythae VAE, IWAE (`number_samples=samples`) or VAMP (`number_components=components`, no KL warm-up)
    with the benchmark architecture, BCE likelihood."""
    from pythae.models import IWAE, VAE, VAMP, IWAEConfig, VAEConfig, VAMPConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    h1, h2 = common.HIDDEN

    class Encoder(BaseEncoder):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(common.DATA_DIM, h1), nn.ReLU(), nn.Linear(h1, h2), nn.ReLU())
            self.head = nn.Linear(h2, 2 * common.LATENT)

        def forward(self, x):
            mu, log_var = self.head(self.body(x.reshape(x.shape[0], -1))).chunk(2, dim=-1)
            return ModelOutput(embedding=mu, log_covariance=log_var)

    class Decoder(BaseDecoder):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Linear(common.LATENT, h2), nn.ReLU(), nn.Linear(h2, h1), nn.ReLU(), nn.Linear(h1, common.DATA_DIM)
            )

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.body(z)))  # pythae's BCE takes probabilities

    torch.manual_seed(seed)
    shape = (1, 28, 28)
    if kind == "vae":
        cfg = VAEConfig(input_dim=shape, latent_dim=common.LATENT, reconstruction_loss="bce")
        return VAE(cfg, encoder=Encoder(), decoder=Decoder())
    if kind == "vamp":
        cfg = VAMPConfig(
            input_dim=shape,
            latent_dim=common.LATENT,
            reconstruction_loss="bce",
            number_components=components,
            linear_scheduling_steps=0,
        )
        return VAMP(cfg, encoder=Encoder(), decoder=Decoder())
    cfg = IWAEConfig(input_dim=shape, latent_dim=common.LATENT, reconstruction_loss="bce", number_samples=samples)
    return IWAE(cfg, encoder=Encoder(), decoder=Decoder())


def pythae_train(kind: str, samples: int, train: torch.Tensor, quick: bool, fused_adam: bool = False):
    model = pythae_model(kind, samples)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, **({"fused": True} if fused_adam else {}))
    nxt = bench_core.cycle(bench_core.train_batches(train))

    def step() -> float:  # pythae's BaseTrainer.train_step body for one batch
        out = model({"data": nxt()})
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        return out.loss.item()

    name = bench_core.train_name("elbo" if kind == "vae" else "iwae", samples)
    w = Workload(
        name + (" [fused Adam]" if fused_adam else ""),
        "train",
        "steps/s",
        step,
        1,
        common.train_step_flops(common.BATCH, samples if kind == "iwae" else 1),
        inner=20 if quick else 100,
        warmup=10 if quick else 200,
    )
    return w, model


def pythae_is(model, test: torch.Tensor, points: int, batch_size: int, no_grad: bool) -> Workload:
    model.eval()
    x, k = test[:points], common.IS_SAMPLES

    def fn():
        if no_grad:
            with torch.no_grad():
                return model.get_nll(x, n_samples=k, batch_size=batch_size)
        return model.get_nll(x, n_samples=k, batch_size=batch_size)

    return Workload(
        f"IS eval k={k} ({points} pts)", "is", "pairs/s", fn, points * k, common.is_eval_flops(points, k), warmup=0
    )


def best_get_nll_setting(model, test: torch.Tensor, quick: bool) -> tuple[int, bool, dict[tuple[int, bool], float]]:
    """pythae's fastest `get_nll` batch size (a divisor of 5000) and grad mode, timed on a few points, and the
    rate (pairs/s) of every setting tried, keyed by (batch size, no_grad)."""
    sizes = (500, 1000, 5000) if quick else (100, 500, 1000, 2500, 5000)
    results = []
    for no_grad in (False, True):
        for b in sizes:
            w = pythae_is(model, test, 2, b, no_grad)
            w.fn()  # warm-up
            t = common.time_it(w.fn, repeats=2 if quick else 3, warmup=0)
            results.append((w.units / t.median, b, no_grad))
            print(f"  pythae get_nll batch_size={b:5d} no_grad={no_grad!s:5}: {w.units / t.median:9,.0f} pairs/s")
    _, b, no_grad = max(results)
    return b, no_grad, {(b_, ng): rate for rate, b_, ng in results}


RATIO_HEADER = ["workload", "vaelab (median)", "pythae (median)", "vaelab/pythae", "(best/best)", "vaelab", "pythae"]


def ratio_rows(
    pairs: list[tuple[Workload, Workload]], results: dict[Workload, bench_core.Result], peak: float
) -> list[list[object]]:
    """One row per (vaelab, pythae) pair: both median rates, their ratio (medians, and best repeats), and
    each rate's matmul FLOP/s as a fraction of `peak`."""
    rows = []
    for v, pw in pairs:
        rv, rp = results[v], results[pw]
        rows.append(
            [
                pw.name if "fused" in pw.name else v.name,
                f"{rv.rate:,.0f} {rv.unit}",
                f"{rp.rate:,.0f} {rp.unit}",
                f"{rv.rate / rp.rate:.2f}x",
                f"{rv.best / rp.best:.2f}x",
                f"{rv.gflops / peak:.0%}",
                f"{rp.gflops / peak:.0%}",
            ]
        )
    return rows


def start(doc: str, argv: list[str] | None):
    """What both pythae comparisons do first: parse the options, print the machine, measure the matmul peak and
    load the data. Returns (args, peak, train, test, IS points)."""
    args = common.parse_args(doc.split("\n\n")[0], points=40, repeats=5, argv=argv)
    from importlib.metadata import version

    print(f"machine: {common.machine_line()}; pythae {version('pythae')}")
    bench_core.load_warning()
    peak = bench_core.Peak(args.quick)
    peak.measure()
    train, test = common.mnist_static()
    return args, peak, train, test, args.points or (4 if args.quick else 40)


def main(argv: list[str] | None = None) -> None:
    args, peak, train, test, points = start(__doc__, argv)

    print("choosing pythae's best get_nll setting:")
    b, no_grad, _ = best_get_nll_setting(pythae_model("vae"), test, args.quick)
    print(f"  -> batch_size={b}, no_grad={no_grad}\n")

    v_elbo, v_model = bench_core.vaelab_train("elbo", 1, train, args.quick)
    v_iwae, _ = bench_core.vaelab_train("iwae", 5, train, args.quick)
    p_elbo, p_model = pythae_train("vae", 1, train, args.quick)
    p_iwae, _ = pythae_train("iwae", 5, train, args.quick)
    p_elbo_fused, _ = pythae_train("vae", 1, train, args.quick, fused_adam=True)
    p_iwae_fused, _ = pythae_train("iwae", 5, train, args.quick, fused_adam=True)
    for w in (v_elbo, p_elbo):  # train both models a little before evaluating them
        for _ in range(w.warmup):
            w.fn()
    v_is = bench_core.vaelab_is(v_model, test, points)
    p_is = pythae_is(p_model, test, points, b, no_grad)
    pairs = [(v_elbo, p_elbo), (v_iwae, p_iwae), (v_elbo, p_elbo_fused), (v_iwae, p_iwae_fused), (v_is, p_is)]

    workloads = list(dict.fromkeys(w for pair in pairs for w in pair))  # unique, in order
    results = dict(zip(workloads, bench_core.measure(workloads, args.repeats or (3 if args.quick else 5)), strict=True))
    peak.measure()
    print(peak.describe() + "\n")
    print("rates, their ratio, and each as a fraction of the matmul peak:")
    print(common.table(ratio_rows(pairs, results, peak.value), RATIO_HEADER))
    print(
        "\nrows marked [fused Adam] give pythae torch's fused Adam (not its trainer's default) to separate the "
        "optimizer from the rest.\nIS fractions count useful FLOPs only (one encoder pass per data point); "
        "pythae's get_nll also runs the encoder on every copy of each point."
    )
    print(f"load average after: {common.load_avg()}")


if __name__ == "__main__":
    main()
