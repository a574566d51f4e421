"""`vaelab compare RUN_A RUN_B`: two runs' per-example results on the same points, compared paired.

Reads, for one split and one estimator, what `vaelab evaluate` wrote into each run directory: `eval-<split>.json`
with `eval-<split>-per-example.pt` (IS: `log_likelihood`, `elbo`, `mc_se`, `ess`) or, with `--estimator ais`,
`eval-<split>-ais.json` with `eval-<split>-ais-per-example.pt` (`log_likelihood`, `replicate_se`). The two must be
of the same points: the same dataset, split and number of points, and the same `data_digest` (sha256 of the
evaluated inputs; an evaluation made before vaelab recorded it has its points rebuilt from the run's config and
digested). Any difference is a one-line error naming it; unpaired numbers are never compared.

Prints mean(A - B) over the points with its standard error sd(A - B) / sqrt(n) (`vaelab.evaluation.paired`), the
two means with their own se over points, n and the share of points where A > B; writes a figure (B against A per
point, and the histogram of A - B) to `--out`, by default `RUN_A/compare-<B>-<split>-<estimator>-<metric>.png` (<B>
RUN_B's path below the two runs' common directory, '/' as '_'), and with `--json` the numbers beside it (same name,
.json) or into the file given.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vaelab.app.commands import EPILOG, AddCommon, Subparsers
from vaelab.errors import CorruptRunFile, DataError, RunDirError, UserError

if TYPE_CHECKING:  # the parser is built on every `vaelab` call: torch is imported only when runs are compared
    from torch import Tensor

#: estimator -> (result file, per-example file), each with {split}; and the settings printed for it.
FILES = {
    "is": ("eval-{split}.json", "eval-{split}-per-example.pt"),
    "ais": ("eval-{split}-ais.json", "eval-{split}-ais-per-example.pt"),
}
SETTINGS = {"is": ("is_samples",), "ais": ("chains", "temps", "leapfrog", "init", "replicates")}


def add_parser(sub: Subparsers, add_common: AddCommon) -> None:
    """Add the command's subparser to `sub`."""
    c = sub.add_parser(
        "compare",
        help="paired difference of two runs' per-example results on the same points",
        description="Compare two runs paired, point by point, on the per-example results of one split and one "
        "estimator that 'vaelab evaluate' wrote (IS: eval-<split>-per-example.pt; AIS: eval-<split>-ais-per-"
        "example.pt). Refuses results of different points (dataset, split, number of points, data digest). "
        "Prints mean(A - B) with its se over points (sd of the differences / sqrt(n)), both means with their own "
        "se, n and the share of points with A > B; writes a figure (B against A, and the histogram of A - B).",
        epilog=EPILOG,
    )
    c.add_argument("run_a", metavar="RUN_A", help="a run directory that 'vaelab evaluate' has evaluated")
    c.add_argument("run_b", metavar="RUN_B", help="the run to compare it with, evaluated on the same points")
    c.add_argument("--split", default="test", help="the evaluated split (default: test)")
    c.add_argument(
        "--estimator",
        choices=sorted(FILES),
        default="is",
        help="is (eval-<split>.json, default) or ais (eval-<split>-ais.json, vaelab evaluate --ais)",
    )
    c.add_argument(
        "--metric",
        default="log_likelihood",
        help="the per-example value compared (default log_likelihood; IS also elbo, mc_se, ess; AIS also replicate_se)",
    )
    c.add_argument(
        "--out",
        metavar="PNG",
        help="the figure (default: RUN_A/compare-<B>-<split>-<estimator>-<metric>.png, <B> RUN_B's path below the two "
        "runs' common directory with '/' as '_')",
    )
    c.add_argument(
        "--json",
        nargs="?",
        const=True,
        metavar="FILE",
        help="also write the numbers as JSON: into FILE, or without one beside the figure (.json)",
    )


@dataclass
class Side:
    """One run's evaluation: its directory, result JSON and per-example values of the metric."""

    run: Path
    result: dict
    values: Tensor  # [n]


def read_side(run_dir: str | Path, split: str, estimator: str, metric: str) -> Side:
    """Read `run_dir`'s result and per-example files for `split` and `estimator`; `UserError`s name what is
    missing, how to make it, and the metrics there are."""
    import torch

    run = Path(run_dir)
    if not run.is_dir():
        raise RunDirError(f"run directory {str(run)!r} does not exist")
    result_name, values_name = (f.format(split=split) for f in FILES[estimator])
    make = f"vaelab evaluate {run} --split {split}" + (" --ais aiwae" if estimator == "ais" else "")
    for name in (result_name, values_name):
        if not (run / name).is_file():
            raise RunDirError(f"{run}: {name} missing; make it with: {make} (with the same --subset for both runs)")
    try:
        result = json.loads((run / result_name).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorruptRunFile(f"{run}: cannot read {result_name} ({err}); make it again with: {make}") from None
    try:
        per_example = torch.load(run / values_name, weights_only=True)
    except Exception as err:  # noqa: BLE001 (truncated or damaged: EOFError, UnpicklingError, RuntimeError, ...)
        raise CorruptRunFile(f"{run}: cannot read {values_name} ({type(err).__name__}: {err}); make it again with: "
                             f"{make}") from None  # fmt: skip
    if not isinstance(result, dict) or not isinstance(per_example, dict):
        raise CorruptRunFile(f"{run}: {result_name} or {values_name} is not what vaelab evaluate writes; make them "
                             f"again with: {make}")  # fmt: skip
    metrics = sorted(k for k, v in per_example.items() if torch.is_tensor(v) and v.dim() == 1)
    if metric not in metrics:
        raise UserError(f"unknown metric {metric!r}: {run / values_name} has per-example {', '.join(metrics)}")
    values = per_example[metric]
    if values.numel() != result.get("n"):
        raise DataError(f"{run}: {values_name} has {values.numel()} values but {result_name} is of {result.get('n')} "
                        f"points: they are of different evaluations; make both again with: {make}")  # fmt: skip
    return Side(run, result, values)


def points_digest(side: Side, split: str) -> tuple[str, bool]:
    """The `data_digest` of a side's points, and whether it was rebuilt (an evaluation made before vaelab recorded
    it): then the run's dataset is loaded as `vaelab evaluate` loads it and its first n points of `split` digested."""
    if "data_digest" in side.result:
        return side.result["data_digest"], False
    from vaelab.app.runs import data_digest
    from vaelab.data import load_dataset
    from vaelab.recording import read_run_config

    if not (side.run / "config.yaml").is_file():
        raise RunDirError(f"{side.run}: its evaluation records no data_digest and the run has no config.yaml to "
                          f"rebuild its points from; evaluate it again with a current vaelab")  # fmt: skip
    cfg = read_run_config(side.run)
    x = load_dataset(cfg.data.name, path=cfg.data.path, seed=cfg.data.seed).split(split)
    n = side.result["n"]
    if n > x.shape[0]:
        raise DataError(f"{side.run}: evaluated on {n} {split} points but {cfg.data.name} has {x.shape[0]}")
    return data_digest(x[:n]), True


def check_paired(a: Side, b: Side, split: str) -> tuple[str, list[str]]:
    """The data digest both sides share, and notes on stderr's behalf; a `DataError` naming the first difference
    when the two are not of the same points (dataset, split, number of points, digest)."""
    ra, rb = a.result, b.result
    for key, what in (("dataset", "datasets"), ("split", "splits")):
        if ra.get(key) != rb.get(key):
            raise DataError(f"not the same points: {what} {ra.get(key)!r} (A, {a.run}) and {rb.get(key)!r} (B, "
                            f"{b.run})")  # fmt: skip
    if ra["n"] != rb["n"]:
        raise DataError(f"not the same points: A was evaluated on {ra['n']} {split} points, B on {rb['n']}; evaluate "
                        f"both with the same --subset")  # fmt: skip
    (da, rebuilt_a), (db, rebuilt_b) = points_digest(a, split), points_digest(b, split)
    notes = [f"{s.run}: no data_digest recorded; its points were rebuilt from its config"
             for s, rebuilt in ((a, rebuilt_a), (b, rebuilt_b)) if rebuilt]  # fmt: skip
    if da != db:
        raise DataError(f"not the same points: {ra['n']} {split} points of {ra['dataset']!r} in both, but their data "
                        f"digests differ (A {da[:12]}, B {db[:12]}): other images (another data version, "
                        f"binarization or order)")  # fmt: skip
    return da, notes


def settings(result: dict, estimator: str) -> dict:
    return {k: result.get(k) for k in SETTINGS[estimator]}


def compare(run_a: str | Path, run_b: str | Path, split: str = "test", estimator: str = "is",
            metric: str = "log_likelihood") -> tuple[dict, Tensor, Tensor]:  # fmt: skip
    """The paired comparison of two runs' per-example `metric` (`vaelab.evaluation.paired.paired_difference`),
    with what it was made of: runs, split, estimator, metric, data digest, each side's estimator settings and
    `notes` (rebuilt digests, differing settings); and the two runs' values `[n]`."""
    from vaelab.evaluation.paired import paired_difference

    if estimator not in FILES:
        raise UserError(f"unknown estimator {estimator!r}: give one of {', '.join(sorted(FILES))}")
    a, b = (read_side(r, split, estimator, metric) for r in (run_a, run_b))
    digest, notes = check_paired(a, b, split)
    sa, sb = settings(a.result, estimator), settings(b.result, estimator)
    if sa != sb:
        notes.append(f"the {estimator.upper()} settings differ: A {sa}, B {sb}")
    out = {"run_a": str(a.run), "run_b": str(b.run), "split": split, "estimator": estimator, "metric": metric,
           "dataset": a.result["dataset"], "data_digest": digest, "settings_a": sa, "settings_b": sb}  # fmt: skip
    out.update(paired_difference(a.values, b.values))
    out["notes"] = notes
    return out, a.values, b.values


def default_figure(run_a: Path, run_b: Path, split: str, estimator: str, metric: str) -> Path:
    """`RUN_A/compare-<B>-<split>-<estimator>-<metric>.png`, <B> RUN_B's path below the two runs' common directory
    with '/' as '_' (e.g. `results/aiwae/mnist/k5_t5/compare-iwae_mnist_k5-test-ais-log_likelihood.png`)."""
    a, b = run_a.resolve(), run_b.resolve()
    name = "_".join(b.relative_to(os.path.commonpath([a, b])).parts) or b.name
    return a / f"compare-{name}-{split}-{estimator}-{metric}.png"


def command(args: argparse.Namespace) -> int:
    """Run `vaelab compare`; the exit status."""
    import sys

    from vaelab.viz import save_paired_figure

    r, a, b = compare(args.run_a, args.run_b, args.split, args.estimator, args.metric)
    figure = Path(args.out) if args.out else default_figure(Path(args.run_a), Path(args.run_b), args.split,
                                                            args.estimator, args.metric)  # fmt: skip
    numbers = (figure.with_suffix(".json") if args.json is True else Path(args.json)) if args.json else None
    for what, path in (("the figure", figure), ("the numbers", numbers)):
        if path is not None and not path.parent.is_dir():  # checked before anything is written
            raise RunDirError(f"cannot write {what} {str(path)!r}: its directory does not exist")
    for note in r["notes"]:
        print(f"note: {note}", file=sys.stderr)
    what = f"{args.estimator.upper()} {args.metric}"
    ties = f" (ties {100 * r['frac_ties']:.1f}%)" if r["frac_ties"] else ""
    print(
        f"{r['dataset']} {args.split}, {what}, {r['n']} paired points (data sha256 {r['data_digest'][:12]}):\n"
        f"  A {args.run_a}: {r['mean_a']:.3f} (se over points {r['se_a']:.3f}) {r['settings_a']}\n"
        f"  B {args.run_b}: {r['mean_b']:.3f} (se over points {r['se_b']:.3f}) {r['settings_b']}\n"
        f"  A - B: {r['mean_diff']:.3f} (paired se {r['se_diff']:.3f}, sd {r['sd_diff']:.3f}, z {r['z']:.1f}); "
        f"A > B on {100 * r['frac_a_greater']:.1f}% of points{ties}"
    )
    title = f"{r['dataset']} {args.split}, {r['n']} points: A - B = {r['mean_diff']:.3f} ± {r['se_diff']:.3f}"
    r["figure"] = str(save_paired_figure(a, b, figure, Path(args.run_a).name, Path(args.run_b).name, what, title))
    print(f"figure: {r['figure']}")
    if numbers is not None:
        finite = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
        numbers.write_text(json.dumps(finite, indent=2, allow_nan=False) + "\n")  # standard JSON: null, not NaN
        print(f"numbers: {numbers}")
    return 0
