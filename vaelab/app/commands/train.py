"""`vaelab train`: train a model from a YAML config (or resume a run), then evaluate it and draw its pictures.

Under torchrun (`torchrun --nproc_per_node N -m vaelab train CONFIG`) every rank trains its shard of each epoch on its
own device (`vaelab.distributed.start`), rank 0 alone writes the run, the ranks share its evaluation's IS estimate
(`runs.evaluate`), and rank 0 writes that and draws the pictures."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vaelab.app.commands import EPILOG, AddCommon, Subparsers
from vaelab.app.commands.evaluate import print_eval
from vaelab.errors import UserError


def add_parser(sub: Subparsers, add_common: AddCommon) -> None:
    """Add the command's subparser to `sub`."""
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
    t.add_argument(
        "--no-eval",
        action="store_true",
        help="skip the final evaluation and pictures; the run keeps this (eval.after_training: false), so a "
        "--resume of it does too unless given --set eval.after_training=true",
    )
    t.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    add_common(t)


def command(args: argparse.Namespace) -> int:
    """Run `vaelab train`; the exit status."""
    from vaelab import distributed
    from vaelab.app import runs
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
    if args.no_eval:  # saved with the run's config: a resume of it skips the evaluation too
        cfg.eval.after_training = False
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return 0
    device = runs.rank_device(cfg, args.device)  # under torchrun: the process group started, this rank's device
    if not args.resume:
        run_dir = runs.run_dir_path(cfg, args.run_dir)
        if distributed.world()[1] > 1:  # the default's timestamp is rank 0's, so that every rank trains one run
            run_dir = Path(distributed.broadcast_object(str(run_dir)))
    rank = distributed.world()[0]
    try:  # checks everything before writing; prints the run directory once it is in use
        run = runs.train(cfg, run_dir, resume=bool(args.resume), device=device, overwrite=args.overwrite)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (`vaelab.app.cli`): the last checkpoint and the record stay
        if rank == 0:
            print(f"\ninterrupted; continue with: vaelab train --resume {run_dir}", file=sys.stderr)
        raise
    if rank == 0:
        print(f"training done; metrics in {run_dir / 'metrics.jsonl'}", file=sys.stderr)
    if not cfg.eval.after_training:
        return 0
    e = cfg.eval
    result = runs.evaluate(
        run, e.split, e.is_samples, e.subset, e.batch_size, e.max_elements, cfg.train.progress, e.predictive_samples
    )
    if rank != 0:  # rank 0 writes the evaluation and draws the pictures
        return 0
    print_eval(result)
    for path in runs.sample(run, e.grid**2):
        print(f"wrote {path}", file=sys.stderr)
    return 0
