"""`vaelab sweep`: train and evaluate one config over a grid of settings, and tabulate the results (the K x T
studies of SIWAE Fig. 4-5 and C.7: components K x samples per component T x objective).

    vaelab sweep configs/siwae/toy_abs_narrow.yaml --budget quick \\
        --grid posterior.components=1,2,4 --grid objective.options.samples=1,5 --objectives selbo,siwae

Each grid point is a run directory `OUT/<objective>-<name>=<value>-...` made by `runs.train` and evaluated by
`runs.evaluate` (IS log-likelihood; for mixtures the SIWAE evidence with the same draws; for classifiers
accuracy and calibration): whatever numbers a run's `eval-<split>.json` holds become columns, so the table
takes in metrics other evaluators add. A point whose `eval-<split>.json` exists is reused; one whose training
was interrupted is resumed. Writes `OUT/sweep.csv`, `OUT/sweep.md` and `OUT/sweep.png` (rewritten after every
point in one process, so a stopped sweep keeps the table of its finished points; sweep.md lists those not finished):
one panel per metric (figure rows; `--metrics accuracy,ece`) and grid axis (figure columns: that axis on x, one line
per objective and value of the other axes), as SIWAE Fig. 4 (accuracy and ECE against K and T) and Fig. 5 (evidence).
`--reference LABEL=RUN_DIR` adds a finished run's numbers (e.g. a deterministic baseline's accuracy) as a dashed
line in every panel of a metric it has, and as a row of a second table in sweep.md.

Grid keys are dotted config keys as for `--set`; a key whose first part is a `model` section (`posterior`,
`prior`, `encoder`, ...) or `latent_dim` may leave out the leading `model.`.

Under torchrun (`torchrun --nproc_per_node N -m vaelab sweep ...`) the grid points are dealt out whole to the ranks
(point i to rank i mod N), each an independent single-process run (`distributed.alone`) on its rank's device
(`cuda:LOCAL_RANK` on GPUs); rank 0 gathers the results and writes the table. A point that fails there is reported
(its rank prints the error as it happens) and the other points finish; the sweep then writes the table of those
that did and exits with an error naming the failed ones, which a rerun retries (finished points are reused). In one
process the first failure stops the sweep, as before.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from vaelab.app.commands import AddCommon, Subparsers
from vaelab.app.tables import columns_of, markdown_table, write_csv
from vaelab.config import Config, ModelConfig, load_config, yaml_number
from vaelab.errors import ConfigError, UserError
from vaelab.viz.curves import Panel, save_curve_grid

DEFAULT_METRICS = ("siwae_log_likelihood", "log_likelihood", "accuracy")
TABLE_METRICS = (  # the columns sweep.md shows besides the grid's (and those asked for with --metrics)
    "siwae_log_likelihood",
    "siwae_log_likelihood_se",
    "log_likelihood",
    "log_likelihood_se",
    "elbo",
    "accuracy",
    "ece",
    "ece_true_class",
    "active_units",
)
#: How long a rank that has finished its grid points waits for the others under torchrun (collectives' timeout;
#: in milliseconds it must fit gloo's 32-bit count).
RANK_WAIT = timedelta(days=7)


@dataclasses.dataclass
class Axis:
    """One grid axis: a dotted config key and its values (read as YAML)."""

    key: str
    values: list

    @property
    def label(self) -> str:
        """The column name: the key's last part (`components`, `samples`), unless it is `type`."""
        parts = self.key.split(".")
        return parts[-1] if parts[-1] not in ("type", "options") else ".".join(parts[-2:])


def parse_axis(text: str) -> Axis:
    """'posterior.components=1,2,5' -> Axis('model.posterior.components', [1, 2, 5])."""
    if "=" not in text:
        raise ConfigError(f"--grid expects key=v1,v2,... (e.g. model.posterior.components=1,2,5), got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    sections = {f.name for f in dataclasses.fields(Config)}
    if key.split(".")[0] not in sections and key.split(".")[0] in {f.name for f in dataclasses.fields(ModelConfig)}:
        key = f"model.{key}"
    values = [yaml_number(yaml.safe_load(v)) for v in raw.split(",") if v.strip()]
    if not values:
        raise ConfigError(f"--grid {key}: give at least one value")
    return Axis(key, values)


def parse_reference(text: str) -> tuple[str, Path]:
    """'pyramid=runs/mnist_column_pyramid' -> ('pyramid', Path('runs/mnist_column_pyramid'))."""
    label, sep, path = text.partition("=")
    if not sep or not label.strip() or not path.strip():
        raise ConfigError(f"--reference expects LABEL=RUN_DIR (e.g. pyramid=runs/mnist_column_pyramid), got {text!r}")
    return label.strip(), Path(path.strip())


def reference_results(references: dict[str, Path], split: str) -> dict[str, dict]:
    """The numeric entries of each reference run's `eval-<split>.json`, `label -> {column: value}` (and `run`)."""
    out = {}
    for label, run_dir in references.items():
        path = Path(run_dir) / f"eval-{split}.json"
        if not path.is_file():
            raise ConfigError(
                f"reference {label!r}: {path} does not exist; train the run and evaluate it on the sweep's split "
                f"(vaelab evaluate {run_dir} --split {split})"
            )
        out[label] = {"run": str(run_dir), **_numbers(json.loads(path.read_text()))}
    return out


def _value_text(v: Any) -> str:
    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("\n...").strip()


def grid_points(axes: list[Axis], objectives: list[str | None]) -> list[dict[str, Any]]:
    """The product of the objectives and the axes' values: one dict `{key: value}` per run (objective.type
    included when objectives are given)."""
    points = []
    for objective in objectives:
        for values in itertools.product(*(a.values for a in axes)):
            point = {} if objective is None else {"objective.type": objective}
            point.update({a.key: v for a, v in zip(axes, values, strict=True)})
            points.append(point)
    return points


def point_name(point: dict[str, Any], axes: list[Axis]) -> str:
    parts = [str(point["objective.type"])] if "objective.type" in point else []
    parts += [f"{a.label}={_value_text(point[a.key])}" for a in axes]
    name = "-".join(parts) or "run"
    return "".join(c if c.isalnum() or c in "-_=.," else "_" for c in name)


def _numbers(d: dict, prefix: str = "") -> dict[str, float | int]:
    """The numeric leaves of a (nested) eval result, nested keys joined by '.'."""
    out: dict[str, float | int] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_numbers(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = v
    return out


def run_point(cfg: Config, run_dir: Path, split: str, progress: bool = True, device: str | None = None) -> dict:
    """Train (or resume, or reuse) the run in `run_dir` (on `device`, default the config's) and return its
    `eval-<split>.json` contents."""
    from vaelab import recording
    from vaelab.app import runs
    from vaelab.train.checkpoint import latest_checkpoint

    finished = finished_result(run_dir, split)
    if finished is not None:
        return finished
    resume = (run_dir / "config.yaml").is_file() and latest_checkpoint(run_dir / "checkpoints") is not None
    if resume:
        saved, wanted = recording.read_run_config(run_dir).to_dict(), cfg.to_dict()
        saved["train"]["progress"] = wanted["train"]["progress"]  # how it is shown is not part of the run
        if saved != wanted:
            raise ConfigError(
                f"{run_dir} holds a run of another config; remove it or choose another --out to start the sweep afresh"
            )
    else:
        run_dir = runs.new_run_dir(cfg, run_dir, overwrite=True)  # no checkpoint: nothing worth keeping
    run = runs.train(cfg, run_dir, resume=resume, device=device)
    e = cfg.eval
    return runs.evaluate(
        run, split, e.is_samples, e.subset, e.batch_size, e.max_elements, progress, e.predictive_samples
    )


@dataclasses.dataclass
class Failure:
    """A grid point whose run raised: its name, the rank that ran it and the error's first line."""

    point: str
    rank: int
    error: str


def run_sweep(
    config: str | Path,
    axes: list[Axis],
    objectives: list[str] | None = None,
    budget: str | None = None,
    overrides: list[str] | None = None,
    out: str | Path | None = None,
    split: str | None = None,
    metrics: list[str] | str | None = None,
    progress: bool = True,
    references: dict[str, Path] | None = None,
) -> tuple[list[dict], Path, list[Failure]]:
    """Run every grid point, then write sweep.csv, sweep.md and sweep.png into `out`; returns the table's rows, `out`
    and the points that failed. `metrics`: the figure's rows of panels (default: the first of `DEFAULT_METRICS`
    present); `references`: `label -> run directory` whose `eval-<split>.json` numbers become reference lines.

    In one process the points run in turn and the first failure is raised. Under torchrun (module docstring) rank r
    runs points r, r + N, ... alone, a failure is kept and the next point run; every rank gets the merged rows and
    the failures, and only rank 0 writes the table."""
    from vaelab import distributed
    from vaelab.app import runs

    metrics = [metrics] if isinstance(metrics, str) else list(metrics or [])
    points = grid_points(axes, objectives or [None])
    cfgs = []
    for point in points:
        sets = [f"{k}={_value_text(v)}" for k, v in point.items()]
        cfg = load_config(config, [*(overrides or []), *sets], budget)
        cfg.train.progress = progress
        cfgs.append(cfg)
    device = runs.rank_device(cfgs[0], None, RANK_WAIT)  # under torchrun: the process group, this rank's device
    rank, world = distributed.world()
    base = cfgs[0].name
    split = split or cfgs[0].eval.split
    refs = distributed.on_rank0(lambda: reference_results(references or {}, split)) or {}  # a wrong path: at once
    out = Path(out) if out else Path("runs") / f"{base}-sweep"
    distributed.on_rank0(lambda: out.mkdir(parents=True, exist_ok=True))
    names = [point_name(point, axes) for point in points]
    mine = range(rank, len(points), world)
    results = {i: r for i in mine if (r := finished_result(out / names[i], split)) is not None}
    failures: list[Failure] = []

    def table(results: dict[int, dict]) -> list[dict]:
        rows = table_rows(points, names, axes, results)
        if rank == 0 and rows:
            pending = [n for i, n in enumerate(names) if i not in results]
            _write(rows, axes, objectives, metrics, refs, out, f"{base} ({split} split)", pending)
        return rows

    for i in mine:
        cfg, name = cfgs[i], names[i]
        cfg.name = f"{cfg.name}-{name}"
        print(f"[{i + 1}/{len(points)}] {name}" + (f" (rank {rank})" if world > 1 else ""), file=sys.stderr)
        if i in results:
            print(f"finished: reusing {out / name}", file=sys.stderr)
            continue
        if world == 1:
            results[i] = run_point(cfg, out / name, split, progress)
            table(results)  # the table of the points finished so far, kept if the sweep is stopped
            continue
        try:
            with distributed.alone():  # an independent single-process run on this rank's device
                results[i] = run_point(cfg, out / name, split, progress, device)
        except Exception as err:  # reported, and the other points go on
            if not isinstance(err, UserError):
                traceback.print_exc()
            failures.append(Failure(name, rank, (str(err).splitlines() or [type(err).__name__])[0]))
            print(f"sweep point {name} failed on rank {rank}: {failures[-1].error}", file=sys.stderr)
    if world > 1:  # rank 0 merges every rank's results
        shares = distributed.all_gather_object((results, failures))
        results = {i: r for share, _ in shares for i, r in share.items()}
        failures = sorted((f for _, fs in shares for f in fs), key=lambda f: names.index(f.point))
    rows = table(results)
    distributed.barrier()  # the ranks end together, none tearing the process group down while rank 0 writes
    return rows, out, failures


def finished_result(run_dir: Path, split: str) -> dict | None:
    """The `eval-<split>.json` of a finished grid point, or None."""
    path = run_dir / f"eval-{split}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def table_rows(
    points: list[dict[str, Any]], names: list[str], axes: list[Axis], results: dict[int, dict]
) -> list[dict]:
    """One row per finished point (index into `points` -> its eval result), in grid order: the run's name, its
    objective and axis values, then every number of its result."""
    rows = []
    for i, point in enumerate(points):
        if i not in results:
            continue
        row = {"run": names[i]}
        if "objective.type" in point:
            row["objective"] = point["objective.type"]
        row.update({a.label: point[a.key] for a in axes})
        row.update({(f"eval.{k}" if k in row else k): v for k, v in _numbers(results[i]).items()})
        rows.append(row)
    return rows


def _write(rows, axes, objectives, metrics, refs, out: Path, title: str, pending: list[str] | None = None) -> None:
    """The table (`write_table`) and the figure (`write_figure`) of a sweep's rows; `pending`: the points not
    finished yet, listed under the table."""
    write_table(rows, out, ["objective"] * bool(objectives) + [a.label for a in axes], metrics, refs, pending)
    missing = [m for m in metrics if not any(m in r for r in rows)]
    if missing:
        print(
            f"no run has {', '.join(missing)}, left out of the figure; columns: {', '.join(columns_of(rows))}",
            file=sys.stderr,
        )
    metrics = [m for m in metrics if m not in missing] or [m for m in DEFAULT_METRICS if any(m in r for r in rows)][:1]
    if metrics:
        write_figure(rows, axes, metrics, out / "sweep.png", title=title, references=refs)


def write_table(
    rows: list[dict],
    out: Path,
    grid: list[str],
    metrics: list[str] | None = None,
    references: dict[str, dict] | None = None,
    pending: list[str] | None = None,
) -> tuple[Path, Path]:
    """sweep.csv (every column) and sweep.md (the `grid` columns, `TABLE_METRICS` and `metrics`; the `pending`
    points, not finished yet; then the `references` `label -> {column: value}` in a second table)."""
    cols = columns_of(rows)
    write_csv(rows, out / "sweep.csv")
    shown = (*TABLE_METRICS, *(metrics or []))
    main = [c for c in cols if c in grid or c in shown or c.split(".")[-1] in TABLE_METRICS]
    text = markdown_table(rows, main)
    if pending:
        text += f"\nNot finished yet ({len(pending)} of {len(rows) + len(pending)} points): {', '.join(pending)}\n"
    if references:
        refs = [{"reference": label, **r} for label, r in references.items()]
        text += "\nReference runs:\n\n" + markdown_table(
            refs, ["reference", "run", *(c for c in columns_of(refs) if c == "n" or c in shown)]
        )
    (out / "sweep.md").write_text(text)
    return out / "sweep.csv", out / "sweep.md"


def _panel(rows: list[dict], axes: list[Axis], x_axis: int | None, metric: str, hlines: dict[str, float]) -> Panel:
    """`metric` against axis number `x_axis` (numeric values on a log axis when they span 4x; None: against the
    run name), one line per objective and combination of the other axes' values."""
    first = axes[x_axis].label if x_axis is not None else None
    others = [a for i, a in enumerate(axes) if i != x_axis]
    series: dict[str, tuple[list, list]] = {}
    for r in rows:
        if metric not in r:
            continue
        parts = [str(r["objective"])] if "objective" in r else []  # a sweep without --objectives has none
        parts += [f"{a.label}={_value_text(r[a.label])}" for a in others]
        x = r[first] if first else r["run"]
        x = float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else str(x)
        xs, ys = series.setdefault(", ".join(parts) or metric, ([], []))
        xs.append(x)
        ys.append(r[metric])
    values = sorted({v for x, _ in series.values() for v in x}, key=str)
    if values and all(isinstance(v, float) for v in values):  # grid values: plain ticks, log axis if they span 4x
        values = sorted(values)
        logx = values[0] > 0 and values[-1] / values[0] >= 4
        return Panel(series, first, metric, logx=logx, hlines=hlines, xticks=values)
    return Panel(series, first or "run", metric, hlines=hlines)


def write_figure(
    rows: list[dict],
    axes: list[Axis],
    metrics: list[str] | str,
    path: Path,
    title: str = "",
    references: dict[str, dict] | None = None,
) -> Path:
    """A grid of panels: a row per metric, a column per grid axis (that axis on x; a line per objective and
    combination of the other axes' values); each reference run that has the metric adds a dashed line."""
    return save_curve_grid(figure_panels(rows, axes, metrics, references), path, title)


def figure_panels(
    rows: list[dict], axes: list[Axis], metrics: list[str] | str, references: dict[str, dict] | None = None
) -> list[list[Panel]]:
    """The panels of `write_figure`, `[metric][axis]` (one column against the run name when there are no axes)."""
    metrics = [metrics] if isinstance(metrics, str) else metrics
    panels = []
    for m in metrics:
        hlines = {label: r[m] for label, r in (references or {}).items() if m in r}
        panels.append([_panel(rows, axes, i, m, hlines) for i in (range(len(axes)) if axes else [None])])
    return panels


def add_parser(sub: Subparsers, add_common: AddCommon) -> None:
    """The `sweep` subcommand's parser."""
    s = sub.add_parser(
        "sweep",
        help="train and evaluate a config over a grid of settings (e.g. mixture components x samples x objective)",
        description="Train one run per grid point (the product of every --grid axis and --objectives), evaluate each "
        "on the config's eval split, and write OUT/sweep.csv, OUT/sweep.md and OUT/sweep.png. Every number in a "
        "run's eval-<split>.json becomes a column (log-likelihoods, SIWAE evidence, accuracy, ECE, ...). Finished "
        "points are reused and interrupted ones resumed, so rerunning the command continues a sweep.",
        epilog="Example: vaelab sweep configs/siwae/toy_abs_narrow.yaml --budget quick --grid "
        "posterior.components=1,2,4 --grid objective.options.samples=1,5 --objectives selbo,siwae",
    )
    s.add_argument("config", help="YAML config file")
    s.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="a grid axis: dotted config key and comma-separated values; 'model.' may be left out of model keys "
        "(repeatable; each axis is the x axis of one column of the figure)",
    )
    s.add_argument("--objectives", help="comma-separated objective types, one more grid axis (e.g. selbo,siwae)")
    s.add_argument("--budget", help="a budget the config defines, e.g. quick")
    s.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override for every run"
    )
    s.add_argument("--out", help="sweep directory (default: runs/<config name>-sweep)")
    s.add_argument("--split", help="evaluation split (default: the config's eval.split)")
    s.add_argument(
        "--metrics",
        "--metric",
        dest="metrics",
        metavar="COLUMN[,COLUMN...]",
        help="columns to plot, a row of panels each, e.g. accuracy,ece,ece_true_class (default: the first of "
        "siwae_log_likelihood, log_likelihood, accuracy)",
    )
    s.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="LABEL=RUN_DIR",
        help="a finished, evaluated run (e.g. a deterministic baseline): a dashed line in each panel of a metric "
        "its eval-<split>.json has, and a row below the table (repeatable)",
    )
    add_common(s)


def command(args: argparse.Namespace) -> int:
    """Run `vaelab sweep` and print the Markdown table."""
    if args.device:
        args.overrides = [*args.overrides, f"device={args.device}"]
    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()] if args.objectives else None
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    from vaelab import distributed

    rows, out, failures = run_sweep(
        args.config,
        [parse_axis(g) for g in args.grid],
        objectives,
        args.budget,
        args.overrides,
        args.out,
        args.split,
        metrics,
        progress=not args.no_progress,
        references=dict(parse_reference(r) for r in args.reference),
    )
    rank = distributed.world()[0]
    if rank == 0 and rows:
        print((out / "sweep.md").read_text(), end="")
        print(f"wrote {out / 'sweep.csv'}, {out / 'sweep.md'}, {out / 'sweep.png'}", file=sys.stderr)
    if failures:
        which = "; ".join(f"{f.point} on rank {f.rank}: {f.error}" for f in failures)
        others = "the table has the others; " if rows else ""
        err = UserError(
            f"{len(failures)} of {len(rows) + len(failures)} sweep points failed ({which}); {others}fix them and "
            "rerun the sweep (finished points are reused)"
        )
        err.raised_on_rank0 = rank != 0  # type: ignore[attr-defined]  # said once, by rank 0
        raise err
    return 0
