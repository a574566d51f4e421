"""`vaelab gaps RUN`: the inference-gap analysis of Cremer, Li & Duvenaud (2018) for trained runs.

For each run: load its best weights, take `gaps.subset` examples of `gaps.split`, fit q* per data point
(FFG, flow, and the family the run was trained with), estimate log p(x) by the largest of the IWAE and AIS
bounds (AIS from the fitted q*; the largest chosen on one set of draws, its value from a fresh one), and write
`gaps.json`, `gaps.md` (a table like the paper's Table 2), `gaps.png` (bar chart) and
`gaps-per-example.pt` into the run directory (or `--out`). Settings come from the run's `gaps` config
section (its budget's values included) and can be overridden by the options below. `--contours` draws
Figure 2 (2-D latent models). Several runs give one table with a column per run.

Each batch of points is seeded by its index and kept in `gaps-partial/` beside the reports as it is done, so a
stopped measurement continues when the same command is run again. Under torchrun (`torchrun --nproc_per_node N -m
vaelab gaps RUN`) the batches are shared out over the ranks with the same per-point values as one process, and rank
0 alone writes and prints.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from vaelab.app.argtypes import deadline, duration, nonnegative_int, positive_float, positive_int
from vaelab.app.commands import AddCommon, Subparsers
from vaelab.config import GapsConfig
from vaelab.errors import ConfigError

if TYPE_CHECKING:  # the parser is built on every `vaelab` call: torch is imported only when gaps run
    import torch

    from vaelab.evaluation.gaps import GapResult


def add_parser(sub: Subparsers, add_common: AddCommon) -> None:
    """The `gaps` subcommand's parser (every option defaults to the run's `gaps` config section)."""
    g = sub.add_parser(
        "gaps",
        help="approximation, amortization and inference gaps of trained runs (Cremer et al. 2018)",
        description="Fit the optimal q* of each family per data point (Adam, per-point stopping; appendix 6.4), "
        "estimate log p(x) by the largest of the IWAE and AIS bounds (chosen on one set of draws, its value taken "
        "from a fresh one, so that the maximum is not biased upwards), and report log p(x), L[q*], L[q] and the "
        "three gaps (Table 1-2). Writes gaps.json, gaps.md, gaps.png and gaps-per-example.pt into each RUN_DIR "
        "(or --out). Options default to the run's 'gaps' config section.",
    )
    g.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="directories written by 'vaelab train'")
    g.add_argument("--split", help="train, valid or test (default: gaps.split, train as in the paper)")
    g.add_argument("--subset", type=positive_int, help="the first N examples of the split (default: gaps.subset, 1000)")
    g.add_argument("--points", help="comma-separated example indices to use instead of the first --subset")
    g.add_argument(
        "--families", help="comma-separated local families ffg, flow, full_covariance (the trained one is added)"
    )
    g.add_argument("--init", choices=["prior", "encoder"], help="start q* at the prior (paper) or the encoder's q")
    g.add_argument("--samples", type=positive_int, help="Monte Carlo samples of each step's ELBO (paper: 100)")
    g.add_argument("--lr", type=positive_float, help="Adam learning rate of the local optimisation (paper: 1e-3)")
    g.add_argument("--check-every", type=positive_int, help="steps per window of the stopping rule (paper: 100)")
    g.add_argument("--patience", type=positive_int, help="windows without improvement before a point stops (paper: 10)")
    g.add_argument("--max-steps", type=positive_int, help="cap on optimisation steps per point (default: none)")
    g.add_argument("--batch-size", type=positive_int, help="data points optimised together as one tensor (memory)")
    g.add_argument("--eval-samples", type=positive_int, help="samples for L[q], L[q*] and the IWAE bound (paper: 5000)")
    g.add_argument("--ais-chains", type=positive_int, help="AIS chains per data point (paper: 100)")
    g.add_argument("--ais-temperatures", type=nonnegative_int, help="AIS temperatures; 0 skips AIS (paper: 500)")
    g.add_argument("--ais-leapfrog", type=positive_int, help="leapfrog steps per AIS transition (paper: 10)")
    g.add_argument(
        "--ais-init",
        choices=["q_star", "prior"],
        help="start AIS at the fitted Gaussian q* with the largest L[q*] (default; nats closer at high dimension) or "
        "at the prior (paper)",
    )
    g.add_argument("--contours", action="store_true", help="also write posterior-contours.png (Fig. 2; 2-D latents)")
    g.add_argument("--out", help="write the reports here (one subdirectory per run if several) instead of RUN_DIR")
    g.add_argument("--checkpoint", choices=["best", "last"], default="best", help="which weights (default: best)")
    g.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed: batch j of points draws from derive_seed(seed, j) (default: 0)",
    )
    g.add_argument(
        "--stop-after",
        type=duration,
        metavar="DURATION",
        help="stop, keeping the saved batches in gaps-partial/, rather than start a batch that would not end within "
        "DURATION of the start (2h30m, 90m, 5400), judged from the batches' recorded times (the first batch of a "
        "fresh measurement always runs); exit status 75; the same command continues",
    )
    add_common(g)


_OPTIONS = (
    "split", "subset", "init", "samples", "lr", "check_every", "patience", "max_steps", "batch_size",
    "eval_samples", "ais_chains", "ais_temperatures", "ais_leapfrog", "ais_init",
)  # fmt: skip


def settings_for(cfg: GapsConfig, args: argparse.Namespace) -> GapsConfig:
    """The run's `gaps` section with the command-line options given applied."""
    changes = {k: getattr(args, k) for k in _OPTIONS if getattr(args, k, None) is not None}
    if getattr(args, "families", None):
        changes["families"] = [f.strip() for f in args.families.split(",") if f.strip()]
    return dataclasses.replace(cfg, **changes)


def _select(data: torch.Tensor, subset: int, points: str | None) -> torch.Tensor:
    """The examples to measure: `points` (comma-separated indices) or the first `subset`."""
    if points:
        try:
            idx = [int(p) for p in points.split(",")]
        except ValueError:
            raise ConfigError(f"--points must be comma-separated integers, got {points!r}") from None
        if min(idx) < 0 or max(idx) >= data.shape[0]:
            raise ConfigError(f"--points must lie in 0..{data.shape[0] - 1}")
        return data[idx]
    return data[:subset]


def run_gaps(run, settings: GapsConfig, out: Path, points: str | None = None, contours: bool = False,
             seed: int = 0, progress: bool = True, deadline: float | None = None) -> GapResult | None:  # fmt: skip
    """Measure and report the gaps of a loaded run (`vaelab.recording.load_run`); returns the `GapResult`.

    Batch j of points is seeded by `derive_seed(seed, j)` (`measure_gaps`) and kept in `out/gaps-partial/` as it is
    done, so the same call after a stop continues (other settings are refused); the directory is removed once the
    reports are written. `deadline` (a `time.monotonic()` reading): stop with `OutOfTime` rather than start a batch
    that would end after it. Under torchrun every rank calls this: the batches are shared out, rank 0 alone writes, and
    the other ranks get None."""
    import shutil

    import torch

    from vaelab import distributed
    from vaelab.app.runs import check_writable, weights_used
    from vaelab.evaluation.gaps import FAMILY_NAMES, measure_gaps, write_gap_report

    data = _select(run.dataset.split(settings.split), settings.subset, points)
    if contours and data.shape[0] > settings.batch_size:
        raise ConfigError(f"--contours draws at most batch_size = {settings.batch_size} points; pass fewer --points")
    shard = distributed.world()[1] > 1
    distributed.on_rank0(lambda: check_writable(out, create=True))  # before the work, not after it
    partials = out / "gaps-partial"
    result = measure_gaps(
        run.model, data, settings, progress, seed=seed, shard=shard, partials=partials, deadline=deadline
    )
    if result is None:  # another rank: its batches were gathered on rank 0, which writes the reports
        return None
    if result.batches_resumed:
        print(f"continued a stopped measurement: {result.batches_resumed} batches were read from {partials}/ "
              "(now removed)", file=sys.stderr)  # fmt: skip
    for path in write_gap_report(result, out, run.path.name, weights_used(run)):
        print(f"wrote {path}", file=sys.stderr)
    shutil.rmtree(partials, ignore_errors=True)  # the reports are written: the batches are no longer needed
    if contours:
        from vaelab.viz.gaps import save_posterior_contours

        x = data.to(run.device)
        with torch.no_grad():
            rows = {f"amortised {FAMILY_NAMES.get(result.trained or '', 'q')}": run.model.posterior(x)}
        rows.update({f"optimal {FAMILY_NAMES[f]}": fit() for f, fit in result.last_fits.items()})
        print(f"wrote {save_posterior_contours(run.model, x, rows, out / 'posterior-contours.png')}", file=sys.stderr)
    return result


def command(args: argparse.Namespace) -> int:
    args.started = time.monotonic()  # --stop-after counts from here
    from vaelab import distributed, recording
    from vaelab.app import runs
    from vaelab.evaluation.gaps import FAMILY_NAMES, gaps_table

    columns = []
    for run_dir in args.run_dirs:
        device = runs.rank_device(runs.run_settings(run_dir), args.device)  # under torchrun: this rank's
        run = recording.load_run(run_dir, args.checkpoint, device)
        settings = settings_for(run.cfg.gaps, args)
        out = Path(args.out) / run.path.name if args.out and len(args.run_dirs) > 1 else Path(args.out or run.path)
        result = run_gaps(
            run, settings, out, args.points, args.contours, args.seed, not args.no_progress, deadline(args)
        )
        if result is None:  # another rank than 0 under torchrun: rank 0 reports
            continue
        tag = FAMILY_NAMES.get(result.trained or "", "q")
        columns.append((f"{run.path.name} (q_{tag})", result.summary()))
    if distributed.world()[0] != 0:
        return 0
    table = gaps_table(columns)
    print(table, end="")
    if len(columns) > 1 and args.out:
        from vaelab.viz.gaps import save_gap_chart

        (Path(args.out) / "gaps-table.md").write_text(table)
        print(f"wrote {save_gap_chart(columns, Path(args.out) / 'gaps.png')}", file=sys.stderr)
    return 0
