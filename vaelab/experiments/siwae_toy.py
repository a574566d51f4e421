"""SIWAE's toy experiment (Morningstar et al., sec. 4.1 and app. C.1): SELBO vs SIWAE vs the score-function
estimator fitting a 4-component mixture q(z | x) to the four-mode posterior of z ~ N(0, I), x ~ N(|z|, s^2 I).

    python -m vaelab.experiments.siwae_toy configs/siwae/toy_abs.yaml --budget quick [--out DIR]

Every estimator starts from the same weights and sees the same batches (the config's seed fixes both; only
`objective` differs). Estimators (`--methods`, default the paper's three): siwae (T = 10 per component),
selbo (T = 100 per component: the paper's "100 samples", read as T like its "10 importance samples" for
SIWAE), score_function (100 ancestral draws), and stl_siwae / stl_selbo (app. C.1, Fig. C.2-C.3).

Measured, per estimator: the final model's evidence by a stratified SIWAE estimate with `eval.is_samples`
draws per point (the paper: 10^6) on `eval.split` (the 1,000 training points), next to the exact log p(x);
the gradient variance (see `gradient_variance`) and a 1,000-draw SIWAE evidence every `train.validate_every`
epochs. The paper's gradient variances (1.16, 0.48, 261.4) are printed beside ours but are not comparable: its text
(sec. 4.1, "average elementwise variance", "empirical variance", "while training") does not say over what the
variance is taken (Monte Carlo draws at fixed weights and batch, as here, or successive training steps, which adds
the minibatch noise and the drift of the weights), for which loss scaling (a sum instead of a mean over the batch
of 32 multiplies it by 32^2; over SELBO's 100 draws, by 100^2), or for which parameters; `NOT_COMPARABLE` is the
note the table carries.
The final weights are used (not the best-validation ones: the estimators' validation values are
different quantities). Writes into DIR (default runs/<config name>-toy): one run directory per estimator
(config, metrics.jsonl with `grad_variance` and `siwae_evidence` columns, checkpoints, eval-<split>.json),
`results.json`, `results.md`, `posterior.png` (Figure 2: at x = (1, 1), draws from q and from the implicit
importance-weighted posterior with 40 proposals, over the exact posterior's contours), `gradient_variance.png`
and `evidence.png` (Figure C.1, right).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
import yaml
from torch import Tensor

from vaelab.app import runs
from vaelab.config import Config, load_config
from vaelab.data.toy_abs import NOISE_VARS, exact_log_posterior
from vaelab.errors import ConfigError, UserError
from vaelab.evaluation.paired import against_data_density
from vaelab.evaluation.stratified import evaluate_stratified_log_likelihood, implicit_posterior_sample
from vaelab.stats import mean_se
from vaelab.train.trainer import Trainer, fit_with_provenance
from vaelab.viz.curves import save_curves
from vaelab.viz.posterior2d import save_posterior_panels

METHODS: dict[str, dict] = {
    "siwae": {"type": "siwae", "options": {"samples": 10}},
    "selbo": {"type": "selbo", "options": {"samples": 100}},
    "score_function": {"type": "score_function", "options": {"samples": 100}},
    "stl_siwae": {"type": "stl_siwae", "options": {"samples": 10}},
    "stl_selbo": {"type": "stl_selbo", "options": {"samples": 100}},
}
PAPER = {"siwae": -1.505, "selbo": -2.024, "score_function": -2.038, "stl_siwae": -1.505, "stl_selbo": -2.026}
PAPER_GRAD_VARIANCE = {"siwae": 1.16, "selbo": 0.48, "score_function": 261.4}
NOT_COMPARABLE = (
    "The paper's gradient variances are not comparable with ours: its text does not say over what the variance is "
    "taken (ours: Monte Carlo draws at fixed weights and a fixed batch of 32, gradient of the batch-mean loss with "
    "respect to q's parameters, averaged over entries and over the probes), nor the loss scaling or the parameters. "
    "Only the ordering (score function >> SIWAE > SELBO) can be compared."
)
PROBE_BATCH, PROBE_REPLICATES, PROBE_EVIDENCE_SAMPLES = 32, 32, 1000
POINT = (1.0, 1.0)
IW_PROPOSALS = 40  # the implicit posterior of SIWAE's training bound: T = 10 draws from each of K = 4 components


def encoder_parameters(model) -> list[Tensor]:
    """The parameters of q(z | x): encoder body and posterior head ("the gradients to the posterior")."""
    return [p for p in (*model.encoder.parameters(), *model.posterior_family.parameters()) if p.requires_grad]


def gradient_variance(model, objective, x, replicates: int = PROBE_REPLICATES) -> float:
    """Average elementwise variance of the gradient estimator (our reading of SIWAE sec. 4.1's "average elementwise
    variance", which the paper does not define further: not comparable with its numbers, see `NOT_COMPARABLE`):
    `replicates` independent estimates of the gradient of the batch loss -mean_b objective(x_b) with respect to
    q's parameters, at the current weights and fixed batch `x` `[B, ...]`; the unbiased variance over the
    replicates of every gradient entry, averaged over entries. The replicates are one batched forward pass
    over `x` repeated and one backward pass with `is_grads_batched` (each replicate's loss depends only on its
    own copy of the batch)."""
    params = encoder_parameters(model)
    B = x.shape[0]
    values = objective(model, x[torch.arange(B).repeat(replicates)]).reshape(replicates, B).mean(1)
    eye = torch.eye(replicates, dtype=values.dtype, device=values.device)
    grads = torch.autograd.grad(-values, params, grad_outputs=eye, is_grads_batched=True)
    flat = torch.cat([g.reshape(replicates, -1) for g in grads], 1)
    return float(flat.var(0, unbiased=True).mean())


class ProbedTrainer(Trainer):
    """The trainer, plus after the first epoch and every `probe_every` epochs: the gradient variance on a fixed
    batch and a `PROBE_EVIDENCE_SAMPLES`-draw SIWAE evidence on `evidence_x`, logged as `grad_variance` and
    `siwae_evidence` in metrics.jsonl. The probes run on a forked RNG, so training draws the same noise as
    without them."""

    def __init__(self, *args, probe_every: int, probe_x, evidence_x, replicates: int = PROBE_REPLICATES, **kwargs):
        super().__init__(*args, **kwargs)
        self.probe_every, self.probe_x, self.evidence_x = probe_every, probe_x, evidence_x
        self.replicates = replicates

    def train_epoch(self, epoch: int) -> dict:
        row = super().train_epoch(epoch)
        if epoch == 0 or (epoch + 1) % self.probe_every == 0:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.cfg.seed + 7919 * (epoch + 1))
                x = self.probe_x.to(self.device)
                row["grad_variance"] = gradient_variance(self.model, self.objective, x, self.replicates)
                est = evaluate_stratified_log_likelihood(
                    self.model, self.evidence_x, PROBE_EVIDENCE_SAMPLES, self.cfg.eval.batch_size, progress=False
                )
                row["siwae_evidence"] = float(est.log_likelihood.mean())
        return row


def method_config(config: str | Path, budget: str | None, method: str, overrides: list[str] | None = None) -> Config:
    if method not in METHODS:
        raise ConfigError(f"unknown toy estimator {method!r}; choose from {', '.join(METHODS)}")
    objective = yaml.safe_dump(METHODS[method], default_flow_style=True).strip()
    cfg = load_config(config, [f"objective={objective}", *(overrides or [])], budget)
    if cfg.data.name not in NOISE_VARS:
        raise ConfigError(f"the toy experiment needs dataset toy_abs or toy_abs_narrow, not {cfg.data.name!r}")
    sigma = cfg.model.likelihood.get("sigma")
    if sigma is None or not math.isclose(sigma**2, NOISE_VARS[cfg.data.name], rel_tol=1e-6):
        raise ConfigError(
            f"model.likelihood.sigma must be sqrt({NOISE_VARS[cfg.data.name]}) for dataset {cfg.data.name}, the "
            f"known noise of the data, not {sigma}"
        )
    cfg.name = f"{cfg.name}-{method}"
    return cfg


def train_method(cfg: Config, run_dir: Path, overwrite: bool = False, replicates: int = PROBE_REPLICATES) -> runs.Run:
    """Train one estimator into `run_dir` with the probes; returns the run with its final weights."""
    run_dir = runs.new_run_dir(cfg, run_dir, overwrite)
    (run_dir / "config.yaml").write_text(cfg.to_yaml())
    run = runs.build_run(cfg, run_dir)
    runs.check_data(run.model, run.dataset)
    data = run.dataset.split(cfg.eval.split)
    trainer = ProbedTrainer(
        cfg,
        run_dir,
        run.model,
        run.dataset,
        run.device,
        probe_every=cfg.train.validate_every,
        probe_x=run.dataset.split("train")[:PROBE_BATCH],
        evidence_x=data[: cfg.eval.subset] if cfg.eval.subset else data,
        replicates=replicates,
    )
    fit_with_provenance(trainer)  # provenance.json: command, commit, machine, threads, wall time
    run.model.eval()
    return run


def evaluate_method(run: runs.Run, progress: bool = True) -> dict:
    """Final SIWAE evidence (eval.is_samples draws per point) and the exact log p(x) (the dataset's density) on
    eval.split, with their paired gap (`against_data_density`; a NaN evidence raises `DataError`); writes
    eval-<split>.json."""
    e, name = run.cfg.eval, run.cfg.data.name
    x = run.dataset.split(e.split)
    x = x[: e.subset] if e.subset else x
    torch.manual_seed(run.cfg.seed + 1)
    est = evaluate_stratified_log_likelihood(run.model, x, e.is_samples, e.batch_size, e.max_elements, progress)
    vs_data = against_data_density(run.dataset.log_density(x.double()), est.log_likelihood)  # raises on a NaN
    evidence, evidence_se = mean_se(est.log_likelihood.double())  # float64, as the paired gap
    with torch.no_grad():
        log_alpha = run.model.posterior(x.to(run.device)).log_weights
        used = torch.exp(-(log_alpha.exp() * log_alpha).sum(-1)).mean()  # effective number of components
    rows = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    probes = [r for r in rows if "grad_variance" in r]
    n = x.shape[0]
    result = {
        "split": e.split,
        "dataset": name,
        "n": n,
        "siwae_samples": e.is_samples,
        "siwae_log_likelihood": evidence,
        "siwae_log_likelihood_se": evidence_se,
        "selbo": float(est.elbo.mean()),
        "exact_log_likelihood": vs_data["data_log_likelihood"],
        "gap_to_exact": vs_data["gap_to_data"],
        "gap_to_exact_se": vs_data["gap_to_data_se"],
        "effective_components": float(used),
        "grad_variance_mean": sum(r["grad_variance"] for r in probes) / max(len(probes), 1),
        "grad_variance_last": probes[-1]["grad_variance"] if probes else math.nan,
        "steps_per_s": sum(r["steps_per_s"] for r in rows) / max(len(rows), 1),
        "epochs": rows[-1]["epoch"] if rows else 0,
    }
    (run.path / f"eval-{e.split}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def run_toy(
    config: str | Path,
    budget: str | None = None,
    out: str | Path | None = None,
    methods: list[str] | None = None,
    overrides: list[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    replicates: int = PROBE_REPLICATES,
) -> dict[str, dict]:
    """Train and evaluate every estimator in `methods`, then write the tables and figures into `out`."""
    methods = methods or ["siwae", "selbo", "score_function"]
    cfgs = {m: method_config(config, budget, m, overrides) for m in methods}
    base = next(iter(cfgs.values()))
    out = Path(out) if out else Path("runs") / f"{base.name.rsplit('-', 1)[0]}-toy"
    out.mkdir(parents=True, exist_ok=True)
    results, trained = {}, {}
    for m, cfg in cfgs.items():
        cfg.train.progress = progress
        print(f"[{m}] training {cfg.train.epochs} epochs ({METHODS[m]})", file=sys.stderr)
        trained[m] = train_method(cfg, out / m, overwrite, replicates)
        results[m] = evaluate_method(trained[m], progress)
        r = results[m]
        print(
            f"[{m}] SIWAE evidence {r['siwae_log_likelihood']:.4f} +- {r['siwae_log_likelihood_se']:.4f} "
            f"(exact {r['exact_log_likelihood']:.4f}), gradient variance {r['grad_variance_mean']:.4g}",
            file=sys.stderr,
        )
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(results_table(results, base))
    write_figures(trained, out, base)
    return results


def results_table(results: dict[str, dict], cfg: Config) -> str:
    any_r = next(iter(results.values()))
    lines = [
        f"SIWAE toy (sec. 4.1), dataset {cfg.data.name}, {any_r['epochs']} epochs; evidence: stratified SIWAE with "
        f"{any_r['siwae_samples']:,} draws per point on the {any_r['n']} {any_r['split']} points (mean +- se); "
        f"exact E log p(x) = {any_r['exact_log_likelihood']:.4f}.",
        "",
        "| estimator | SIWAE evidence | gap to exact | SELBO (same draws) | effective components | "
        "grad. variance (mean over probes) | paper evidence | paper grad. variance (not comparable) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m, r in results.items():
        lines.append(
            f"| {m} | {r['siwae_log_likelihood']:.4f} +- {r['siwae_log_likelihood_se']:.4f} | "
            f"{r['gap_to_exact']:.4f} +- {r['gap_to_exact_se']:.4f} | {r['selbo']:.4f} | "
            f"{r['effective_components']:.2f} | {r['grad_variance_mean']:.4g} | {PAPER.get(m, '-')} | "
            f"{PAPER_GRAD_VARIANCE.get(m, '-')} |"
        )
    lines += ["", NOT_COMPARABLE]
    return "\n".join(lines) + "\n"


def write_figures(trained: dict[str, runs.Run], out: Path, cfg: Config) -> list[Path]:
    noise = NOISE_VARS[cfg.data.name]
    point = torch.tensor([POINT])
    panels: dict[str, dict[str, Tensor]] = {"q(z|x)": {}, f"q_IW, {IW_PROPOSALS} proposals": {}}
    torch.manual_seed(cfg.seed + 2)
    for m, run in trained.items():
        x = point.to(run.device)
        panels["q(z|x)"][m] = run.model.posterior(x).sample((2000,))[:, 0]
        panels[f"q_IW, {IW_PROPOSALS} proposals"][m] = implicit_posterior_sample(run.model, x, 2000, IW_PROPOSALS)[:, 0]
    paths = [
        save_posterior_panels(
            panels,
            out / "posterior.png",
            log_density=lambda z: exact_log_posterior(point.double(), z, noise),
            title=f"x = {POINT}: draws from q and from its importance-weighted version, over the exact posterior",
        )
    ]
    series_var, series_ev = {}, {}
    for m, run in trained.items():
        rows = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
        probes = [r for r in rows if "grad_variance" in r]
        series_var[m] = ([r["epoch"] for r in probes], [r["grad_variance"] for r in probes])
        series_ev[m] = ([r["epoch"] for r in probes], [r["siwae_evidence"] for r in probes])
    dataset = trained[next(iter(trained))].dataset
    exact = float(dataset.log_density(dataset.split(cfg.eval.split).double()).mean())
    paths.append(
        save_curves(series_var, out / "gradient_variance.png", "epoch", "mean elementwise gradient variance", logy=True)
    )
    paths.append(
        save_curves(
            series_ev,
            out / "evidence.png",
            "epoch",
            f"SIWAE evidence ({PROBE_EVIDENCE_SAMPLES} draws)",
            hlines={"exact log p(x)": exact},
        )
    )
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m vaelab.experiments.siwae_toy",
        description="SIWAE sec. 4.1 toy: SELBO vs SIWAE vs score function (same initialisation and batches).",
    )
    p.add_argument("config", help="configs/siwae/toy_abs.yaml or configs/siwae/toy_abs_narrow.yaml")
    p.add_argument("--budget", help="quick (a few minutes on a CPU) or full (the paper's 1,000 epochs)")
    p.add_argument("--out", help="output directory (default: runs/<config name>-toy)")
    p.add_argument(
        "--methods", default="siwae,selbo,score_function", help=f"comma-separated, from: {', '.join(METHODS)}"
    )
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--overwrite", action="store_true", help="replace existing run directories in --out")
    p.add_argument(
        "--replicates",
        type=int,
        default=PROBE_REPLICATES,
        help=f"gradient estimates per variance probe (default {PROBE_REPLICATES})",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars and progress lines (results stay)")
    args = p.parse_args(argv)
    try:
        results = run_toy(
            args.config,
            args.budget,
            args.out,
            [m.strip() for m in args.methods.split(",") if m.strip()],
            args.overrides,
            args.overwrite,
            not args.no_progress,
            args.replicates,
        )
    except UserError as err:
        print(f"siwae_toy: error: {err}", file=sys.stderr)
        return 2
    cfg = method_config(args.config, args.budget, next(iter(results)), args.overrides)
    print(results_table(results, cfg), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
