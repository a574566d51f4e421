"""The `vaelab` command line: train, evaluate, sample, datasets, gaps, sweep, report.

User errors (bad config, missing data, wrong run directory) print one line and exit with status 2;
a Ctrl-C prints how to resume and exits with 130.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vaelab.argtypes import nonnegative_int, positive_int
from vaelab.errors import TrainingDiverged, UserError

EPILOG = "Docs and examples: README.md. Every option can also be set in the YAML config."


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (`vaelab CMD: error: ...`), without the usage text."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, or auto (default: the config's, auto)")
    p.add_argument(
        "--threads",
        type=positive_int,
        metavar="N",
        help="CPU threads for torch (default: the config's 'threads', else $OMP_NUM_THREADS, else 1: more threads "
        "thrash when other jobs hold the cores; see README)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars (logs stay)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vaelab", description="Latent variable models with rich posteriors and priors.", epilog=EPILOG
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser(
        "train",
        help="train a model described by a YAML config",
        description="Train a model. With no CONFIG, runs the built-in default (a VAE on static binarized MNIST, "
        "quick budget), then evaluates it and writes sample and reconstruction grids.",
        epilog=EPILOG,
    )
    t.add_argument("config", nargs="?", help="YAML config file (default: the built-in quickstart config)")
    t.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=5 --set model.latent_dim=2 (repeatable)",
    )
    t.add_argument("--budget", help="a budget the config defines, e.g. quick (minutes on a CPU) or full (the paper's)")
    t.add_argument("--run-dir", help="where to write the run (default: runs/<name>-<timestamp>)")
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in --run-dir (only a vaelab run; it is moved aside to DIR.replaced-<timestamp>, "
        "not deleted)",
    )
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its latest checkpoint")
    t.add_argument("--no-eval", action="store_true", help="skip the final evaluation and pictures")
    t.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    _add_common(t)

    e = sub.add_parser(
        "evaluate",
        help="IS log-likelihood, ELBO and active units of a trained run",
        description="Estimate log p(x) by importance sampling (the IWAE bound with --samples per point), the ELBO "
        "and the number of active units on a split; writes RUN_DIR/eval-<split>.json. With --ais, estimate log p(x) "
        "by annealed importance sampling instead; writes RUN_DIR/eval-<split>-ais.json. With --bdmc, bound the error "
        "of such an AIS by BDMC on data simulated from the model; writes RUN_DIR/eval-bdmc.json. Printed errors are "
        "named: the Monte Carlo se (other draws; delta method for IS, trustworthy only at a healthy ESS) and the se "
        "over data (other data points).",
        epilog=EPILOG,
    )
    e.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by 'vaelab train'")
    e.add_argument("--split", default=None, help="train, valid or test (default: the config's eval.split)")
    e.add_argument("--samples", type=positive_int, help="importance samples per point (default: config, 5000)")
    e.add_argument("--subset", type=positive_int, help="evaluate only the first N examples of the split")
    e.add_argument("--batch-size", type=positive_int, help="data points per batch (default: config)")
    e.add_argument("--checkpoint", choices=["best", "last"], default="best", help="which weights (default: best)")
    e.add_argument(
        "--ais",
        nargs="+",
        metavar="PRESET|KEY=VALUE",
        help="estimate log p(x) by annealed importance sampling instead, writing eval-<split>-ais.json: a preset, "
        "aiwae (16 chains x 10000 temperatures x 10 leapfrog steps, acceptance 0.6; Ding & Freedman) or cremer "
        "(100 chains x 500 temperatures x 10 leapfrog steps; Cremer et al.), both from the prior, then key=value "
        "overrides of chains, temps, leapfrog, schedule (linear, sigmoidal, geometric), init, step_size, "
        "target_acceptance, adapt (data, chain, all, none), adapt_rate, jitter, pilot_chains, batch_size, "
        "replicates (R independent runs per point, annealed together: their spread is the Monte Carlo se; the delta "
        "method within one run understates it); e.g. --ais cremer chains=10 replicates=4 (give RUN_DIR first)",
    )
    e.add_argument(
        "--bdmc",
        nargs="*",
        metavar="PRESET|KEY=VALUE",
        help="bidirectional Monte Carlo instead: simulate --subset points (default 100) from the model, run forward "
        "AIS (lower bound) and reverse AIS from the true latents (upper bound) with the --ais presets and settings, "
        "and print the gap, upper minus lower: the error bound of that AIS on such data; writes eval-bdmc.json",
    )
    e.add_argument(
        "--ais-init",
        choices=["prior", "posterior"],
        help="with --ais or --bdmc: start the chains at the prior p(z) (encoder-independent) or at the encoder's "
        "q(z|x)",
    )
    _add_common(e)

    s = sub.add_parser(
        "sample",
        help="sample and reconstruction grids of a trained run",
        description="Write samples.png (draws from the model) and reconstructions.png (data above their "
        "reconstructions). A CP-VAE also writes clusters.png (one row per category) and aggregated_posterior.json; "
        "scalar data (the CP-VAE toy) get samples-histogram.png (generated vs training data) instead.",
        epilog=EPILOG,
    )
    s.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by 'vaelab train'")
    s.add_argument("--n", type=positive_int, default=100, help="number of samples (default: 100)")
    s.add_argument(
        "--cluster",
        type=nonnegative_int,
        metavar="K",
        help="CP-VAE only: draw every sample from category K (0-based), written to samples-cluster<K>.png",
    )
    s.add_argument(
        "--categories",
        choices=["posterior", "uniform"],
        default="posterior",
        help="CP-VAE only: draw c from the aggregated posterior q(c) over the training set (default, paper eq. 14) "
        "or from the uniform prior p(c)",
    )
    s.add_argument("--out", help="output directory (default: RUN_DIR)")
    s.add_argument("--seed", type=int, default=0, help="random seed for the samples (default: 0)")
    s.add_argument("--checkpoint", choices=["best", "last"], default="best", help="which weights (default: best)")
    _add_common(s)

    d = sub.add_parser(
        "datasets",
        help="list datasets and where each was found",
        description="List the registered datasets, whether a copy was found, and where. Looks in: an explicit "
        "path, $VAELAB_DATA, the user cache (~/.cache/vaelab), system dataset directories, the bundled copy.",
        epilog=EPILOG,
    )
    d.add_argument("--download", metavar="NAME", help="download NAME into the user cache (checksummed)")

    from vaelab import gaps  # `vaelab gaps`: the inference-gap analysis (Cremer et al. 2018)

    gaps.add_parser(sub, _add_common)

    from vaelab import sweep  # `vaelab sweep`: a grid of runs tabulated (SIWAE's K x T studies)

    sweep.add_parser(sub, _add_common)

    from vaelab import report  # `vaelab report`: AIWAE Table 1 rows (NLL, NVLB, var and gen gaps, active units)

    report.add_parser(sub, _add_common)

    from vaelab import ledger  # `vaelab ledger`: results/ (shipped runs) and its generated README

    ledger.add_parser(sub, _add_common)
    return parser


def _cmd_train(args) -> int:
    from vaelab import runs
    from vaelab.config import load_config

    if args.resume:
        if args.config or args.budget:
            raise UserError("give either a CONFIG (and --budget) or --resume RUN_DIR, not both: a run keeps its config")
        cfg = runs.resume_config(args.resume, args.overrides)  # only resumable keys; saved once the run loads
        run_dir = Path(args.resume)
    else:
        cfg = load_config(args.config, args.overrides, args.budget)
    if args.no_progress:
        cfg.train.progress = False
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return 0
    if not args.resume:
        run_dir = runs.run_dir_path(cfg, args.run_dir)
    try:  # checks everything before writing; prints the run directory once it is in use
        run = runs.train(cfg, run_dir, resume=bool(args.resume), device=args.device, overwrite=args.overwrite)
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue with: vaelab train --resume {run_dir}", file=sys.stderr)
        return 130
    print(f"training done; metrics in {run_dir / 'metrics.jsonl'}", file=sys.stderr)
    if args.no_eval:
        return 0
    e = cfg.eval
    result = runs.evaluate(
        run, e.split, e.is_samples, e.subset, e.batch_size, e.max_elements, cfg.train.progress, e.predictive_samples
    )
    _print_eval(result)
    for path in runs.sample(run, e.grid**2):
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _print_eval(r: dict) -> None:
    if "accuracy" in r:  # a classifier; with a latent, the IS estimate is of its evidence log p(y) = log E_r p(y|z)
        bound = (
            f", evidence log E_r p(y|z) ~ {r['log_likelihood']:.4f} ({_is_errors(r, 4)}), ELBO {r['elbo']:.4f}"
            if "log_likelihood" in r
            else ""
        )
        print(
            f"{r['dataset']} {r['split']} ({r['n']} examples): accuracy {r['accuracy']:.4f}, "
            f"ECE {r['ece']:.4f} (Guo et al.), {r['ece_true_class']:.4f} (SIWAE app. B), "
            f"log p(y|x) {r['predictive_log_prob']:.4f} (predictive){bound}"
        )
        _warn_reliability(r)
        return
    print(
        f"{r['dataset']} {r['split']} ({r['n']} examples): "
        f"log p(x) ~ {r['log_likelihood']:.2f} ({_is_errors(r)}), "
        f"({r['bits_per_dim']:.3f} bits/dim), ELBO {r['elbo']:.2f} (se over data {r['elbo_se']:.2f}), "
        f"active units {r['active_units']}/{r['latent_dim']}"
    )
    if "siwae_log_likelihood" in r:  # a mixture posterior: the stratified estimate from as many draws (SIWAE eq. 2)
        print(
            f"SIWAE evidence {r['siwae_log_likelihood']:.2f} (Monte Carlo se {r['siwae_log_likelihood_mc_se']:.3f}, "
            f"se over data {r['siwae_log_likelihood_se']:.2f}) "
            f"({r['components']} components x {r['siwae_draws_per_component']} draws)"
        )
    if "cpvae" in r:  # CP-VAE: the joint bound (paper Table 1's NVLB) and clustering accuracy
        c = r["cpvae"]
        acc = "".join(f", {k.split('_')[0]} accuracy {v:.4f}" for k, v in c.get("clustering", {}).items() if "acc" in k)
        print(
            f"CP-VAE: NVLB {c['nvlb']:.2f} +- {c['nvlb_se']:.2f} (KL(c) {c['kl_c']:.2f}, KL(z) {c['kl_z']:.2f}), "
            f"q(c) perplexity {c['q_c_perplexity']:.1f}/{c['categories']}{acc}"
        )
    _warn_reliability(r)


def _is_errors(r: dict, digits: int = 2) -> str:
    """The errors of an IS estimate, named: Monte Carlo se (delta method), se over data, k, ESS."""
    return (
        f"Monte Carlo se {r['log_likelihood_mc_se']:.{digits + 1}f}, se over data {r['log_likelihood_se']:.{digits}f}; "
        f"IS, k={r['is_samples']}, ESS median {r['ess_median']:.1f}, {100 * r['ess_low_share']:.1f}% of points < "
        f"{r['ess_low_threshold']}"
    )


def _warn_reliability(r: dict) -> None:
    """One stderr line per reason the IS estimate's numbers are unreliable (low ESS, non-finite values)."""
    from vaelab.evaluation.loglik import reliability_warnings

    if "log_likelihood" in r:
        for line in reliability_warnings(r):
            print(line, file=sys.stderr)


def _cmd_evaluate(args) -> int:
    from vaelab import runs

    if args.bdmc is not None:
        return _cmd_evaluate_bdmc(args)
    if args.ais is not None or args.ais_init is not None:
        return _cmd_evaluate_ais(args)
    run = runs.load_run(args.run_dir, args.checkpoint, args.device)
    e = run.cfg.eval
    result = runs.evaluate(
        run,
        args.split or e.split,
        args.samples or e.is_samples,
        args.subset if args.subset is not None else e.subset,
        args.batch_size or e.batch_size,
        e.max_elements,
        progress=not args.no_progress,
        predictive_samples=e.predictive_samples,
    )
    _print_eval(result)
    return 0


def _cmd_evaluate_ais(args) -> int:
    from vaelab import runs
    from vaelab.mcmc.options import parse_ais_options

    if args.ais is None:
        raise UserError("--ais-init needs --ais (a preset such as aiwae or cremer, and/or key=value settings)")
    options = parse_ais_options(args.ais, init=args.ais_init)  # before loading: a typo fails at once
    run = runs.load_run(args.run_dir, args.checkpoint, args.device)
    e = run.cfg.eval
    subset = args.subset if args.subset is not None else e.subset
    r = runs.evaluate_ais(
        run, options, args.split or e.split, subset, args.batch_size or e.batch_size, not args.no_progress
    )
    same = f"; IS (k={r['is_samples']}) on the same examples: {r['is_log_likelihood']:.2f}" if "is_samples" in r else ""
    mc = (
        f"Monte Carlo se {r['log_likelihood_mc_se']:.3f} from {r['replicates']} replicates"
        if r["replicates"] > 1
        else f"Monte Carlo se {r['log_likelihood_mc_se']:.3f} by the delta method in one run, which understates it: "
        "use replicates=R"
    )
    print(
        f"{r['dataset']} {r['split']} ({r['n']} examples): log p(x) ~ {r['log_likelihood']:.2f} ({mc}; se over data "
        f"{r['log_likelihood_se']:.2f}; AIS, {r['chains']} chains x {r['temps']} temperatures x {r['leapfrog']} "
        f"leapfrog steps from the {r['init']}), ({r['bits_per_dim']:.3f} bits/dim), ESS {r['ess_mean']:.1f}/"
        f"{r['chains']}, acceptance {r['acceptance_mean']:.2f}, {r['seconds']:.0f} s{same}"
    )
    if r["n_nonfinite"]:
        print(f"warning: {r['n_nonfinite']} of the {r['n']} AIS estimates are NaN or Inf; the means include them",
              file=sys.stderr)  # fmt: skip
    return 0


def _cmd_evaluate_bdmc(args) -> int:
    from vaelab import runs
    from vaelab.mcmc.options import parse_ais_options

    if args.ais is not None:
        raise UserError("give either --ais or --bdmc (whose presets and key=value settings are those of --ais)")
    options = parse_ais_options(args.bdmc, init=args.ais_init)
    run = runs.load_run(args.run_dir, args.checkpoint, args.device)
    r = runs.evaluate_bdmc(run, options, args.subset or 100, not args.no_progress)
    print(
        f"{r['dataset']}: BDMC on {r['n']} points simulated from the model: log p(x) between {r['lower']:.2f} "
        f"(forward AIS) and {r['upper']:.2f} (reverse AIS), gap {r['gap']:.3f} (se over points {r['gap_se']:.3f}, "
        f"max {r['gap_max']:.3f}): the error bound of AIS with {r['chains']} chains x {r['temps']} temperatures x "
        f"{r['leapfrog']} leapfrog steps from the {r['init']} on such data (single-chain gap "
        f"{r['per_chain_gap']:.3f}), {r['seconds']:.0f} s"
    )
    return 0


def _cmd_sample(args) -> int:
    from vaelab import runs

    run = runs.load_run(args.run_dir, args.checkpoint, args.device)
    out = Path(args.out) if args.out else None
    paths = runs.sample(run, args.n, out, args.seed, cluster=args.cluster, categories=args.categories)
    for path in paths:
        print(f"wrote {path}")
    if not paths:  # a deterministic classifier, or a VIB whose latent is not 2-D
        print("nothing to draw: this model has no 2-D latent to picture and generates no images", file=sys.stderr)
    return 0


def _cmd_datasets(args) -> int:
    from vaelab.data import download, list_datasets

    if args.download:
        print(f"downloaded to {download(args.download)}")
        return 0
    rows = list_datasets()
    width = max(len(r.name) for r in rows)
    for r in rows:
        where = r.location if r.available else (r.note or "not found")
        print(f"{r.name:<{width}}  {'yes' if r.available else 'no ':<3}  {r.description}\n{'':<{width}}       {where}")
    return 0


def _cmd_sweep(args) -> int:
    from vaelab import sweep

    return sweep.command(args)


def _cmd_report(args) -> int:
    from vaelab import report

    return report.command(args)


def _cmd_ledger(args) -> int:
    from vaelab import ledger

    return ledger.command(args)


def _cmd_gaps(args) -> int:
    from vaelab import gaps

    return gaps.command(args)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help (0) or a bad argument, already printed in one line (2)
        return done.code if isinstance(done.code, int) else 2
    commands = {"train": _cmd_train, "evaluate": _cmd_evaluate, "sample": _cmd_sample, "datasets": _cmd_datasets}
    commands["gaps"] = _cmd_gaps
    commands["sweep"] = _cmd_sweep
    commands["report"] = _cmd_report
    commands["ledger"] = _cmd_ledger
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if hasattr(args, "threads"):  # a command that computes
            from vaelab.threads import start_command

            start_command(args.threads)
        return commands[args.command](args)
    except (UserError, TrainingDiverged) as err:
        print(f"vaelab {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
