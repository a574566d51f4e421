"""The results ledger: `vaelab ledger add / build / verify` on a tiny real run in a scratch repository."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from tests.app.test_cli import vaelab
from vaelab.app.commands.ledger import FIGURE_WIDTH, config_deviations, read_catalogue, render, result_dir
from vaelab.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
CONFIG = {
    "name": "tiny",
    "data": {"name": "mnist_static", "subset": 500, "valid_subset": 200},
    "model": {
        "latent_dim": 4,
        "encoder": {"type": "mlp", "hidden": [32]},
        "decoder": {"type": "mlp", "hidden": [32]},
    },
    "train": {"epochs": 3, "early_stopping": None},
    "eval": {"is_samples": 20, "subset": 40, "grid": 2},
    "budgets": {"full": {"train.epochs": 3}},
}
CATALOGUE = {
    "papers": [
        {
            "title": "Paper X, Table 1",
            "rows": [
                {"row": "tiny VAE", "config": "configs/g/tiny.yaml", "value": -150.0, "tolerance": 0.5,
                 "protocol": {"is_samples": 5000, "test_points": 10000}, "deviations": ["a known one"],
                 "notes": "an ablation said why"},
                {"row": "not yet", "config": "configs/g/other.yaml", "value": -80.0, "projected": "3 h"},
            ],
        }
    ]
}  # fmt: skip


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A scratch repository with configs/g/tiny.yaml, results/ledger.yaml and one trained run (1-2 s)."""
    root = tmp_path_factory.mktemp("repo")
    (root / "configs" / "g").mkdir(parents=True)
    (root / "configs" / "g" / "tiny.yaml").write_text(yaml.safe_dump(CONFIG))
    (root / "results").mkdir()
    (root / "results" / "ledger.yaml").write_text(yaml.safe_dump(CATALOGUE))
    run = root / "run"
    vaelab("train", str(root / "configs" / "g" / "tiny.yaml"), "--budget", "full", "--run-dir", str(run),
           "--no-progress", "--set", "train.lr=1e-3")  # fmt: skip
    return root


def test_result_dir_mirrors_configs(tmp_path):
    assert result_dir(tmp_path, "configs/vae_mnist_static.yaml") == tmp_path / "vae_mnist_static"
    assert result_dir(tmp_path, "configs/vampprior/x.yaml") == tmp_path / "vampprior" / "x"
    with pytest.raises(Exception, match="configs/"):
        result_dir(tmp_path, "elsewhere/x.yaml")


def test_add_build_verify(repo):
    results = repo / "results"
    vaelab("ledger", "add", str(repo / "run"), "configs/g/tiny.yaml", "--results", str(results), cwd=repo)
    shipped = results / "g" / "tiny"
    assert (shipped / "best.safetensors").is_file() and (shipped / "provenance.json").is_file()
    assert (shipped / "training.png").is_file(), "the pictures ship with the run, training.png among them"
    assert not (shipped / "checkpoints").exists(), "a finished run ships without its checkpoints"

    vaelab("ledger", "build", "--results", str(results))
    text = (results / "README.md").read_text()
    ours = json.loads((shipped / "eval-test.json").read_text())
    line = next(line for line in text.splitlines() if line.startswith("| [tiny VAE]"))
    assert f"{ours['log_likelihood']:.2f}" in line and f"{ours['log_likelihood'] + 150.0:.2f}" in line
    assert "40 of 10000 test points" in line and "IS with k = 20 (protocol 5000)" in line
    assert "train.lr = 0.001 (protocol 0.0005)" in line, "a --set beyond the config is a named deviation"
    assert "a known one" in line
    assert "- tiny VAE: an ablation said why" in text
    assert "| not yet | -80.00 | not run" in text
    assert "vaelab train configs/g/other.yaml --budget full --run-dir results/g/other" in text and "3 h" in text

    out = vaelab("ledger", "verify", str(shipped), "--no-progress")  # the same points and draws: exact
    assert "reproduced" in out.stdout and "NOT" not in out.stdout and "max |d| 0)" in out.stdout
    out = vaelab("ledger", "verify", str(shipped), "--subset", "10", "--no-progress")  # other draws: within se
    assert "reproduced" in out.stdout and "NOT" not in out.stdout
    assert json.loads((shipped / "eval-test.json").read_text()) == ours, "verify leaves the shipped files alone"


def test_verify_catches_a_changed_number(repo, tmp_path):
    """Shift the shipped per-example values: verify must refuse them (a check that can fail)."""
    fake = tmp_path / "tiny"
    shutil.copytree(repo / "run", fake, ignore=shutil.ignore_patterns("checkpoints"))
    per = torch.load(fake / "eval-test-per-example.pt")
    per["log_likelihood"] = per["log_likelihood"] + 0.01
    torch.save(per, fake / "eval-test-per-example.pt")
    out = vaelab("ledger", "verify", str(fake), "--no-progress", check=False)
    assert out.returncode == 1 and "NOT reproduced" in out.stdout


def test_add_in_flight_ships_only_the_latest_checkpoint(repo, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    shutil.copytree(repo / "configs", tmp_path / "configs")
    vaelab("ledger", "add", str(repo / "run"), "configs/g/tiny.yaml", "--results", str(results), "--checkpoint")
    shipped = results / "g" / "tiny" / "checkpoints"
    newest = max(p.name for p in (repo / "run" / "checkpoints").iterdir() if p.name.startswith("epoch"))
    assert sorted(p.name for p in shipped.iterdir()) == [newest, "latest"]
    assert (shipped / "latest").read_text().strip() == newest


def test_last_ships_the_final_weights_and_results_say_which_weights_made_them(repo, tmp_path):
    """`ledger add --last` ships the latest checkpoint's weights as last.safetensors (with its digest) and no
    checkpoint; `evaluate --checkpoint last` reads them and its JSON names them and their epoch, as the default
    does for best.safetensors (the best validation epoch); a run without last weights refuses `--checkpoint last`
    in one line, and one with only them says to use it."""
    from vaelab.train.checkpoint import latest_checkpoint

    results = tmp_path / "results"
    results.mkdir()
    shutil.copytree(repo / "configs", tmp_path / "configs")
    vaelab("ledger", "add", str(repo / "run"), "configs/g/tiny.yaml", "--results", str(results), "--last")
    shipped = results / "g" / "tiny"
    latest = latest_checkpoint(repo / "run" / "checkpoints")
    assert not (shipped / "checkpoints").exists()
    assert (shipped / "last.safetensors").read_bytes() == (latest / "model.safetensors").read_bytes()
    digest = (shipped / "last.safetensors.sha256").read_text().split()
    assert digest == [(latest / "model.safetensors.sha256").read_text().split()[0], "last.safetensors"]

    small = ["--subset", "10", "--samples", "5", "--no-progress"]
    vaelab("evaluate", str(shipped), "--checkpoint", "last", *small)
    assert json.loads((shipped / "eval-test.json").read_text())["weights"] == {"file": "last.safetensors", "epoch": 3}
    vaelab("evaluate", str(shipped), *small)
    rows = [json.loads(line) for line in (shipped / "metrics.jsonl").read_text().splitlines()]
    best = min((r["valid_loss"], r["epoch"]) for r in rows if "valid_loss" in r)[1]
    assert json.loads((shipped / "eval-test.json").read_text())["weights"] == {
        "file": "best.safetensors",
        "epoch": best,
    }

    (shipped / "best.safetensors").rename(shipped / "best.aside")  # only the final weights: say how to use them
    proc = vaelab("evaluate", str(shipped), *small, check=False)
    assert proc.returncode == 2 and "use --checkpoint last" in proc.stderr and "Traceback" not in proc.stderr
    (shipped / "best.aside").rename(shipped / "best.safetensors")
    (shipped / "last.safetensors").unlink()
    proc = vaelab("evaluate", str(shipped), "--checkpoint", "last", *small, check=False)
    assert proc.returncode == 2 and "no last weights" in proc.stderr and "Traceback" not in proc.stderr


def test_an_ablation_ships_inside_its_configs_results_and_survives_reshipping_the_run(repo, tmp_path):
    """`--run NAME` ships into results/G/NAME/RUN (a row's `run`); shipping the config's own run again must keep
    it, in flight (its checkpoint) or finished: replacing a directory must never lose the runs shipped in it."""
    results = tmp_path / "results"
    results.mkdir()
    shutil.copytree(repo / "configs", tmp_path / "configs")
    run = repo / "run"
    vaelab("ledger", "add", str(run), "configs/g/tiny.yaml", "--results", str(results), "--run", "ablation_x",
           "--checkpoint")  # fmt: skip
    ablation = results / "g" / "tiny" / "ablation_x"
    assert (ablation / "best.safetensors").is_file() and (ablation / "checkpoints" / "latest").is_file()
    before = sorted(p.relative_to(ablation) for p in ablation.rglob("*"))

    vaelab("ledger", "add", str(run), "configs/g/tiny.yaml", "--results", str(results))
    assert (results / "g" / "tiny" / "best.safetensors").is_file()
    assert sorted(p.relative_to(ablation) for p in ablation.rglob("*")) == before, "the ablation was lost"
    assert not (results / "g" / "tiny" / "checkpoints").exists()

    for bad in ("a/b", "..", ""):
        out = vaelab("ledger", "add", str(run), "configs/g/tiny.yaml", "--results", str(results), "--run", bad,
                     check=False)  # fmt: skip
        assert out.returncode == 2 and "one directory name" in out.stderr and "Traceback" not in out.stderr
    out = vaelab("ledger", "add", str(ablation), "configs/g/tiny.yaml", "--results", str(results), "--run",
                 "ablation_x", check=False)  # fmt: skip
    assert out.returncode != 0 and "already where it would be shipped" in out.stderr
    assert (ablation / "checkpoints" / "latest").is_file(), "a refused add leaves the run alone"


def test_an_experiments_runs_ship_together_with_the_exact_value_beside_each(repo, tmp_path):
    """An experiment that writes several runs (the SIWAE toy: one per estimator) ships as one directory; a row
    names its run and the key of the exact value, which gets its own column."""
    root = tmp_path / "repo"
    shutil.copytree(repo / "configs", root / "configs")
    (root / "results").mkdir()
    toy = tmp_path / "toy"
    for method, value in (("siwae", -1.51), ("selbo", -2.03)):
        shutil.copytree(repo / "run", toy / method)
        result = {"split": "train", "n": 1000, "siwae_samples": 1000000, "siwae_log_likelihood": value,
                  "siwae_log_likelihood_se": 0.01, "exact_log_likelihood": -1.527}  # fmt: skip
        (toy / method / "eval-train.json").write_text(json.dumps(result))
    (toy / "results.md").write_text("table\n")
    rows = [{"row": m, "config": "configs/g/tiny.yaml", "run": m, "split": "train", "value": v,
             "metric": "siwae_log_likelihood", "se_metric": "siwae_log_likelihood_se",
             "exact_metric": "exact_log_likelihood", "goal_against": "exact", "tolerance": 0.02}
            for m, v in (("siwae", -1.505), ("selbo", -2.024))]  # fmt: skip
    catalogue = {"papers": [{"title": "Toy", "rows": rows}]}
    (root / "results" / "ledger.yaml").write_text(yaml.safe_dump(catalogue))
    vaelab("ledger", "add", str(toy), "configs/g/tiny.yaml", "--results", str(root / "results"))
    shipped = root / "results" / "g" / "tiny"
    assert (shipped / "results.md").is_file() and (shipped / "siwae" / "best.safetensors").is_file()
    assert not (shipped / "siwae" / "checkpoints").exists()
    vaelab("ledger", "build", "--results", str(root / "results"))
    text = (root / "results" / "README.md").read_text()
    assert "| row | paper | vaelab | ± se | exact | delta |" in text
    line = next(line for line in text.splitlines() if line.startswith("| [siwae]"))
    assert "| -1.51 | 0.01 | -1.53 | -0.01 | yes (0.017 from exact) |" in line and "| 1000 | 1000000 |" in line
    selbo = next(line for line in text.splitlines() if line.startswith("| [selbo]"))
    assert "| no (0.503 from exact) |" in selbo
    with pytest.raises(Exception, match="nor an experiment"):
        from vaelab.app.commands.ledger import add

        add(tmp_path / "nothing-here", "configs/g/tiny.yaml", root / "results")


def test_config_deviations_and_catalogue(repo):
    run_cfg = yaml.safe_load((repo / "run" / "config.yaml").read_text())
    devs = config_deviations(run_cfg, repo / "configs" / "g" / "tiny.yaml")
    assert devs == ["train.lr = 0.001 (protocol 0.0005)"]
    assert config_deviations(run_cfg, repo / "configs" / "g" / "tiny.yaml", ("train.lr",)) == []  # set per run
    run_cfg["objective"]["options"] = {"samples": 3}  # a free-form option the config leaves to its default
    assert config_deviations(run_cfg, repo / "configs" / "g" / "tiny.yaml", ("train.lr",)) == [
        "objective.options.samples = 3 (protocol not set: its default)"
    ]
    rows = read_catalogue(repo / "results")["Paper X, Table 1"]
    assert [r.row for r in rows] == ["tiny VAE", "not yet"]
    assert "Paper X, Table 1" in render({"Paper X, Table 1": rows}, repo / "results")


FIGURES = [
    {"row": "training curves", "config": "configs/g/tiny.yaml", "figure": "training.png", "command": "draw it"},
    {"row": "two pictures", "config": "configs/g/tiny.yaml", "figure": ["training.png", "missing.png"],
     "width": 300, "command": "draw both", "projected": "5 min"},
    {"row": "resumable", "config": "configs/g/flight.yaml", "figure": "x.png", "command": "finish it"},
]  # fmt: skip


def test_figure_rows_are_shown_or_say_how_to_draw_them(repo, tmp_path):
    """A figure row beside number rows: its pictures embedded when the files exist (at its width), "not run" or
    "in flight" with its command and projected cost when not; the number table is the same as without it."""
    root = tmp_path / "repo"
    shutil.copytree(repo / "configs", root / "configs")
    results = root / "results"
    shutil.copytree(repo / "run", results / "g" / "tiny", ignore=shutil.ignore_patterns("checkpoints"))
    shutil.copytree(repo / "run", results / "g" / "flight")  # a checkpoint shipped, no x.png yet
    numbers = CATALOGUE["papers"][0]
    only = {
        "title": "Paper Y, Fig. 1",
        "rows": [
            {
                "row": "not drawn",
                "config": "configs/g/other.yaml",
                "figure": "fig1.png",
                "command": "vaelab gaps results/g/other --contours",
                "projected": "2 h",
            }
        ],
    }

    def readme(catalogue: dict) -> str:
        (results / "ledger.yaml").write_text(yaml.safe_dump(catalogue))
        return render(read_catalogue(results), results)

    plain = readme({"papers": [numbers]})
    figures = {"papers": [{**numbers, "rows": numbers["rows"] + FIGURES}, only]}
    text = readme(figures)
    assert text == readme(figures), "the README is deterministic"
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert table == [line for line in plain.splitlines() if line.startswith("|")], "number tables unchanged"
    assert not any(line.startswith(("| training", "| two", "| not drawn")) for line in table)
    lines = text.splitlines()
    item = next(line for line in lines if line.startswith("- **[training curves](g/tiny/)**"))
    assert item == "- **[training curves](g/tiny/)**: shown. Drawn by `draw it`."
    img = f'<img src="g/tiny/training.png" alt="g/tiny/training.png" width="{FIGURE_WIDTH}">'
    assert lines[lines.index(item) + 2] == "  " + img, "the picture, a paragraph of the item"
    two = next(line for line in lines if line.startswith("- **[two pictures]"))
    assert "partly drawn (1 of 2) (`g/tiny/missing.png`). Drawn by `draw both` (projected: 5 min)." in two
    assert lines[lines.index(two) + 2] == '  <img src="g/tiny/training.png" alt="g/tiny/training.png" width="300">'
    assert "- **resumable**: in flight (checkpoint shipped) (`g/flight/x.png`). Drawn by `finish it`." in lines
    section = text[text.index("## Paper Y, Fig. 1") :]
    assert "| row |" not in section, "a table of figures alone has no number table"
    assert (
        "- **not drawn**: not run (`g/other/fig1.png`). Drawn by `vaelab gaps results/g/other --contours` " in section
    )
    assert "(projected: 2 h)." in section and "<img" not in section
    assert text.count("<img") == 2


@pytest.mark.parametrize(
    "entry, defaults, message",
    [
        ({"figure": "a.png", "metric": "elbo", "command": "c"}, {}, "figure and also a number's keys .metric."),
        ({"figure": "a.png", "value": 1.0, "command": "c"}, {}, "a row is a number or a figure"),
        ({"metric": None}, {}, "neither a metric nor a figure"),
        ({}, {"metric": None}, "neither a metric nor a figure"),
        ({"figure": "a.png"}, {}, "needs `command`"),
        ({"figure": [], "command": "c"}, {}, "a path or a list of paths"),
        ({"figure": ["a.png", 3], "command": "c"}, {}, "a path or a list of paths"),
        ({"figure": "/abs/a.png", "command": "c"}, {}, "inside the row's run directory"),
        ({"figure": "../a.png", "command": "c"}, {}, "inside the row's run directory"),
        ({"figure": "a.png", "command": "c", "width": 0}, {}, "positive number of pixels"),
        ({"width": 300}, {}, "width is for a figure row"),
        ({"figure": "a.png", "command": "c"}, {"figure": "b.png"}, "belong on a row, not in defaults"),
        ({"figure": "a.png", "command": "c", "colour": "red"}, {}, "unexpected keyword argument 'colour'"),
    ],
)
def test_figure_row_schema_errors(tmp_path, entry, defaults, message):
    row = {"row": "r", "config": "configs/g/tiny.yaml", **entry}
    (tmp_path / "ledger.yaml").write_text(
        yaml.safe_dump({"papers": [{"title": "T", "defaults": defaults, "rows": [row]}]})
    )
    with pytest.raises(ConfigError, match=message):
        read_catalogue(tmp_path)


def test_a_row_missing_a_field_says_which(tmp_path):
    for entry, field_name in (
        ({"row": "r", "figure": "a.png", "command": "c"}, "config"),
        ({"config": "c.yaml"}, "row"),
    ):
        (tmp_path / "ledger.yaml").write_text(yaml.safe_dump({"papers": [{"title": "T", "rows": [entry]}]}))
        with pytest.raises(ConfigError, match=f"missing 1 required positional argument: '{field_name}'"):
            read_catalogue(tmp_path)


def test_a_figure_row_takes_only_its_own_keys_from_the_defaults(tmp_path):
    """A table's defaults are written for its numbers: a figure row takes its config, run, command and projected
    cost from them, and none of the number keys nor the numbers' deviations."""
    defaults = {"config": "configs/g/tiny.yaml", "run": "sweep", "command": "vaelab sweep ...", "projected": "1 h",
                "metric": "accuracy", "protocol": {"test_points": 10}, "deviations": ["of the numbers"]}  # fmt: skip
    rows = [{"row": "number", "value": 1.0}, {"row": "picture", "figure": "sweep.png"}]
    (tmp_path / "ledger.yaml").write_text(
        yaml.safe_dump({"papers": [{"title": "T", "defaults": defaults, "rows": rows}]})
    )
    number, picture = read_catalogue(tmp_path)["T"]
    assert not number.is_figure and number.metric == "accuracy" and number.deviations == ["of the numbers"]
    assert picture.is_figure and picture.figure == ["sweep.png"] and picture.width == FIGURE_WIDTH
    assert (picture.config, picture.run, picture.command, picture.projected) == (
        "configs/g/tiny.yaml", "sweep", "vaelab sweep ...", "1 h"
    )  # fmt: skip
    assert picture.deviations == [] and picture.protocol == {}


def test_shipped_catalogue_is_valid():
    """The repository's own ledger: every row names an existing config, and the README renders, each shipped
    figure embedded."""
    results = REPO / "results"
    tables = read_catalogue(results)
    for rows in tables.values():
        for row in rows:
            assert (REPO / row.config).is_file(), row.config
    text = render(tables, results)
    assert "Results ledger" in text
    figures = [row for rows in tables.values() for row in rows if row.is_figure]
    assert figures, "the ledger shows the papers' figures too"
    for row in figures:
        run = result_dir(results, row.config) / (row.run or "")
        for f in row.figure:
            path = (run / f).relative_to(results).as_posix()
            assert (f'<img src="{path}"' in text) == (run / f).is_file(), path


@pytest.mark.parametrize(
    "result, shown",
    [
        ({"seconds": 120.0}, "2 min"),
        ({"seconds": 60.0, "seconds_total": 7200.0, "batches_resumed": 2, "batches_untimed": 0}, "2.0 h"),
        (
            {"seconds": 6.0, "seconds_total": 3e3, "batches_resumed": 3, "batches_untimed": 1},
            "50 min + 1 untimed batch",
        ),
        ({"seconds": 1.0, "batches_resumed": 2}, "0 min + 2 untimed batches"),  # a result from before seconds_total
        ({}, ""),
    ],
)
def test_a_continued_evaluations_time_counts_the_batches_it_read_back(result, shown):
    from vaelab.app.commands.ledger import _eval_wall

    assert _eval_wall(result) == shown
