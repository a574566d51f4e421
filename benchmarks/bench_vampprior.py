"""vaelab's VampPrior (K = 500 pseudo-inputs) against pythae 0.1.2's VAMP, timed in alternation.

    pip install -r benchmarks/requirements.txt     # see that file: pythae without its dependency pins
    python benchmarks/bench_vampprior.py [--quick] [--threads 1 --cpu-clock]

Both libraries get the bench_pythae network (encoder 784-300-300 ReLU + linear Gaussian head 300 -> 2 * 40,
decoder 40-300-300-784 ReLU, Bernoulli likelihood), a VampPrior with K = 500 learned pseudo-inputs and
uniform weights (Tomczak & Welling 2018, eq. 9), batch 100, static binarized MNIST, torch Adam:

* training: vaelab's `Trainer._step` with the ELBO (closed-form entropy of q, one-sample Monte Carlo
  log p(z)) against pythae's own step (`model({"data": x})`, `zero_grad`, `backward`, `Adam.step`,
  `loss.item()`; one-sample log q - log p), with its trainer's default Adam and, as a separate row, fused Adam.
  pythae parameterises the pseudo-inputs as `hardtanh(Linear(K, 784)(I_K))`, the paper code's form: one
  more [K, K] x [K, 784] matmul per step (forward and weight gradient); vaelab stores u directly.
* IS evaluation, k = 5000: `evaluate_log_likelihood` against `VAMP.get_nll` at its fastest batch size and
  grad mode (swept as in bench_pythae), in (x, z)-pairs/s; also the ratio to `get_nll`'s default
  `batch_size=100`, from the sweep.
* HVAE + VampPrior (vaelab only; pythae has no HVAE): its training step and IS evaluation, with ratios to
  pythae's single-level VAMP. The architectures differ, so that ratio is not like for like.

FLOPs (matrix products only, see common.py) count the useful work: one encoder pass over the K
pseudo-inputs per training step (and once per IS evaluation), and the two [N, 40] x [40, K] products of the
mixture density per N latents; not pythae's pseudo-input layer nor its per-copy encoder passes in `get_nll`.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_core  # noqa: E402
import bench_pythae  # noqa: E402
import common  # noqa: E402
from bench_core import Workload  # noqa: E402

COMPONENTS = 500
TARGETS = {"train": 2.0, "is": 20.0}  # vaelab / pythae (the targets)
VAMP_PRIOR = f"model.prior={{type: vampprior, components: {COMPONENTS}}}"


def mixture_flops(rows: int, components: int = COMPONENTS) -> int:
    """The two `[rows, D] x [D, K]` products of the diagonal-Gaussian mixture density."""
    return 2 * 2 * rows * common.LATENT * components


def vamp_train_flops(batch: int = common.BATCH, components: int = COMPONENTS) -> int:
    """Forward + backward (3x forward) of an ELBO step: encoder and decoder on the batch, the encoder on the
    K pseudo-inputs, the mixture density of the batch's latents."""
    forward = common.encoder_flops(batch) + common.decoder_flops(batch)
    return 3 * (forward + common.encoder_flops(components) + mixture_flops(batch, components))


def vamp_is_flops(points: int, samples: int = common.IS_SAMPLES, components: int = COMPONENTS) -> int:
    """IS evaluation: `common.is_eval_flops` plus one pseudo-input encoder pass and the mixture density of
    every (x, z) pair."""
    pairs = points * samples
    return common.is_eval_flops(points, samples) + common.encoder_flops(components) + mixture_flops(pairs, components)


def vaelab_vamp(train: torch.Tensor, test: torch.Tensor, points: int, quick: bool) -> tuple[Workload, Workload]:
    """vaelab's VAE + VampPrior: the training step and (on the model after its warm-up steps) IS evaluation."""
    w, model = bench_core.vaelab_train("elbo", 1, train, quick, overrides=[VAMP_PRIOR])
    w = dataclasses.replace(w, name=f"train VampPrior K={COMPONENTS}", flops=vamp_train_flops())
    for _ in range(w.warmup):  # move the evaluated model off its initialisation
        w.fn()
    is_w = bench_core.vaelab_is(model, test, points)
    return w, dataclasses.replace(is_w, flops=vamp_is_flops(points))


def pythae_vamp_train(train: torch.Tensor, quick: bool, fused_adam: bool) -> tuple[Workload, torch.nn.Module]:
    w, model = bench_pythae.pythae_train("vamp", 1, train, quick, fused_adam=fused_adam)
    name = f"train VampPrior K={COMPONENTS}" + (" [fused Adam]" if fused_adam else "")
    return dataclasses.replace(w, name=name, flops=vamp_train_flops()), model


# The VampPrior paper's two-level HVAE (sec. 4) with ReLU MLPs of 300 units in place of its gated ones:
# q(z2 | x) is the single-level encoder (784-300-300 + head), q(z1 | x, z2) = head([x -> 300, z2 -> 300] -> 300),
# p(z1 | z2) = head(z2 -> 300 -> 300), p(x | z1, z2) = Linear([z1 -> 300, z2 -> 300] -> 784); D1 = D2 = 40,
# VampPrior on z2.
_MLP300 = "{type: mlp, hidden: [300]}"
HVAE_OVERRIDES = [
    "model.type=hvae",
    VAMP_PRIOR,
    "model.decoder={type: linear}",
    f"model.options={{latent_dim2: {common.LATENT}, q_z1: {{x: {_MLP300}, z2: {_MLP300}, joint: {_MLP300}}}, "
    f"p_z1: {{type: mlp, hidden: [300, 300]}}, p_x: {{z1: {_MLP300}, z2: {_MLP300}}}}}",
]


def hvae_available() -> bool:
    """Whether this checkout has a `model.type: hvae` that builds (else the reason is printed)."""
    try:
        bench_core.build_trainer(overrides=HVAE_OVERRIDES)
        return True
    except Exception as e:  # noqa: BLE001  (any failure means: no HVAE row)
        print(f"no HVAE + VampPrior row: model.type hvae does not build here ({type(e).__name__}: {e})")
        return False


def counted_flops(fn) -> int:
    """Matrix-product FLOPs of one call of `fn`, counted by `torch.utils.flop_counter` (2 m n k per product)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def elbo_forward_flops(model: torch.nn.Module, train: torch.Tensor) -> int:
    """Counted matmul FLOPs of the forward pass of a training step (the ELBO at batch 100, model in train mode)."""
    from vaelab.objectives.bounds import ELBO

    model.train()
    return counted_flops(lambda: ELBO(1, analytic_kl=True)(model, train[: common.BATCH]))


def vaelab_hvae(train: torch.Tensor, test: torch.Tensor, points: int, quick: bool) -> tuple[Workload, Workload]:
    """HVAE + VampPrior: the training step and IS evaluation. FLOPs are counted by the FLOP counter (the
    training step as 3x its forward pass, the convention of common.py)."""
    w, model = bench_core.vaelab_train("elbo", 1, train, quick, overrides=HVAE_OVERRIDES)
    for _ in range(w.warmup):
        w.fn()
    flops = 3 * elbo_forward_flops(model, train)
    w = dataclasses.replace(w, name=f"train HVAE + VampPrior K={COMPONENTS}", flops=flops)
    is_w = bench_core.vaelab_is(model, test, points)
    return w, dataclasses.replace(is_w, name=f"HVAE {is_w.name}", flops=counted_flops(is_w.fn))


def main(argv: list[str] | None = None) -> None:
    args, peak, train, test, points = bench_pythae.start(__doc__, argv)

    print("choosing pythae's best VAMP get_nll setting:")
    b, no_grad, sweep = bench_pythae.best_get_nll_setting(bench_pythae.pythae_model("vamp"), test, args.quick)
    print(f"  -> batch_size={b}, no_grad={no_grad}\n")

    v_train, v_is = vaelab_vamp(train, test, points, args.quick)
    v_model = bench_core.build_trainer(overrides=[VAMP_PRIOR]).model
    print(
        f"FLOP count check (VampPrior, common.py convention vs torch.utils.flop_counter): training step forward "
        f"{v_train.flops / 3 / 1e6:.1f} vs {elbo_forward_flops(v_model, train) / 1e6:.1f} MFLOP; IS evaluation "
        f"{v_is.flops / 1e9:.2f} vs {counted_flops(v_is.fn) / 1e9:.2f} GFLOP"
    )
    p_train, p_model = pythae_vamp_train(train, args.quick, fused_adam=False)
    p_train_fused, _ = pythae_vamp_train(train, args.quick, fused_adam=True)
    for _ in range(p_train.warmup):  # train pythae's model a little before evaluating it
        p_train.fn()
    p_is = dataclasses.replace(bench_pythae.pythae_is(p_model, test, points, b, no_grad), flops=vamp_is_flops(points))
    pairs = [(v_train, p_train), (v_train, p_train_fused), (v_is, p_is)]
    if hvae_available():
        h_train, h_is = vaelab_hvae(train, test, points, args.quick)
        pairs += [(h_train, p_train), (h_train, p_train_fused), (h_is, p_is)]

    workloads = list(dict.fromkeys(w for pair in pairs for w in pair))  # unique, in order
    results = dict(zip(workloads, bench_core.measure(workloads, args.repeats or (3 if args.quick else 5)), strict=True))
    peak.measure()
    print(peak.describe() + "\n")
    rows = bench_pythae.ratio_rows(pairs, results, peak.value)
    for row, (v, pw) in zip(rows, pairs, strict=True):
        row[0] = v.name + (" (pythae: fused Adam)" if "fused" in pw.name else "")
        row.append("-" if "HVAE" in v.name else f"{TARGETS[v.kind]:.0f}x")
    print("rates, their ratio, and each as a fraction of the matmul peak (HVAE rows: pythae has no HVAE, the")
    print("ratio is to its single-level VAMP; the architectures differ):")
    print(common.table(rows, [*bench_pythae.RATIO_HEADER, "target"]))
    print(f"\nIS: pythae's get_nll at batch_size={b}, no_grad={no_grad} (its fastest setting in the sweep).")
    if (100, False) in sweep:  # get_nll's defaults: batch_size=100, gradients on
        default = sweep[(100, False)]
        print(
            f"pythae's get_nll with its defaults (batch_size=100, gradients on): {default:,.0f} pairs/s in the sweep "
            f"(2 points); vaelab's median IS rate is {results[v_is].rate / default:.1f}x that."
        )
    print("FLOP fractions count useful matmul FLOPs only (see the module docstring).")
    print(f"load average after: {common.load_avg()}")


if __name__ == "__main__":
    main()
