"""`vaelab sample RUN`: sample and reconstruction grids (and the pictures a model's capabilities allow)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vaelab.app.argtypes import nonnegative_int, positive_int
from vaelab.app.commands import EPILOG, AddCommon, Subparsers


def add_parser(sub: Subparsers, add_common: AddCommon) -> None:
    """Add the command's subparser to `sub`."""
    s = sub.add_parser(
        "sample",
        help="sample and reconstruction grids of a trained run",
        description="Write samples.png (draws from the model) and reconstructions.png (data above their "
        "reconstructions), and draw training.png (loss, schedules and throughput per epoch) again from the run's "
        "metrics.jsonl. A CP-VAE also writes clusters.png (one row per category) and aggregated_posterior.json; "
        "scalar data (the CP-VAE toy) get samples-histogram.png (generated vs training data) instead.",
        epilog=EPILOG,
    )
    s.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by 'vaelab train' or by vaelab.fit")
    s.add_argument(
        "--data",
        metavar="DATASET|FILE.pt",
        help="for a run that vaelab.fit wrote (trained on tensors): the data to reconstruct, a vaelab dataset or a "
        "tensor [N, *event] saved by torch.save; without it only samples.png is drawn",
    )
    s.add_argument(
        "--split",
        help="the split to reconstruct (default: test; for --data FILE.pt, the file's one split)",
    )
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
    add_common(s)


def command(args: argparse.Namespace) -> int:
    """Run `vaelab sample`; the exit status."""
    from vaelab.app import runs
    from vaelab.train.trainer import write_training_figure

    run = runs.open_run(args.run_dir, args.checkpoint, args.device, data=args.data)
    fit_run = runs.is_fit_run(args.run_dir)
    split = args.split or (run.cfg.eval.split if fit_run else "test")
    out = Path(args.out) if args.out else None
    paths = runs.sample(run, args.n, out, args.seed, split, cluster=args.cluster, categories=args.categories)
    training = write_training_figure(run.path, out)  # from metrics.jsonl alone; None before the first epoch
    for path in [*paths, *([training] if training is not None else [])]:
        print(f"wrote {path}")
    if not runs.has_data(run):
        print(
            "no --data given: reconstructions.png and the posterior pictures need --data DATASET|FILE.pt",
            file=sys.stderr,
        )
    if not paths:  # a deterministic classifier, or a VIB whose latent is not 2-D
        print("nothing to draw: this model has no 2-D latent to picture and generates no images", file=sys.stderr)
    return 0
