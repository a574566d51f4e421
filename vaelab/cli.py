"""The `vaelab` command line: train, evaluate, sample, datasets.

User errors (bad config, missing data, wrong run directory) print one line and exit with status 2;
a Ctrl-C prints how to resume and exits with 130.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vaelab.errors import TrainingDiverged, UserError

EPILOG = "Docs and examples: README.md. Every option can also be set in the YAML config."


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, or auto (default: the config's, auto)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars (logs stay)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    t.add_argument("--overwrite", action="store_true", help="replace an existing run in --run-dir")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its latest checkpoint")
    t.add_argument("--no-eval", action="store_true", help="skip the final evaluation and pictures")
    t.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    _add_common(t)

    e = sub.add_parser(
        "evaluate",
        help="IS log-likelihood, ELBO and active units of a trained run",
        description="Estimate log p(x) by importance sampling (the IWAE bound with --samples per point), the ELBO "
        "and the number of active units on a split; writes RUN_DIR/eval-<split>.json.",
        epilog=EPILOG,
    )
    e.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by 'vaelab train'")
    e.add_argument("--split", default=None, help="train, valid or test (default: the config's eval.split)")
    e.add_argument("--samples", type=int, default=None, help="importance samples per point (default: config, 5000)")
    e.add_argument("--subset", type=int, default=None, help="evaluate only the first N examples of the split")
    e.add_argument("--batch-size", type=int, default=None, help="data points per batch (default: config)")
    e.add_argument("--checkpoint", choices=["best", "last"], default="best", help="which weights (default: best)")
    _add_common(e)

    s = sub.add_parser(
        "sample",
        help="sample and reconstruction grids of a trained run",
        description="Write samples.png (draws from the model) and reconstructions.png (data above their "
        "reconstructions).",
        epilog=EPILOG,
    )
    s.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by 'vaelab train'")
    s.add_argument("--n", type=int, default=100, help="number of samples (default: 100)")
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
    return parser


def _cmd_train(args) -> int:
    from vaelab import runs
    from vaelab.config import load_config

    if args.resume:
        if args.config or args.budget:
            raise UserError("give either a CONFIG (and --budget) or --resume RUN_DIR, not both: a run keeps its config")
        cfg = runs.read_run_config(args.resume)
        if args.overrides:
            from vaelab.config import apply_overrides, config_from_dict

            cfg = config_from_dict(apply_overrides(cfg.to_dict(), args.overrides))
            (Path(args.resume) / "config.yaml").write_text(cfg.to_yaml())
        run_dir = Path(args.resume)
    else:
        cfg = load_config(args.config, args.overrides, args.budget)
    if args.no_progress:
        cfg.train.progress = False
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return 0
    if not args.resume:
        run_dir = runs.new_run_dir(cfg, args.run_dir, args.overwrite)
    print(f"run directory: {run_dir}", file=sys.stderr)
    try:
        run = runs.train(cfg, run_dir, resume=bool(args.resume), device=args.device)
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue with: vaelab train --resume {run_dir}", file=sys.stderr)
        return 130
    print(f"training done; metrics in {run_dir / 'metrics.jsonl'}", file=sys.stderr)
    if args.no_eval:
        return 0
    e = cfg.eval
    result = runs.evaluate(run, e.split, e.is_samples, e.subset, e.batch_size, e.max_elements, cfg.train.progress)
    _print_eval(result)
    for path in runs.sample(run, e.grid**2):
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _print_eval(r: dict) -> None:
    print(
        f"{r['dataset']} {r['split']} ({r['n']} examples): "
        f"log p(x) ~ {r['log_likelihood']:.2f} +- {r['log_likelihood_se']:.2f} (IS, k={r['is_samples']}), "
        f"({r['bits_per_dim']:.3f} bits/dim), ELBO {r['elbo']:.2f} +- {r['elbo_se']:.2f}, "
        f"active units {r['active_units']}/{r['latent_dim']}"
    )


def _cmd_evaluate(args) -> int:
    from vaelab import runs

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
    )
    _print_eval(result)
    return 0


def _cmd_sample(args) -> int:
    from vaelab import runs

    run = runs.load_run(args.run_dir, args.checkpoint, args.device)
    for path in runs.sample(run, args.n, Path(args.out) if args.out else None, args.seed):
        print(f"wrote {path}")
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


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    commands = {"train": _cmd_train, "evaluate": _cmd_evaluate, "sample": _cmd_sample, "datasets": _cmd_datasets}
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return commands[args.command](args)
    except (UserError, TrainingDiverged) as err:
        print(f"vaelab {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
