"""`vaelab ledger`: the results ledger, trained runs shipped in `results/` beside the papers' numbers.

`results/` mirrors `configs/`: the result of `configs/G/NAME.yaml` is the finished run directory
`results/G/NAME/` (a config at the top of `configs/` gives `results/NAME/`), without its checkpoints: its
`config.yaml`, `metrics.jsonl`, `best.safetensors`, `provenance.json` (command, commit, machine, threads, wall
time of each `vaelab train` on it), every `eval-*.json` with its per-example values, and the pictures
(`training.png`, `samples.png`, ...). A run that is not finished may ship its latest checkpoint instead, so that
`vaelab train --resume results/G/NAME` goes on.

`results/ledger.yaml` is the catalogue: one table per paper, one row per paper number, each naming its config,
the paper's value, the metric it is compared with (a dotted key of `eval-<split>.json`, times `scale`), the goal
(`tolerance`) and the known deviations from the paper's protocol. A paper's figure is a row too: it names its
picture(s) in `figure` (inside the row's run directory) instead of a metric, and the `command` that draws them; the
README lists a table's figure rows under it, each picture embedded, or "not run" with its command and projected
cost. `vaelab ledger build` writes `results/README.md` from the catalogue and the run files alone; nothing in it
is typed by hand. Deviations that can be read from the files are added by the command itself: a resolved config
that differs from the config's full budget, fewer test points or IS samples than the protocol, a run that has not
finished.

    vaelab ledger add RUN_DIR configs/G/NAME.yaml   # copy a finished run into results/G/NAME (no checkpoints)
    vaelab ledger add RUN_DIR configs/G/NAME.yaml --run ablation_x  # into results/G/NAME/ablation_x (a row's `run`)
    vaelab ledger add RUN_DIR configs/G/NAME.yaml --last  # its final weights too, as last.safetensors
    vaelab ledger build                               # write results/README.md
    vaelab ledger verify results/G/NAME --subset 500  # recompute from the shipped weights, compare per example
"""

from __future__ import annotations

import argparse
import html
import json
import math
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vaelab.app.argtypes import positive_int
from vaelab.app.commands import AddCommon, Subparsers
from vaelab.errors import ConfigError, RunDirError

CATALOGUE = "ledger.yaml"
PROTOCOL_KEYS = ("eval.is_samples", "eval.subset", "eval.split")  # compared separately, as columns
NOT_PROTOCOL = (
    "name",
    "threads",
    "device",
    "train.progress",
    "train.tensorboard",
    "eval.after_training",
    "gaps.",
)
SKIP = ("checkpoints",)  # never shipped with a finished run
ROUND_OFF = 1e-3  # nats: what another machine's float round-off may change in a mean over the same draws
# Keys that only a number row takes; a figure row takes only these of its table's `defaults`.
NUMBER_KEYS = ("value", "metric", "se_metric", "scale", "tolerance", "higher_is_better", "split", "protocol")
NUMBER_KEYS += ("exact_metric", "source", "sets", "digits", "goal_against")
FIGURE_KEYS = ("figure", "width")  # only a figure row takes these
FIGURE_DEFAULTS = ("config", "run", "command", "projected")
# Pixels: the README shows each picture at this width (an HTML <img width>, which plain Markdown cannot size), so
# that a 660-1,800 px figure neither fills GitHub's ~900 px column nor makes the page a long scroll; GitHub opens
# the full-size file on a click. A row's `width` overrides it (a wide figure of many panels).
FIGURE_WIDTH = 480


@dataclass
class Row:
    """One paper number, or one paper figure: `config` (relative to the repository root) is the run that
    reproduces it. A figure row names its picture(s) in `figure` (paths inside the row's run directory) instead
    of a `metric`, and must say in `command` what draws them."""

    paper: str
    row: str
    config: str
    value: float | None = None  # the paper's number, in the paper's sign and units
    metric: str | None = "log_likelihood"  # dotted key of eval-<split>.json
    se_metric: str | None = "log_likelihood_se"
    scale: float = 1.0  # paper value = scale * vaelab metric (e.g. -1 for an NLL, 100 for a percentage)
    tolerance: float = 0.5  # the goal: within this of the paper, or better
    higher_is_better: bool = True  # in the paper's sign
    split: str = "test"
    protocol: dict = field(default_factory=dict)  # e.g. {eval.is_samples: 5000, test_points: 10000}
    deviations: list = field(default_factory=list)  # known, by hand: split differs, ...
    projected: str | None = None  # measured-throughput projection, for a row not yet run
    command: str | None = None  # how to fill the row (default: train the config at its full budget)
    notes: str | None = None  # what was measured about the row (an ablation when it falls short), shown below
    run: str | None = None  # a run directory inside the config's results (an experiment with several: the toy)
    exact_metric: str | None = None  # dotted key of the exact value (a toy's exact log p(x)), shown beside ours
    source: str | None = None  # the result file in the run (default eval-<split>.json; `vaelab gaps`: gaps.json)
    sets: list = field(default_factory=list)  # config keys the experiment sets per run (the toy: objective)
    digits: int = 2  # decimals shown (a toy's evidence: 4)
    goal_against: str = "paper"  # or "exact": the goal is `tolerance` of the exact value (delta stays vs the paper)
    figure: list[str] = field(default_factory=list)  # a figure row: its pictures, relative to the run directory
    width: int = FIGURE_WIDTH  # a figure row: pixels each picture is shown at in the README

    @property
    def is_figure(self) -> bool:
        return bool(self.figure)


def repo_root(results: Path) -> Path:
    return results.resolve().parent


def result_dir(results: Path, config: str) -> Path:
    """`configs/G/NAME.yaml` -> `results/G/NAME`."""
    parts = Path(config).with_suffix("").parts
    if not parts or parts[0] != "configs":
        raise ConfigError(f"{config!r} is not a path under configs/ (the ledger mirrors configs/)")
    return results.joinpath(*parts[1:])


def read_catalogue(results: Path) -> dict[str, list[Row]]:
    """`results/ledger.yaml` as {paper title: rows}."""
    path = results / CATALOGUE
    if not path.is_file():
        raise RunDirError(f"{str(path)!r} does not exist; the ledger's catalogue lives there")
    data = yaml.safe_load(path.read_text()) or {}
    tables: dict[str, list[Row]] = {}
    for paper in data.get("papers", []):
        defaults = paper.get("defaults", {})
        if set(defaults) & set(FIGURE_KEYS):
            raise ConfigError(f"{path}: {paper['title']!r}: `figure` and `width` belong on a row, not in defaults")
        tables[paper["title"]] = [make_row(paper["title"], defaults, entry, path) for entry in paper["rows"]]
    return tables


def make_row(title: str, defaults: dict, entry: dict, where: Path | str) -> Row:
    """The row `entry` of the table `title`, over the table's `defaults`: a number row (a `metric`) or a figure
    row (a `figure`: a path or a list of paths inside the row's run directory, and the `command` that draws it),
    never both and never neither."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: {title!r}: a row must be a mapping of keys, got {entry!r}")
    name = f"{where}: row {entry.get('row')!r}"
    if "figure" in entry:
        numbers = sorted(set(entry) & set(NUMBER_KEYS))
        if numbers:
            raise ConfigError(
                f"{name} has a figure and also a number's keys ({', '.join(numbers)}): a row is a number or a "
                "figure; put the number in a row of its own"
            )
        merged = {**{k: v for k, v in defaults.items() if k in FIGURE_DEFAULTS}, **entry}
        figure = merged["figure"]
        figure = [figure] if isinstance(figure, str) else figure
        if not isinstance(figure, list) or not figure or not all(isinstance(f, str) and f for f in figure):
            raise ConfigError(f"{name}: figure must be a path or a list of paths, got {merged['figure']!r}")
        for f in figure:
            if Path(f).is_absolute() or ".." in Path(f).parts:
                raise ConfigError(f"{name}: figure {f!r} must be a path inside the row's run directory")
        merged["figure"] = figure
        if not merged.get("command"):
            raise ConfigError(f"{name}: a figure row needs `command`: the command that draws {', '.join(figure)}")
        width = merged.get("width", FIGURE_WIDTH)
        if not isinstance(width, int) or isinstance(width, bool) or width <= 0:
            raise ConfigError(f"{name}: width must be a positive number of pixels, got {width!r}")
    else:
        if "width" in entry:
            raise ConfigError(f"{name}: width is for a figure row (one with `figure`)")
        merged = {**defaults, **entry}
        if "metric" in merged and not merged["metric"]:
            raise ConfigError(f"{name} has neither a metric nor a figure: give it one of them")
    try:
        return Row(paper=title, **merged)
    except TypeError as err:  # a missing field (row, config) or an unknown key
        raise ConfigError(f"{name}: {err}") from None


def _get(data: dict, dotted: str) -> Any:
    node: Any = data
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """{dotted key: leaf value}; an empty mapping has no leaves (options all at their defaults, as if unset)."""
    out = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, path + "."))
        else:
            out[path] = value
    return out


def _shown(flat: dict[str, Any], key: str) -> str:
    """A setting as the deviations column shows it; a key absent from `flat` (a free-form option) is its default."""
    return repr(flat[key]) if key in flat else "not set: its default"


def config_deviations(run_config: dict, config_path: Path, sets: tuple[str, ...] = ()) -> list[str]:
    """The keys where the run's resolved config differs from `config_path` at its full budget. Keys the run's
    config lacks (added to the schema after it ran) take their defaults; settings that do not change the result
    (`NOT_PROTOCOL`: progress bars, threads, device, --no-eval, the gaps command's options) are left out, and so
    are the keys under `sets` (which an experiment sets for each of its runs: they are the row, not a deviation)."""
    from vaelab.config import config_from_dict, load_config

    try:
        budget = "full" if "full" in (yaml.safe_load(config_path.read_text()).get("budgets") or {}) else None
        protocol = _flatten(load_config(config_path, budget=budget).to_dict())
        ran = _flatten(config_from_dict(run_config).to_dict())
    except (OSError, ConfigError) as err:
        return [f"config {config_path} cannot be read ({err})"]
    keys = sorted(set(protocol) | set(ran))
    return [
        f"{k} = {_shown(ran, k)} (protocol {_shown(protocol, k)})"
        for k in keys
        if ran.get(k) != protocol.get(k) and k not in PROTOCOL_KEYS and not k.startswith((*NOT_PROTOCOL, *sets))
    ]


def _hours(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def _eval_wall(result: dict) -> str:
    """An evaluation's time: `seconds_total` where it continued from saved batches (its own time and theirs), with
    the number of batches read back whose time is not known (written by an earlier vaelab, or an older result
    that recorded only its own call's `seconds`)."""
    seconds = result.get("seconds_total", result.get("seconds"))
    if not isinstance(seconds, (int, float)):
        return ""
    resumed = result.get("batches_resumed") or 0
    untimed = result.get("batches_untimed", resumed if "seconds_total" not in result else 0) or 0
    return _hours(seconds) + (f" + {untimed} untimed batch{'es' * (untimed > 1)}" if untimed else "")


def row_dir(results: Path, row: Row) -> Path:
    """The run directory of `row`: its config's results, or the `run` inside them."""
    run = result_dir(results, row.config)
    return run / row.run if row.run else run


def figure_status(row: Row, results: Path) -> dict[str, Any]:
    """A figure row's item: which of its pictures exist (paths relative to `results`), and its status: "shown"
    (all), "partly drawn" (some), else "in flight" (a checkpoint shipped) or "not run"."""
    run = row_dir(results, row)
    rel = run.relative_to(results).as_posix()
    present = [f"{rel}/{f}" for f in row.figure if (run / f).is_file()]
    missing = [f"{rel}/{f}" for f in row.figure if not (run / f).is_file()]
    if not missing:
        status = "shown"
    elif present:
        status = f"partly drawn ({len(present)} of {len(row.figure)})"
    else:
        status = "in flight (checkpoint shipped)" if (run / "checkpoints").is_dir() else "not run"
    return {"row": row.row, "dir": rel, "status": status, "present": present, "missing": missing}


def _image(path: str, alt: str, width: int) -> str:
    """An HTML <img>: unlike Markdown's ![alt](path) it takes a width; `path` relative to the README."""
    return f'<img src="{html.escape(path, quote=True)}" alt="{html.escape(alt, quote=True)}" width="{width}">'


def render_figures(rows: list[Row], results: Path) -> list[str]:
    """The README's list of a table's figure rows: each picture that exists shown at `row.width` pixels, each one
    missing named, with the command that draws them (and its projected cost while any is missing)."""
    lines = []
    for row in rows:
        s = figure_status(row, results)
        name = f"[{row.row}]({s['dir']}/)" if s["present"] else row.row
        text = f"- **{name}**: {s['status']}"
        if s["missing"]:
            text += " (" + ", ".join(f"`{m}`" for m in s["missing"]) + ")"
        text += f". Drawn by `{' '.join(row.command.split())}`"
        if s["missing"] and row.projected:
            text += f" (projected: {' '.join(row.projected.split())})"
        text += "."
        if row.deviations:
            text += " Deviations: " + "; ".join(row.deviations) + "."
        if row.notes:
            text += " " + " ".join(row.notes.split())
        lines.append(text)
        if s["present"]:  # a paragraph of the item (indented): the pictures side by side, wrapping
            lines += ["", "  " + " ".join(_image(p, p, row.width) for p in s["present"]), ""]
    return lines[:-1] if lines and not lines[-1] else lines


def row_status(row: Row, results: Path) -> dict[str, Any]:
    """Everything the README's line for `row` shows, read from `results/<mirror>/`."""
    from vaelab.train.trainer import read_jsonl  # here: the command line's parser imports this module, not torch

    root = repo_root(results)
    run = row_dir(results, row)
    out: dict[str, Any] = {"row": row.row, "paper": row.value, "dir": run.relative_to(results).as_posix()}
    fill = row.command or f"vaelab train {row.config} --budget full --run-dir {run.relative_to(root).as_posix()}"
    eval_path = run / (row.source or f"eval-{row.split}.json")
    if not (run / "config.yaml").is_file() or not eval_path.is_file():
        in_flight = (run / "checkpoints").is_dir()
        if in_flight:  # a checkpoint shipped to go on from: resuming is the command that fills the row
            fill = f"vaelab train --resume {run.relative_to(root).as_posix()}"
        why = "in flight (checkpoint shipped)" if in_flight else "not run"
        out.update(status=why, fill=fill, projected=row.projected)
        if in_flight:
            metrics = read_jsonl(run / "metrics.jsonl")
            out["epochs"] = metrics[-1]["epoch"] if metrics else 0
        return out
    result = json.loads(eval_path.read_text())
    run_cfg = yaml.safe_load((run / "config.yaml").read_text())
    value = _get(result, row.metric)
    se = _get(result, row.se_metric) if row.se_metric else None
    ours = None if value is None else row.scale * value
    out["vaelab"], out["se"] = ours, (None if se is None else abs(row.scale) * se)
    exact = _get(result, row.exact_metric) if row.exact_metric else None
    out["exact"] = None if exact is None else row.scale * exact
    out["test_points"] = result.get("n")  # every result file vaelab writes names its number of points "n"
    out["eval_wall"] = _eval_wall(result)
    out["is_samples"] = result.get("is_samples", result.get("siwae_samples"))
    deviations = list(row.deviations)
    deviations += config_deviations(run_cfg, root / row.config, tuple(row.sets))
    want_n, want_k = row.protocol.get("test_points"), row.protocol.get("is_samples")
    if want_n and out["test_points"] and out["test_points"] < want_n:
        deviations.append(f"{out['test_points']} of {want_n} test points")
    if want_k and out["is_samples"] and out["is_samples"] != want_k:
        deviations.append(f"IS with k = {out['is_samples']} (protocol {want_k})")
    metrics = read_jsonl(run / "metrics.jsonl")
    sessions = (
        json.loads((run / "provenance.json").read_text())["sessions"] if (run / "provenance.json").is_file() else []
    )
    if metrics:
        best = min((m for m in metrics if "valid_loss" in m), key=lambda m: m["valid_loss"], default=None)
        out["epochs"] = f"{metrics[-1]['epoch']}" + (f" (best {best['epoch']})" if best else "")
    if sessions:
        last = sessions[-1]
        seconds = [s.get("wall_seconds") or s.get("training_seconds_to_checkpoint") or 0 for s in sessions]
        out["wall"] = _hours(sum(seconds))
        out["threads"] = ", ".join(sorted({str(s.get("threads")) for s in sessions}))
        out["commit"] = ", ".join(
            dict.fromkeys((s.get("commit") or "?")[:7] + ("+dirty" if s.get("dirty") else "") for s in sessions)
        )
        out["machine"] = last.get("machine", {}).get("cpu")
        steps = [m["steps_per_s"] for m in metrics if "steps_per_s" in m]
        if steps:
            out["steps_per_s"] = sorted(steps)[len(steps) // 2]
        if not last.get("finished_training", True):
            deviations.append(f"training not finished ({last.get('stop_reason') or 'stopped'})")
        out["stop"] = last.get("stop_reason")
    else:
        deviations.append("no provenance.json: command, commit and wall time unknown")
    out["deviations"] = deviations
    if ours is not None and row.value is not None:
        diff = ours - row.value if row.higher_is_better else row.value - ours
        out["delta"] = diff  # positive: better than the paper
        out["goal"] = "yes" if diff >= -row.tolerance else "no"
    if ours is not None and row.goal_against == "exact":
        gap = None if out.get("exact") is None else abs(ours - out["exact"])
        out["goal"] = "" if gap is None else ("yes" if gap <= row.tolerance else "no") + f" ({gap:.3f} from exact)"
    out["status"] = "done"
    return out


def _num(x: Any, digits: int = 2) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def render(tables: dict[str, list[Row]], results: Path) -> str:
    """results/README.md."""
    lines = [
        "# Results ledger",
        "",
        "Generated by `vaelab ledger build` from `results/ledger.yaml` and the run directories below it; do not edit.",
        "Each `results/G/NAME/` is the run of `configs/G/NAME.yaml`: `vaelab evaluate results/G/NAME` recomputes",
        "its number from the shipped weights (`vaelab ledger verify` compares them point by point), and",
        "`vaelab sample results/G/NAME` draws from them. `delta` is vaelab minus the paper, signed so that positive",
        "is better; `goal` says whether the row is within its tolerance of the paper, or better (of the exact value,",
        "where the row says so). Wall time is the",
        "sum over the `vaelab train` sessions in `provenance.json` (training; the earliest rows' sessions also took in",
        "the final evaluation), `eval` the evaluation's own time (`seconds` in the result file; for one continued",
        "from saved batches, `seconds_total`, with the batches whose time was not recorded counted beside it). A",
        "row to fill is trained with the command shown (one thread: `OMP_NUM_THREADS=1`), then shipped with",
        "`vaelab ledger add RUN_DIR CONFIG` and the README rebuilt with `vaelab ledger build`.",
        "",
    ]
    for title, all_rows in tables.items():
        lines += [f"## {title}", ""]
        rows = [row for row in all_rows if not row.is_figure]
        figures = [row for row in all_rows if row.is_figure]
        if not rows:  # a table of figures alone
            lines += [*render_figures(figures, results), ""]
            continue
        exact = any(row.exact_metric for row in rows)  # a column for the exact value, where a table has one
        head = ["row", "paper", "vaelab", "± se", *(["exact"] if exact else []), "delta", "goal", "test points"]
        head += ["IS k", "epochs", "wall", "eval", "threads", "steps/s", "commit", "deviations from the protocol"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        pending = []
        for row in rows:
            s = row_status(row, results)
            if s["status"] != "done":
                cells = [row.row, _num(row.value), s["status"], *[""] * (len(head) - 3)]
                cells[head.index("epochs")] = str(s.get("epochs", ""))
                cells[-1] = "; ".join(row.deviations)
                pending.append((row, s))
            else:
                cells = [
                    f"[{row.row}]({s['dir']}/)",
                    _num(row.value, row.digits),
                    _num(s.get("vaelab"), row.digits),
                    _num(s.get("se"), row.digits),
                    *([_num(s.get("exact"), row.digits)] if exact else []),
                    _num(s.get("delta"), row.digits),
                    s.get("goal", ""),
                    str(s.get("test_points", "")),
                    str(s.get("is_samples") or ""),  # blank for a result without IS (AIS, gaps)
                    str(s.get("epochs", "")),
                    s.get("wall", ""),
                    s.get("eval_wall", ""),
                    s.get("threads", ""),
                    _num(s.get("steps_per_s"), 0),
                    s.get("commit", ""),
                    "; ".join(s["deviations"]) or "none",
                ]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        noted = [row for row in rows if row.notes]
        if noted:
            lines += ["", "Notes:", ""]
            lines += [f"- {row.row}: {' '.join(row.notes.split())}" for row in noted]
        if pending:
            lines += ["", "Rows to fill:", ""]
            for row, s in pending:
                cost = f" (projected: {s['projected']})" if s.get("projected") else ""
                lines.append(f"- {row.row}: `{s['fill']}`{cost}")
        if figures:
            lines += ["", "Figures:", "", *render_figures(figures, results)]
        lines.append("")
    machines = sorted(
        {
            s.get("machine", {}).get("cpu", "?")
            for p in results.rglob("provenance.json")
            for s in json.loads(p.read_text()).get("sessions", [])
        }
    )
    if machines:
        lines += ["Machines: " + "; ".join(machines) + ".", ""]
    return "\n".join(lines)


def build(results: Path) -> Path:
    text = render(read_catalogue(results), results)
    out = results / "README.md"
    out.write_text(text)
    return out


def _nested_runs(path: Path) -> list[Path]:
    """The run directories shipped inside `path` (an ablation's `results/G/NAME/RUN`), which replacing `path`'s
    own run must keep."""
    return [d for d in sorted(path.iterdir()) if (d / "config.yaml").is_file()] if path.is_dir() else []


def add(
    run_dir: Path, config: str, results: Path, checkpoint: bool = False, run: str | None = None, last: bool = False
) -> Path:
    """Copy `run_dir` into `results/<mirror of config>` (or into its subdirectory `run`: an ablation, a row's
    `run`); without `checkpoint` its checkpoints stay behind (a finished run), with it only the latest one goes (a
    run to resume in a later session). With `last`, the latest checkpoint's weights go too, as `last.safetensors`
    (the final weights of a run trained for a fixed number of epochs, beside its best validation ones: `--checkpoint
    last` reads them). Runs shipped inside the old copy (ablations) that the new one does not hold are kept."""
    from vaelab.recording import LAST_WEIGHTS
    from vaelab.train.checkpoint import digest_path, latest_checkpoint

    if run is not None and (not run or Path(run).name != run or run in (".", "..")):
        raise ConfigError(f"--run {run!r} must be one directory name (the ledger row's `run`), without slashes")

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file() and not _nested_runs(run_dir):
        raise RunDirError(
            f"{str(run_dir)!r} is not a vaelab run directory (no config.yaml in it) nor an experiment's directory of "
            "runs (none of its subdirectories has one)"
        )
    if checkpoint and not (run_dir / "config.yaml").is_file():
        raise RunDirError(f"{str(run_dir)!r} is an experiment's directory: ship it when it is finished")
    if not (repo_root(results) / config).is_file():
        raise ConfigError(f"config {config!r} does not exist under {repo_root(results)}")
    dest = result_dir(results, config)
    if run:
        dest = dest / run
    if dest.resolve() == run_dir.resolve():  # replacing it by a copy without its checkpoints would lose them
        raise RunDirError(f"{str(run_dir)!r} is already where it would be shipped: nothing to copy")
    tmp = Path(tempfile.mkdtemp(prefix=".add-", dir=dest.parent if dest.parent.exists() else None))
    try:
        shutil.copytree(run_dir, tmp / "run", ignore=shutil.ignore_patterns(*SKIP, "*.tmp"))
        latest = latest_checkpoint(run_dir / "checkpoints") if checkpoint or last else None
        if checkpoint:
            if latest is None:
                raise RunDirError(f"{str(run_dir)!r} has no checkpoint to ship")
            shutil.copytree(latest, tmp / "run" / "checkpoints" / latest.name)
            (tmp / "run" / "checkpoints" / "latest").write_text(latest.name + "\n")
        if last:
            if latest is None:
                raise RunDirError(f"{str(run_dir)!r} has no checkpoint whose weights --last could ship")
            shutil.copy2(latest / "model.safetensors", tmp / "run" / LAST_WEIGHTS)
            listed = digest_path(latest / "model.safetensors")
            if listed.is_file():
                digest = listed.read_text().split()[0]
                digest_path(tmp / "run" / LAST_WEIGHTS).write_text(f"{digest}  {LAST_WEIGHTS}\n")
        for nested in _nested_runs(dest):  # ablations shipped inside the old copy stay
            if not (tmp / "run" / nested.name).exists():
                shutil.copytree(nested, tmp / "run" / nested.name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        old = dest.with_name(dest.name + ".old")
        if dest.exists():
            dest.rename(old)
        (tmp / "run").rename(dest)
        if old.exists():
            shutil.rmtree(old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def verify(result: Path, subset: int | None, device: str | None, progress: bool) -> dict:
    """Re-evaluate a shipped run from its weights (in a scratch copy, so the shipped files stay as they are) on
    the first `subset` points and compare with the shipped per-example values of the same points.

    On the shipped evaluation's own points (`subset` None) the draws are the same, so the numbers agree to float
    round-off; on fewer points the draws differ, and the paired difference must be within 3 of its standard
    errors."""
    import torch

    from vaelab import recording
    from vaelab.app import runs
    from vaelab.stats import mean_se
    from vaelab.train.checkpoint import digest_path

    shipped = torch.load(result / "eval-test-per-example.pt")["log_likelihood"]
    cfg = recording.read_run_config(result)
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "run"
        copy.mkdir()
        digest = digest_path(result / "best.safetensors")  # checked when the weights load, where one was shipped
        for path in (result / "config.yaml", result / "best.safetensors", *([digest] if digest.is_file() else [])):
            shutil.copy2(path, copy / path.name)
        run = recording.load_run(copy, "best", device)
        e = cfg.eval
        n = subset or int(shipped.numel())
        again = runs.evaluate(run, "test", e.is_samples, n, e.batch_size, e.max_elements, progress)
        redo = torch.load(copy / "eval-test-per-example.pt")["log_likelihood"]
    ref = shipped[: redo.numel()]
    diff = redo - ref
    se_diff = mean_se(diff)[1] if diff.numel() > 1 else 0.0  # one point: only round-off is allowed
    return {
        "n": redo.numel(),
        "shipped": float(ref.mean()),
        "recomputed": again["log_likelihood"],
        "difference": float(diff.mean()),
        "difference_se": se_diff,
        "se": again.get("log_likelihood_se"),
        "max_abs_difference": float(diff.abs().max()),
    }


def add_parser(sub: Subparsers, add_common: AddCommon) -> None:
    p = sub.add_parser(
        "ledger",
        help="the results ledger: ship a run into results/, write results/README.md, verify shipped numbers",
        description="results/ mirrors configs/: the run of configs/G/NAME.yaml lives in results/G/NAME. 'add' copies "
        "a run there (checkpoints left behind unless --checkpoint), 'build' writes results/README.md from "
        "results/ledger.yaml and the run files, 'verify' recomputes a shipped number from its weights.",
    )
    p.add_argument("action", choices=["add", "build", "verify"])
    p.add_argument("paths", nargs="*", metavar="PATH", help="add: RUN_DIR CONFIG; verify: RESULT_DIR ...")
    p.add_argument("--results", default="results", help="the ledger directory (default: ./results)")
    p.add_argument("--checkpoint", action="store_true", help="add: ship the latest checkpoint (a run to resume)")
    p.add_argument(
        "--last",
        action="store_true",
        help="add: ship the latest checkpoint's weights as last.safetensors (a run trained for a fixed number of "
        "epochs, whose final weights are not its best validation ones)",
    )
    p.add_argument("--run", metavar="RUN", help="add: ship into results/G/NAME/RUN (an ablation; a ledger row's `run`)")
    p.add_argument("--subset", type=positive_int, help="verify: the first N test points (default: the run's)")
    add_common(p)


def command(args: argparse.Namespace) -> int:
    results = Path(args.results).resolve()
    if args.action == "build":
        if args.paths:
            raise ConfigError("vaelab ledger build takes no paths")
        print(f"wrote {build(results)}", file=sys.stderr)
    elif args.action == "add":
        if len(args.paths) != 2:
            raise ConfigError("usage: vaelab ledger add RUN_DIR CONFIG [--run RUN] [--checkpoint] [--last]")
        dest = add(Path(args.paths[0]), args.paths[1], results, args.checkpoint, args.run, args.last)
        print(f"copied {args.paths[0]} to {dest}", file=sys.stderr)
    else:
        if not args.paths:
            raise ConfigError("usage: vaelab ledger verify RESULT_DIR [RESULT_DIR ...]")
        for path in args.paths:
            r = verify(Path(path), args.subset, args.device, not args.no_progress)
            ok = abs(r["difference"]) <= max(3 * r["difference_se"], ROUND_OFF)
            print(
                f"{path}: {r['n']} points, shipped {r['shipped']:.3f}, recomputed {r['recomputed']:.3f}, "
                f"paired difference {r['difference']:+.4f} +- {r['difference_se']:.4f} (max |d| "
                f"{r['max_abs_difference']:.2g}): {'reproduced' if ok else 'NOT reproduced'}"
            )
            if not ok:
                return 1
    return 0
