"""CP-VAE: the exact-sum and Gumbel-Softmax estimators of the bound's reconstruction term, compared on one model.

For a trained run (RUN_DIR) or a freshly initialised CP-VAE from a config, on one fixed batch, each estimator is
evaluated R times; reported per estimator: the mean and spread of the bound estimate (at the estimator's own
temperature, i.e. the training objective), its cost (decoder passes per data point), and the gradient of the loss
with respect to the parameters: total variance (the sum of per-coordinate variances over the R draws), and the
squared distance of its mean from the mean exact gradient next to the value Monte Carlo error alone would give
(the exact estimator is unbiased: a distance well above that is the Gumbel relaxation's bias). The exact estimator
uses 1 z per category (K decoder passes); Gumbel is run with 1 sample and with K samples (equal cost).

    python benchmarks/bench_cpvae_estimators.py RUN_DIR [--repeats 100] [--batch 100]
    python benchmarks/bench_cpvae_estimators.py --config configs/cpvae/mnist.yaml
"""

from __future__ import annotations

import argparse
import time

import torch

from vaelab import recording
from vaelab.config import load_config
from vaelab.models.cpvae import conditional_pair
from vaelab.objectives.cpvae import CPVAEBound


def gradient_draws(model, x, objective: CPVAEBound, repeats: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """`repeats` draws of (bound [B] mean, flattened gradient of the mean loss) and seconds per draw."""
    params = [p for p in model.parameters() if p.requires_grad]
    values, grads = [], []
    start = time.perf_counter()
    for _ in range(repeats):
        bound = objective(model, x)
        g = torch.autograd.grad(-bound.mean(), params, allow_unused=True)
        flat = [(gi if gi is not None else torch.zeros_like(p)).flatten() for gi, p in zip(g, params, strict=True)]
        grads.append(torch.cat(flat))
        values.append(bound.detach().mean())
    return torch.stack(values), torch.stack(grads), (time.perf_counter() - start) / repeats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", nargs="?", help="a trained CP-VAE run (default: a fresh model from --config)")
    p.add_argument("--config", default="configs/cpvae/mnist.yaml", help="config for a fresh model (no RUN_DIR)")
    p.add_argument("--repeats", type=int, default=100, help="draws per estimator (default 100)")
    p.add_argument("--batch", type=int, default=100, help="test points in the fixed batch (default 100)")
    p.add_argument("--temperatures", default="1.0,0.5,0.1", help="Gumbel temperatures (comma-separated)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.run_dir:
        run = recording.load_run(args.run_dir, device="cpu")
    else:
        cfg = load_config(args.config)
        run = recording.build_run(cfg, None, "cpu")
    model = run.model
    family, _ = conditional_pair(model, "this benchmark")
    k = family.categories
    x = run.dataset.split("test")[: args.batch]
    torch.manual_seed(args.seed)
    settings = [("exact", CPVAEBound("exact"), k)]
    for t in (float(s) for s in args.temperatures.split(",")):
        settings.append((f"gumbel tau={t:g} S=1", CPVAEBound("gumbel", temperature=t, min_temperature=t), 1))
        settings.append(
            (f"gumbel tau={t:g} S={k}", CPVAEBound("gumbel", samples=k, temperature=t, min_temperature=t), k)
        )
    results = {}
    for name, objective, cost in settings:
        values, grads, seconds = gradient_draws(model, x, objective, args.repeats)
        results[name] = (values, grads, cost, seconds)
    exact_grads = results["exact"][1]
    exact_mean, exact_var = exact_grads.mean(0), float(exact_grads.var(0).sum())
    print(f"K = {k}, batch {x.shape[0]}, {args.repeats} draws each; bound = mean over the batch (nats)")
    head = ("estimator", "decoder passes", "s/draw", "bound", "sd", "grad var", "|bias|^2", "noise")
    print(
        f"{head[0]:<22} {head[1]:>14} {head[2]:>7} {head[3]:>9} {head[4]:>7} {head[5]:>10} {head[6]:>10} {head[7]:>9}"
    )
    for name, (values, grads, cost, seconds) in results.items():
        var = float(grads.var(0).sum())
        if name == "exact":
            bias2, noise = "-", "-"
        else:  # |mean gradient - mean exact gradient|^2 and what Monte Carlo error alone would give, in expectation
            bias2 = f"{float((grads.mean(0) - exact_mean).square().sum()):.4g}"
            noise = f"{(var + exact_var) / args.repeats:.4g}"
        print(
            f"{name:<22} {cost:>14} {seconds:>7.3f} {float(values.mean()):>9.3f} {float(values.std()):>7.3f} "
            f"{var:>10.4g} {bias2:>10} {noise:>9}"
        )
    print("grad var: summed over coordinates, of the gradient of the batch-mean loss; |bias|^2 well above 'noise'")
    print("means the estimator's expected gradient differs from the exact one (the Gumbel relaxation's bias)")


if __name__ == "__main__":
    main()
