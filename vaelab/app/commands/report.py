"""`vaelab report RUN [RUN ...]`: the rows of AIWAE's Table 1 (Ding & Freedman sec. 5.2) for trained runs.

From each run's evaluations of the test and train splits (`vaelab evaluate` writes them):

* NLL = -log p^(x) by AIS (`eval-<split>-ais.json`; the paper: 16 chains x 10,000 temperatures x 10 leapfrog steps,
  the `aiwae` preset), test and train;
* NVLB = -L_5000, the IWAE bound with k = 5000 (AIWAE eq. 3; the IS estimate in `eval-<split>.json`), test and train;
* var gap = log p(x) - L_5000 = NVLB(test) - NLL(test) (sec. 5.2; the table's numbers are the test split's), its
  standard error from the per-example differences (both estimates are of the same examples);
* gen gap = NLL(test) - NLL(train), "the difference between the log-likelihood values on test and training data";
  standard error from the two independent means;
* active units: latent units u with A_u = Cov_{x in test}(E_q(z|x)[z_u]) > 0.01 (sec. 5.2, after Burda et al.).

Every number is a mean over the evaluated examples, with its standard error over them (the paper's parentheses
are standard deviations over 5 training runs). The train split is never taken beyond `data.subset`: its rows are
of the images the model was trained on. The numbers are checked against the protocol asked for (k, AIS settings,
examples); a missing or differently made evaluation is a one-line error naming the `vaelab evaluate` command that
makes it, or with `--evaluate` it is run (on the run's best weights; under torchrun, shared out over the ranks as
`vaelab evaluate` shares it). Writes `table1.md` and `table1.csv` (also
the train split's var gap and the settings) into `--out` (default: the runs' common directory).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import sys
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from vaelab.app.commands import AddCommon, Subparsers
from vaelab.app.tables import markdown_table, write_csv
from vaelab.config import Config
from vaelab.errors import ConfigError, RunDirError

if TYPE_CHECKING:  # the parser is built on every `vaelab` call: torch is imported only when a report is made
    from vaelab.mcmc.options import AISOptions

SPLITS = ("test", "train")

#: Markdown columns (keys of `table1_row`) and their headers, in the order of the paper's Table 1.
COLUMNS = {
    "run": "run",
    "objective": "objective",
    "K": "K",
    "T": "T",
    "nll_test": "NLL (test)",
    "nll_train": "NLL (train)",
    "nvlb_test": "NVLB (test)",
    "nvlb_train": "NVLB (train)",
    "var_gap": "var gap",
    "gen_gap": "gen gap",
    "active_units": "active units",
}


def _ais_settings() -> list[str]:
    """The AIS settings that change the estimate (batch_size only groups the work, chunk_elements its chunks)."""
    from vaelab.mcmc.options import AISOptions

    return [f.name for f in dataclasses.fields(AISOptions) if f.name not in ("batch_size", "chunk_elements")]


def _aiwae_preset() -> AISOptions:
    from vaelab.mcmc.options import PRESETS

    return PRESETS["aiwae"]


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How the table's numbers are made: the IWAE-`samples` bound, AIS with `ais` (default: the paper's, preset
    `aiwae`), on the first `subset` examples of each split (None: each run's `eval.subset`, or the whole split)."""

    samples: int = 5000
    ais: AISOptions = dataclasses.field(default_factory=_aiwae_preset)
    subset: int | None = None

    def __post_init__(self) -> None:
        if self.samples < 1 or (self.subset is not None and self.subset < 1):
            raise ConfigError(f"--samples and --subset must be >= 1, got {self.samples} and {self.subset}")


def ais_tokens(options: AISOptions) -> list[str]:
    """The `--ais` tokens that give `options`: the preset `aiwae`, then key=value for every setting it changes."""
    base = _aiwae_preset()
    changed = [name for name in _ais_settings() if getattr(options, name) != getattr(base, name)]
    return [
        "aiwae",
        *(f"{name}={'none' if getattr(options, name) is None else getattr(options, name)}" for name in changed),
    ]


@cache
def _split_sizes(name: str, path: str | None, seed: int) -> dict[str, int]:
    from vaelab.data import load_dataset

    return load_dataset(name, path=path, seed=seed).sizes


def examples(cfg: Config, split: str, subset: int | None) -> int:
    """How many examples of `split` the table uses: the first `subset` (else `eval.subset`, else all); for the train
    split at most `data.subset`, the images the run was trained on."""
    limits = [_split_sizes(cfg.data.name, cfg.data.path, cfg.data.seed)[split]]
    limits.append(subset if subset is not None else cfg.eval.subset)
    if split == "train":
        limits.append(cfg.data.subset)
    return min(v for v in limits if v)


def _file(run_dir: Path, split: str, kind: str) -> Path:
    return run_dir / (f"eval-{split}.json" if kind == "is" else f"eval-{split}-ais.json")


def _mismatch(result: dict | None, kind: str, n: int, protocol: Protocol) -> str | None:
    """Why an evaluation (an `eval-*.json`'s contents, None if absent) does not serve the table; None if it does."""
    if result is None or "log_likelihood" not in result:
        return "missing"
    if result.get("n") != n:
        return f"made on {result.get('n')} examples, not {n}"
    if kind == "is":
        k = result.get("is_samples")
        return None if k == protocol.samples else f"made with IWAE-{k}, not IWAE-{protocol.samples}"
    from vaelab.mcmc.options import AISOptions

    settings, defaults = _ais_settings(), AISOptions()  # a setting older files lack had its default value
    differ = [
        f"{name}={result.get(name)}"
        for name in settings
        if result.get(name, getattr(defaults, name)) != getattr(protocol.ais, name)
    ]
    return f"made with other AIS settings ({', '.join(differ)})" if differ else None


def evaluate_command(run_dir: Path, split: str, kind: str, n: int, protocol: Protocol) -> str:
    """The `vaelab evaluate` command that makes the evaluation the table needs (`kind` "is" or "ais")."""
    cmd = f"vaelab evaluate {shlex.quote(str(run_dir))} --split {split} --subset {n}"
    if kind == "is":
        return f"{cmd} --samples {protocol.samples}"
    return f"{cmd} --ais {' '.join(ais_tokens(protocol.ais))}"


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _needed(run_dir: Path, cfg: Config, protocol: Protocol) -> list[tuple[str, str, int, str]]:
    """(split, kind, examples, why) of every evaluation the table still needs from this run."""
    needed = []
    for split in SPLITS:
        n = examples(cfg, split, protocol.subset)
        for kind in ("is", "ais"):
            why = _mismatch(_read(_file(run_dir, split, kind)), kind, n, protocol)
            if why is not None:
                needed.append((split, kind, n, why))
    return needed


def evaluate_missing(
    run_dir: str | Path, protocol: Protocol, device: str | None = None, progress: bool = True, batch_seeds: bool = False
) -> list[Path]:
    """Run the evaluations `run_dir` lacks for the table (IS before AIS, each split), replacing ones made
    otherwise; returns the files written. Under torchrun every rank calls this: rank 0 decides what is needed, and
    each evaluation is shared out over the ranks as `vaelab evaluate` shares it (IS with batch seeds, as
    `batch_seeds` makes it in one process; AIS always by batch) and written by rank 0."""
    from vaelab import distributed, recording
    from vaelab.app import runs

    run_dir = Path(run_dir)
    cfg = recording.read_run_config(run_dir)
    rank0 = distributed.environment()[0] == 0
    device = runs.rank_device(cfg, device)  # under torchrun: starts the process group; this rank's device
    needed = distributed.broadcast_object(distributed.on_rank0(lambda: _needed(run_dir, cfg, protocol)))
    run = recording.load_run(run_dir, "best", device) if needed else None
    e = cfg.eval
    for split, kind, n, why in needed:
        if rank0:
            print(
                f"{run_dir}: {kind.upper()} on {n} {split} examples ({_file(run_dir, split, kind).name} {why})",
                file=sys.stderr,
            )
        if kind == "is":
            runs.evaluate(
                run, split, protocol.samples, n, e.batch_size, e.max_elements, progress, e.predictive_samples,
                batch_seeds=batch_seeds,
            )  # fmt: skip
        else:
            runs.evaluate_ais(run, protocol.ais, split, n, e.batch_size, progress)
    return [_file(run_dir, split, kind) for split, kind, _, _ in needed]


def _paired_se(run_dir: Path, split: str, n: int) -> float:
    """Standard error of the mean of log p^_AIS(x_i) - L_k(x_i) over the split's n examples, from the per-example
    files `vaelab evaluate` writes beside the JSONs (nan when they are absent or of other examples)."""
    import torch

    from vaelab.errors import DataError
    from vaelab.evaluation.paired import paired_difference

    paths = [run_dir / f"eval-{split}-ais-per-example.pt", run_dir / f"eval-{split}-per-example.pt"]
    if n < 2 or not all(p.is_file() for p in paths):
        return math.nan
    ais, iwae = (torch.load(p, weights_only=True)["log_likelihood"] for p in paths)
    if ais.shape != (n,) or iwae.shape != (n,):
        return math.nan
    try:
        return paired_difference(ais, iwae)["se_diff"]
    except DataError:  # a non-finite per-example value: no se to report
        return math.nan


def _training(cfg: Config) -> dict:
    """The objective and its K (chains, or samples) and T (temperatures; blank without annealing)."""
    from vaelab.train.trainer import build_objective

    objective = build_objective(cfg)
    k = getattr(objective, "chains", getattr(objective, "samples", ""))
    return {"objective": cfg.objective.type, "K": k, "T": getattr(objective, "temperatures", "")}


def table1_row(run_dir: str | Path, protocol: Protocol | None = None) -> dict:
    """One run's row of Table 1 (nats; `<column>_se` its standard error), with the settings it was made with.
    Raises `RunDirError` naming the `vaelab evaluate` commands to run when an evaluation is missing or was made
    with other settings than `protocol`."""
    from vaelab.recording import read_run_config

    run_dir, protocol = Path(run_dir), protocol or Protocol()
    cfg = read_run_config(run_dir)
    needed = _needed(run_dir, cfg, protocol)
    if needed:
        split, kind, _, why = needed[0]
        commands = " && ".join(evaluate_command(run_dir, s, k, n, protocol) for s, k, n, _ in needed)
        what = f"{run_dir}: {_file(run_dir, split, kind).name} {why}"
        raise RunDirError(f"{what}; run: {commands} (or add --evaluate to 'vaelab report')")
    ev = {(split, kind): _read(_file(run_dir, split, kind)) for split in SPLITS for kind in ("is", "ais")}
    row = {"run": run_dir.name, **_training(cfg)}
    for split in SPLITS:
        row[f"nll_{split}"] = -ev[split, "ais"]["log_likelihood"]
        row[f"nll_{split}_se"] = ev[split, "ais"]["log_likelihood_se"]
    for split in SPLITS:
        row[f"nvlb_{split}"] = -ev[split, "is"]["log_likelihood"]
        row[f"nvlb_{split}_se"] = ev[split, "is"]["log_likelihood_se"]
    row["var_gap"] = row["nvlb_test"] - row["nll_test"]
    row["var_gap_se"] = _paired_se(run_dir, "test", ev["test", "ais"]["n"])
    row["gen_gap"] = row["nll_test"] - row["nll_train"]
    row["gen_gap_se"] = math.hypot(row["nll_test_se"], row["nll_train_se"])
    row["active_units"] = ev["test", "is"]["active_units"]
    row["latent_dim"] = ev["test", "is"]["latent_dim"]
    row["var_gap_train"] = row["nvlb_train"] - row["nll_train"]
    row["var_gap_train_se"] = _paired_se(run_dir, "train", ev["train", "ais"]["n"])
    row.update({f"n_{split}": ev[split, "ais"]["n"] for split in SPLITS})
    row["is_samples"] = protocol.samples
    row.update({f"ais_{name}": getattr(protocol.ais, name) for name in ("chains", "temps", "leapfrog", "init")})
    return row


def _cell(row: dict, key: str) -> str:
    value, se = row[key], row.get(f"{key}_se")
    if key == "active_units":
        return f"{value}/{row['latent_dim']}"
    if isinstance(value, float):
        return f"{value:.2f}" if se is None or math.isnan(se) else f"{value:.2f} ± {se:.2f}"
    return str(value)


def markdown(rows: list[dict], protocol: Protocol) -> str:
    """Table 1's columns, one row per run, and a note on how the numbers were made."""
    cells = [{key: _cell(r, key) for key in COLUMNS} for r in rows]
    a = protocol.ais
    n = {split: sorted({r[f"n_{split}"] for r in rows}) for split in SPLITS}
    note = (
        f"\nNats; mean ± standard error over the examples (test: {', '.join(map(str, n['test']))}, train: "
        f"{', '.join(map(str, n['train']))}). NLL: AIS, {a.chains} chains x {a.temps} temperatures ({a.schedule}) x "
        f"{a.leapfrog} leapfrog steps from the {a.init}, acceptance {a.target_acceptance}. NVLB: -L_k, the IWAE bound "
        f"with k = {protocol.samples}. var gap = NVLB(test) - NLL(test) (se of the paired per-example differences); "
        "gen gap = NLL(test) - NLL(train); active units of the test split (Cov_x E_q[z_u] > 0.01). "
        "AIWAE (Ding & Freedman) Table 1.\n"
    )
    return markdown_table(cells, list(COLUMNS), list(COLUMNS.values())) + note


def write_report(rows: list[dict], protocol: Protocol, out: str | Path) -> tuple[Path, Path]:
    """`table1.csv` (every column of the rows) and `table1.md` (`markdown`) in `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table1.md").write_text(markdown(rows, protocol))
    return write_csv(rows, out / "table1.csv"), out / "table1.md"


def add_parser(sub: Subparsers, add_common: AddCommon) -> None:
    """The `report` subcommand's parser."""
    r = sub.add_parser(
        "report",
        help="AIWAE Table 1 rows of trained runs: NLL (AIS), NVLB (IWAE-5000), var gap, gen gap, active units",
        description="Tabulate, one row per run, the columns of AIWAE's Table 1 on the test and train splits: NLL "
        "(-log p(x) by AIS), NVLB (-L_5000, the IWAE-5000 bound), var gap = NVLB(test) - NLL(test), gen gap = "
        "NLL(test) - NLL(train), and the active units, with standard errors over the examples, from each run's "
        "eval-<split>.json and eval-<split>-ais.json. Evaluations that are missing or made with other settings are "
        "an error naming the 'vaelab evaluate' commands to run; --evaluate runs them (best weights). Writes "
        "table1.md and table1.csv and prints the Markdown table.",
        epilog="Example (small AIS, 100 examples; a CPU's minutes): vaelab report runs/aiwae_mnist-* --evaluate "
        "--subset 100 --ais aiwae temps=100",
    )
    r.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="directories written by 'vaelab train'")
    r.add_argument(
        "--evaluate", action="store_true", help="run the missing evaluations (replacing ones made otherwise)"
    )
    r.add_argument("--samples", type=int, default=5000, help="k of the IWAE bound, the NVLB (default: 5000, the paper)")
    r.add_argument(
        "--subset",
        type=int,
        help="use the first N examples of each split (default: each run's eval.subset, else the whole split; the "
        "train split at most data.subset, the images trained on)",
    )
    r.add_argument(
        "--ais",
        nargs="+",
        metavar="PRESET|KEY=VALUE",
        help="AIS settings of the NLL as for 'vaelab evaluate --ais' (default: aiwae, the paper's 16 chains x 10000 "
        "temperatures x 10 leapfrog steps); e.g. --ais aiwae temps=100 (give the RUN_DIRs first)",
    )
    r.add_argument(
        "--batch-seeds",
        action="store_true",
        help="with --evaluate: seed each batch of points of the IS evaluation by its index, as under torchrun, so that "
        "its per-point values are the same for any number of processes (as 'vaelab evaluate --batch-seeds')",
    )
    r.add_argument("--out", help="where to write table1.md and table1.csv (default: the runs' common directory)")
    add_common(r)


def command(args: argparse.Namespace) -> int:
    """Run `vaelab report`: evaluate if asked, then write and print the table."""
    from vaelab import distributed
    from vaelab.mcmc.options import parse_ais_options

    protocol = Protocol(args.samples, parse_ais_options(args.ais or []), args.subset)
    if args.evaluate:
        for run_dir in args.run_dirs:
            evaluate_missing(run_dir, protocol, args.device, not args.no_progress, args.batch_seeds)
    if distributed.environment()[0] != 0:  # under torchrun: rank 0 alone writes and prints the table
        return 0
    rows = [table1_row(run_dir, protocol) for run_dir in args.run_dirs]
    out = Path(args.out) if args.out else Path(os.path.commonpath([Path(p).resolve() for p in args.run_dirs]))
    csv_path, md_path = write_report(rows, protocol, out)
    print(md_path.read_text(), end="")
    print(f"wrote {csv_path}, {md_path}", file=sys.stderr)
    return 0
