"""`vaelab sweep`: a grid of runs tabulated from each run's eval-<split>.json, resumable; and the one-line error
for a mixture posterior trained with elbo/iwae."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib.image
import pytest

from vaelab.app.cli import main
from vaelab.app.commands.sweep import figure_panels, parse_axis, parse_reference
from vaelab.errors import ConfigError

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


def test_a_stopped_sweep_keeps_the_table_of_its_finished_points(tmp_path, monkeypatch):
    """The table is rewritten after every point, with the points finished in earlier sweeps (wherever they are in
    the grid) and a list of those not finished; a sweep stopped mid-point keeps it."""
    from vaelab.app.commands import sweep

    overrides = ["train.epochs=1", "data.subset=64", "eval.is_samples=20", "eval.subset=40"]
    grid = [parse_axis("posterior.components=1,2")]
    common = dict(budget="quick", overrides=overrides, out=tmp_path, progress=False)
    sweep.run_sweep("configs/siwae/toy_abs.yaml", grid, ["siwae"], **common)  # finishes the two siwae points
    real, calls = sweep.run_point, []

    def stop_on_the_second(*args, **kwargs):
        calls.append(args[1].name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep, "run_point", stop_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep("configs/siwae/toy_abs.yaml", grid, ["selbo", "siwae"], **common)
    assert calls == ["selbo-components=1", "selbo-components=2"]  # the finished siwae points were not rerun
    rows = list(csv.DictReader((tmp_path / "sweep.csv").open()))
    assert [(r["objective"], r["components"]) for r in rows] == [("selbo", "1"), ("siwae", "1"), ("siwae", "2")]
    assert "Not finished yet (1 of 4 points): selbo-components=2" in (tmp_path / "sweep.md").read_text()
    monkeypatch.setattr(sweep, "run_point", real)
    sweep.run_sweep("configs/siwae/toy_abs.yaml", grid, ["selbo", "siwae"], **common)
    assert len(list(csv.DictReader((tmp_path / "sweep.csv").open()))) == 4
    assert "Not finished" not in (tmp_path / "sweep.md").read_text()


def test_elbo_on_a_mixture_posterior_is_a_one_line_config_error(tmp_path, capsys):
    code = main(
        ["train", "configs/siwae/toy_abs.yaml", "--set", "objective.type=elbo", "--run-dir", str(tmp_path), *TINY]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        code == 2 and "set objective.type to selbo or siwae" in err[-1] and err[-1].startswith("vaelab train: error:")
    )


def test_figure_panels_hold_a_row_per_metric_and_a_column_per_axis():
    axes = [parse_axis("posterior.components=1,5"), parse_axis("objective.options.samples=1,2")]
    rows = [
        {"run": f"{o}-{k}-{t}", "objective": o, "components": k, "samples": t, "accuracy": k + t / 10, "ece": -k}
        for o in ("selbo", "siwae")
        for k in (1, 5)
        for t in (1, 2)
    ]
    refs = {"pyramid": {"accuracy": 0.9}, "bottleneck": {"accuracy": 0.7, "ece": 0.05}}
    panels = figure_panels(rows, axes, ["accuracy", "ece"], refs)
    assert [[(p.xlabel, p.ylabel) for p in row] for row in panels] == [
        [("components", "accuracy"), ("samples", "accuracy")],
        [("components", "ece"), ("samples", "ece")],
    ]
    by_k, by_t = panels[0]
    assert by_k.series["siwae, samples=2"] == ([1.0, 5.0], [1.2, 5.2]) and by_k.logx and by_k.xticks == [1.0, 5.0]
    assert by_t.series["selbo, components=5"] == ([1.0, 2.0], [5.1, 5.2]) and not by_t.logx
    assert len(by_k.series) == len(by_t.series) == 4
    assert by_k.hlines == {"pyramid": 0.9, "bottleneck": 0.7} and panels[1][1].hlines == {"bottleneck": 0.05}
    assert parse_reference(" pyramid = runs/p ") == ("pyramid", Path("runs/p"))
    with pytest.raises(ConfigError, match="LABEL=RUN_DIR"):
        parse_reference("runs/p")


def test_sweep_draws_several_metrics_and_reference_runs(tmp_path, capsys):
    ref = tmp_path / "exact"
    ref.mkdir()
    args = ["sweep", "configs/siwae/toy_abs.yaml", "--grid", "posterior.components=1,2", "--objectives", "siwae"]
    args += ["--out", str(tmp_path / "sweep"), "--reference", f"exact={ref}", *TINY]
    # a reference without its evaluation stops the sweep before any training, with the command that fixes it
    assert main([*args, "--metrics", "siwae_log_likelihood,log_likelihood"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert f"vaelab evaluate {ref} --split train" in err[-1] and not (tmp_path / "sweep").exists()
    (ref / "eval-train.json").write_text(json.dumps({"n": 40, "log_likelihood": -3.25, "note": "text is skipped"}))
    assert main([*args, "--metrics", "siwae_log_likelihood,log_likelihood,no_such_column"]) == 0
    assert "no run has no_such_column" in capsys.readouterr().err
    md = (tmp_path / "sweep" / "sweep.md").read_text()
    assert "Reference runs:" in md and f"| exact | {ref} | 40 | -3.2500 |" in md
    height, width, _ = matplotlib.image.imread(tmp_path / "sweep" / "sweep.png").shape
    assert (height, width) == (2 * 432, 660)  # 2 metrics x 1 axis panels of 5.5 x 3.6 inches at 120 dpi
