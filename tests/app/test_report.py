"""`vaelab report`: AIWAE Table 1 rows from a run's evaluations. The numbers in the table are those of the eval
JSONs (NLL = -AIS, NVLB = -IWAE-k) and the gaps their differences (var gap = NVLB(test) - NLL(test), gen gap =
NLL(test) - NLL(train), AIWAE sec. 5.2), with the standard errors computed from the per-example files; a missing
or differently made evaluation is a one-line error whose commands, run as given, make the report work."""

from __future__ import annotations

import csv
import json
import math
import shlex
import shutil

import pytest
import torch

from vaelab.app import cli, runs
from vaelab.app.commands.report import COLUMNS, ais_tokens, examples
from vaelab.config import load_config
from vaelab.mcmc.options import PRESETS, AISOptions, parse_ais_options

TINY = [
    "data.subset=64",
    "data.valid_subset=16",
    "data.batch_size=32",
    "model.latent_dim=4",
    "model.encoder={type: mlp, hidden: [16], activation: tanh}",
    "model.decoder={type: mlp, hidden: [16], activation: tanh}",
    "objective.type=aiwae",
    "objective.options={chains: 2, temperatures: 3, leapfrog_steps: 2}",
    "train.progress=false",
    "train.epochs=1",
]
AIS = ["--ais", "aiwae", "chains=3", "temps=5", "leapfrog=2"]
PROTOCOL = ["--samples", "20", "--subset", "8"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny AIWAE run (K = 2 chains, T = 3 temperatures), trained, not evaluated."""
    cfg = load_config(None, TINY)
    path = runs.new_run_dir(cfg, tmp_path_factory.mktemp("runs") / "trained")
    runs.train(cfg, path)
    return path


def _copy(run, dest):
    shutil.copytree(run, dest)
    return dest


def _eval(run, split, kind):
    name = f"eval-{split}.json" if kind == "is" else f"eval-{split}-ais.json"
    return json.loads((run / name).read_text())


def test_rows_are_the_evaluations_and_their_differences(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path / "runs" / "a")
    assert cli.main(["report", str(run), "--evaluate", *PROTOCOL, *AIS, "--no-progress"]) == 0
    # --evaluate made each evaluation as asked: IWAE-20 and AIS (3 x 5 x 2) on the first 8 examples of each split
    ev = {(s, k): _eval(run, s, k) for s in ("test", "train") for k in ("is", "ais")}
    assert all(r["n"] == 8 for r in ev.values())
    assert ev["test", "is"]["is_samples"] == ev["train", "is"]["is_samples"] == 20
    for split in ("test", "train"):
        assert (ev[split, "ais"]["chains"], ev[split, "ais"]["temps"], ev[split, "ais"]["leapfrog"]) == (3, 5, 2)

    (row,) = list(csv.DictReader((run / "table1.csv").open()))  # one run: written into its own directory
    got = {k: float(v) for k, v in row.items() if k not in ("run", "objective", "ais_init")}
    assert (row["run"], row["objective"], got["K"], got["T"]) == ("a", "aiwae", 2, 3)
    for split in ("test", "train"):
        assert got[f"nll_{split}"] == -ev[split, "ais"]["log_likelihood"]
        assert got[f"nll_{split}_se"] == ev[split, "ais"]["log_likelihood_se"]
        assert got[f"nvlb_{split}"] == -ev[split, "is"]["log_likelihood"]
        assert got[f"nvlb_{split}_se"] == ev[split, "is"]["log_likelihood_se"]
        # var gap log p(x) - L_k: the difference of the JSONs' means; se of the paired per-example differences
        gap = ev[split, "ais"]["log_likelihood"] - ev[split, "is"]["log_likelihood"]
        ais = torch.load(run / f"eval-{split}-ais-per-example.pt")["log_likelihood"].double()
        iwae = torch.load(run / f"eval-{split}-per-example.pt")["log_likelihood"].double()
        key = "var_gap" if split == "test" else "var_gap_train"
        assert got[key] == pytest.approx(gap, abs=1e-9)
        assert got[key] == pytest.approx(float((ais - iwae).mean()), abs=1e-4)
        assert got[f"{key}_se"] == pytest.approx(float((ais - iwae).std() / math.sqrt(8)), rel=1e-9)
    gen = ev["train", "ais"]["log_likelihood"] - ev["test", "ais"]["log_likelihood"]
    assert got["gen_gap"] == pytest.approx(gen, abs=1e-9)
    se = math.sqrt(ev["test", "ais"]["log_likelihood_se"] ** 2 + ev["train", "ais"]["log_likelihood_se"] ** 2)
    assert got["gen_gap_se"] == pytest.approx(se, rel=1e-12)
    assert (got["active_units"], got["latent_dim"]) == (ev["test", "is"]["active_units"], 4)
    assert (got["n_test"], got["n_train"], got["is_samples"], got["ais_chains"], got["ais_temps"]) == (8, 8, 20, 3, 5)

    # the Markdown table: Table 1's columns in its order, value ± se, as printed
    md = (run / "table1.md").read_text()
    head, _, line = md.splitlines()[:3]
    columns = "run | objective | K | T | NLL (test) | NLL (train) | NVLB (test) | NVLB (train) | var gap | gen gap"
    assert head == f"| {columns} | active units |" == "| " + " | ".join(COLUMNS.values()) + " |"
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[list(COLUMNS).index("var_gap")] == f"{got['var_gap']:.2f} ± {got['var_gap_se']:.2f}"
    assert cells[-1] == f"{int(got['active_units'])}/4" and "16 chains" not in md and "3 chains x 5 temperatures" in md
    assert md in capsys.readouterr().out

    # finished evaluations are read, not redone; several runs give a row each, written into their common directory
    other = _copy(run, tmp_path / "runs" / "b")
    stamps = {p: p.stat().st_mtime_ns for p in run.glob("eval-*.json")}
    assert cli.main(["report", str(run), str(other), "--evaluate", *PROTOCOL, *AIS]) == 0
    assert {p: p.stat().st_mtime_ns for p in run.glob("eval-*.json")} == stamps
    rows = list(csv.DictReader((tmp_path / "runs" / "table1.csv").open()))
    assert [r["run"] for r in rows] == ["a", "b"] and rows[0]["var_gap"] == rows[1]["var_gap"] == row["var_gap"]


def test_missing_or_other_evaluations_name_the_commands_to_run(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path / "r")
    assert cli.main(["report", str(run), *PROTOCOL, *AIS]) == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert err.startswith(f"vaelab report: error: {run}: eval-test.json missing; run: vaelab evaluate {run} --split")
    assert err.endswith("(or add --evaluate to 'vaelab report')")
    commands = err.split("; run: ", 1)[1].removesuffix(" (or add --evaluate to 'vaelab report')").split(" && ")
    assert commands == [
        f"vaelab evaluate {run} --split test --subset 8 --samples 20",
        f"vaelab evaluate {run} --split test --subset 8 --ais aiwae chains=3 temps=5 leapfrog=2",
        f"vaelab evaluate {run} --split train --subset 8 --samples 20",
        f"vaelab evaluate {run} --split train --subset 8 --ais aiwae chains=3 temps=5 leapfrog=2",
    ]
    for command in commands:  # run as given, they make what the report needs
        assert cli.main([*shlex.split(command)[1:], "--no-progress"]) == 0
    assert cli.main(["report", str(run), *PROTOCOL, *AIS]) == 0
    capsys.readouterr()

    # evaluations made otherwise (IWAE-20, not IWAE-30; AIS with 3 chains, not 4) are named with the fix
    assert cli.main(["report", str(run), "--samples", "30", "--subset", "8", *AIS]) == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert "eval-test.json made with IWAE-20, not IWAE-30" in err and "--ais" not in err
    assert f"vaelab evaluate {run} --split train --subset 8 --samples 30" in err
    assert cli.main(["report", str(run), *PROTOCOL, *AIS[:2], "chains=4", "temps=5", "leapfrog=2"]) == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert "eval-test-ais.json made with other AIS settings (chains=3)" in err and "--samples" not in err
    assert cli.main(["report", str(run), "--subset", "5", *AIS]) == 2  # other examples (and IWAE-5000 by default)
    assert "eval-test.json made on 8 examples, not 5" in capsys.readouterr().err
    assert cli.main(["report", str(run), "--samples", "0"]) == 2
    assert "--samples and --subset must be >= 1" in capsys.readouterr().err


def test_examples_are_the_subset_and_train_stops_at_the_training_data():
    """Test split: --subset, else eval.subset, else all 10,000; train: never beyond data.subset (64)."""
    cfg = load_config(None, [*TINY, "eval.subset=500"])
    assert [examples(cfg, "test", s) for s in (8, None, 20_000)] == [8, 500, 10_000]
    assert [examples(cfg, "train", s) for s in (8, None, 100)] == [8, 64, 64]
    cfg = load_config(None, [*TINY, "data.subset=null", "eval.subset=null"])
    assert (examples(cfg, "test", None), examples(cfg, "train", None)) == (10_000, 50_000)


@pytest.mark.parametrize(
    "options",
    [
        PRESETS["aiwae"],
        PRESETS["cremer"],
        AISOptions(chains=3, temps=7, init="posterior", adapt=None, step_size=0.05, schedule="sigmoidal"),
    ],
)
def test_ais_tokens_give_back_the_options(options):
    """The --ais part of the commands the report names parses back to the settings it checks for."""
    assert parse_ais_options(ais_tokens(options)) == options
