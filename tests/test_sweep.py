"""`vaelab sweep`: a grid of runs tabulated from each run's eval-<split>.json, resumable; and the one-line error
for a mixture posterior trained with elbo/iwae."""

from __future__ import annotations

import csv
import json

from vaelab.cli import main
from vaelab.sweep import parse_axis

TINY = [
    "--budget",
    "quick",
    "--set",
    "train.epochs=1",
    "--set",
    "data.subset=64",
    "--set",
    "eval.is_samples=20",
    "--set",
    "eval.subset=40",
    "--no-progress",
]


def test_parse_axis_reads_yaml_values_and_completes_model_keys():
    axis = parse_axis("posterior.components=1,2,5")
    assert axis.key == "model.posterior.components" and axis.values == [1, 2, 5] and axis.label == "components"
    assert parse_axis("objective.options.samples=1,10").key == "objective.options.samples"
    assert parse_axis("train.lr=1e-3,0.01").values == [1e-3, 0.01]


def test_sweep_tabulates_every_point_and_reuses_finished_runs(tmp_path, capsys):
    args = ["sweep", "configs/siwae/toy_abs.yaml", "--grid", "posterior.components=1,2", "--objectives", "selbo,siwae"]
    assert main([*args, "--out", str(tmp_path), *TINY]) == 0
    rows = list(csv.DictReader((tmp_path / "sweep.csv").open()))
    assert [(r["objective"], r["components"]) for r in rows] == [
        ("selbo", "1"),
        ("selbo", "2"),
        ("siwae", "1"),
        ("siwae", "2"),
    ]
    for r in rows:
        result = json.loads((tmp_path / r["run"] / "eval-train.json").read_text())
        assert float(r["siwae_log_likelihood"]) == result["siwae_log_likelihood"]
        assert float(r["log_likelihood"]) == result["log_likelihood"]
    assert (tmp_path / "sweep.png").is_file() and "| objective | components |" in (tmp_path / "sweep.md").read_text()
    # a finished point is reused, not retrained; numbers another evaluator adds become columns
    first = tmp_path / rows[0]["run"] / "eval-train.json"
    result = json.loads(first.read_text())
    result["calibration"] = {"ece": 0.25}
    first.write_text(json.dumps(result))
    mtime = (tmp_path / rows[0]["run"] / "metrics.jsonl").stat().st_mtime
    assert main([*args, "--out", str(tmp_path), *TINY]) == 0
    rows = list(csv.DictReader((tmp_path / "sweep.csv").open()))
    assert rows[0]["calibration.ece"] == "0.25" and rows[1]["calibration.ece"] == ""
    assert (tmp_path / rows[0]["run"] / "metrics.jsonl").stat().st_mtime == mtime
    assert "calibration.ece" in capsys.readouterr().out  # the printed Markdown table


def test_elbo_on_a_mixture_posterior_is_a_one_line_config_error(tmp_path, capsys):
    code = main(
        ["train", "configs/siwae/toy_abs.yaml", "--set", "objective.type=elbo", "--run-dir", str(tmp_path), *TINY]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        code == 2 and "set objective.type to selbo or siwae" in err[-1] and err[-1].startswith("vaelab train: error:")
    )
