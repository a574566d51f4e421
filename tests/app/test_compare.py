"""`vaelab compare RUN_A RUN_B`: the paired difference of two runs' per-example results, only on the same points.

The numbers are checked by hand on made-up per-example files, and against the files `vaelab evaluate` writes for
two tiny trained runs (IS and AIS); results of other points (number, dataset, data digest) are refused in one line
naming the difference, and so are missing files, an unknown metric and non-finite values."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from helpers import TINY

from vaelab.app import cli
from vaelab.app.commands.compare import compare
from vaelab.data import load_dataset
from vaelab.evaluation.batches import digest

IS = ["--samples", "10", "--subset", "16", "--no-progress"]
AIS = ["--subset", "16", "--no-progress", "--ais", "aiwae", "chains=2", "temps=4", "leapfrog=2"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two tiny runs (seeds 0 and 1), each evaluated by IS and AIS on the first 16 test points."""
    root = tmp_path_factory.mktemp("pair")
    for name, seed in (("a", 0), ("b", 1)):
        run = root / name
        assert cli.main(["train", *TINY, "--set", f"seed={seed}", "--run-dir", str(run)]) == 0
        assert cli.main(["evaluate", str(run), *IS]) == 0
        assert cli.main(["evaluate", str(run), *AIS]) == 0
    return root / "a", root / "b"


def _copy(pair, tmp_path):
    return tuple(shutil.copytree(r, tmp_path / r.name) for r in pair)


def _hand_made(path, values, n=None, digest="d1", dataset="toy", estimator_file="eval-test"):
    """A run directory holding only an evaluation: `values` as the per-example log_likelihood."""
    path.mkdir(parents=True)
    values = torch.tensor(values, dtype=torch.float64)
    result = {"dataset": dataset, "split": "test", "n": len(values) if n is None else n, "data_digest": digest}
    (path / f"{estimator_file}.json").write_text(json.dumps({**result, "is_samples": 10}))
    torch.save({"log_likelihood": values, "ess": torch.ones_like(values)}, path / f"{estimator_file}-per-example.pt")
    return path


def test_numbers_by_hand(tmp_path, capsys):
    a = _hand_made(tmp_path / "a", [1.0, 2.0, 3.0, 4.0])
    b = _hand_made(tmp_path / "b", [0.0, 2.0, 1.0, 5.0])
    assert cli.main(["compare", str(a), str(b), "--json"]) == 0
    out = capsys.readouterr().out
    r = json.loads((a / "compare-b-test-is-log_likelihood.json").read_text())
    # d = a - b = [1, 0, 2, -1]: mean 0.5, var (0.25 + 0.25 + 2.25 + 2.25) / 3 = 5/3, se sqrt(5/3) / 2
    assert r["n"] == 4 and r["mean_diff"] == pytest.approx(0.5)
    assert r["sd_diff"] == pytest.approx(math.sqrt(5 / 3)) and r["se_diff"] == pytest.approx(math.sqrt(5 / 3) / 2)
    # a: mean 2.5, var 5/3; b: mean 2, var (4 + 0 + 1 + 9) / 3 = 14/3
    assert (r["mean_a"], r["se_a"]) == (pytest.approx(2.5), pytest.approx(math.sqrt(5 / 3) / 2))
    assert (r["mean_b"], r["se_b"]) == (pytest.approx(2.0), pytest.approx(math.sqrt(14 / 3) / 2))
    assert (r["frac_a_greater"], r["frac_ties"]) == (0.5, 0.25)  # 1 > 0 and 3 > 1; 2 = 2
    assert r["z"] == pytest.approx(0.5 / (math.sqrt(5 / 3) / 2))
    assert "A - B: 0.500 (paired se 0.645" in out and "A > B on 50.0% of points (ties 25.0%)" in out
    assert (a / "compare-b-test-is-log_likelihood.png").stat().st_size > 0
    # the other metric of the file, and the figure and numbers where asked
    assert cli.main(["compare", str(a), str(b), "--metric", "ess", "--out", str(tmp_path / "f.png"),
                     "--json", str(tmp_path / "n.json")]) == 0  # fmt: skip
    r = json.loads((tmp_path / "n.json").read_text())
    assert (r["mean_diff"], r["frac_ties"], r["figure"]) == (0.0, 1.0, str(tmp_path / "f.png"))
    assert r["z"] is None and "NaN" not in (tmp_path / "n.json").read_text()  # 0 / 0: standard JSON null


@pytest.mark.parametrize(
    ("b_kwargs", "says"),
    [
        ({"values": [1.0, 2.0, 3.0]}, "A was evaluated on 4 test points, B on 3; evaluate both with the same --subset"),
        ({"values": [1.0, 2.0, 3.0, 4.0], "digest": "d2"}, "their data digests differ (A d1, B d2)"),
        ({"values": [1.0, 2.0, 3.0, 4.0], "dataset": "other"}, "datasets 'toy' (A"),
        ({"values": [1.0, 2.0, 3.0, 4.0], "n": 5}, "has 4 values but eval-test.json is of 5 points"),
        ({"values": [1.0, math.nan, 3.0, 4.0]}, "1 of the 4 values of b are NaN or infinite (first at point 1)"),
    ],
)
def test_other_points_are_refused(tmp_path, capsys, b_kwargs, says):
    a = _hand_made(tmp_path / "a", [1.0, 2.0, 3.0, 4.0])
    b = _hand_made(tmp_path / "b", **b_kwargs)
    assert cli.main(["compare", str(a), str(b)]) == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert err.startswith("vaelab compare: error: ") and says in err
    assert not list(tmp_path.rglob("*.png"))  # nothing written


def test_missing_files_and_unknown_metric(tmp_path, capsys):
    a = _hand_made(tmp_path / "a", [1.0, 2.0])
    b = _hand_made(tmp_path / "b", [1.0, 2.0])
    cases = [
        (["--estimator", "ais"], f"{a}: eval-test-ais.json missing; make it with: vaelab evaluate {a} --split test "
                                 "--ais aiwae"),
        (["--split", "valid"], f"{a}: eval-valid.json missing"),
        (["--metric", "elbo"], "unknown metric 'elbo': "),
    ]  # fmt: skip
    for extra, says in cases:
        assert cli.main(["compare", str(a), str(b), *extra]) == 2
        (err,) = capsys.readouterr().err.strip().splitlines()
        assert says in err, err
    assert "has per-example ess, log_likelihood" in err
    assert cli.main(["compare", str(a), str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_trained_runs_paired_on_their_evaluations(pair, tmp_path, capsys):
    a, b = pair
    # every evaluation records the digest of the points it was made on: the first 16 test images
    x = load_dataset("mnist_static").split("test")[:16]
    for run in pair:
        for name in ("eval-test.json", "eval-test-ais.json"):
            assert json.loads((run / name).read_text())["data_digest"] == digest(x)
    for estimator, stem in (("is", "eval-test"), ("ais", "eval-test-ais")):
        out = tmp_path / f"{estimator}.png"
        assert cli.main(["compare", str(a), str(b), "--estimator", estimator, "--out", str(out), "--json"]) == 0
        r = json.loads(out.with_suffix(".json").read_text())
        va, vb = (torch.load(run / f"{stem}-per-example.pt")["log_likelihood"].double() for run in pair)
        d = va - vb
        assert r["n"] == 16 and r["estimator"] == estimator and out.stat().st_size > 0
        assert r["mean_diff"] == pytest.approx(float(d.mean()), abs=1e-9)
        assert r["se_diff"] == pytest.approx(float(d.std() / 4), rel=1e-9)
        assert r["frac_a_greater"] == float((d > 0).double().mean())
        for side, run in (("a", a), ("b", b)):  # each mean is the one its evaluation reported
            assert r[f"mean_{side}"] == pytest.approx(json.loads((run / f"{stem}.json").read_text())["log_likelihood"])
        assert r["settings_a"] == r["settings_b"] and not r["notes"]
    assert json.loads((tmp_path / "ais.json").read_text())["settings_a"]["chains"] == 2
    assert "16 paired points" in capsys.readouterr().out


def test_trained_runs_on_other_points_or_before_digests(pair, tmp_path, capsys):
    a, b = _copy(pair, tmp_path)
    # an evaluation made before vaelab recorded the digest: its points are rebuilt from the run's config
    for run in (a, b):
        path = run / "eval-test.json"
        path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "data_digest"}))
    result, _, _ = compare(a, b)
    assert result["data_digest"] == digest(load_dataset("mnist_static").split("test")[:16])
    assert len(result["notes"]) == 2 and "rebuilt from its config" in result["notes"][0]
    # B evaluated on fewer points: refused, whichever file says so
    assert cli.main(["evaluate", str(b), "--samples", "10", "--subset", "8", "--no-progress"]) == 0
    capsys.readouterr()
    assert cli.main(["compare", str(a), str(b)]) == 2
    assert "A was evaluated on 16 test points, B on 8" in capsys.readouterr().err
    # the same number of other points (another split's), digest rebuilt on one side: refused by the digest
    path = b / "eval-test.json"
    assert cli.main(["evaluate", str(b), "--split", "valid", "--samples", "10", "--subset", "16", "--no-progress"]) == 0
    valid = json.loads((b / "eval-valid.json").read_text())
    path.write_text(json.dumps({**valid, "split": "test"}))
    shutil.copy(b / "eval-valid-per-example.pt", b / "eval-test-per-example.pt")
    capsys.readouterr()
    assert cli.main(["compare", str(a), str(b)]) == 2
    assert "16 test points of 'mnist_static' in both, but their data digests differ" in capsys.readouterr().err


def test_the_figure_goes_into_run_a_named_by_run_b(tmp_path, capsys):
    a = _hand_made(tmp_path / "aiwae" / "mnist" / "k5_t5", [1.0, 2.0, 3.0])
    b = _hand_made(tmp_path / "iwae_mnist" / "k5", [0.5, 2.5, 2.0])
    assert cli.main(["compare", str(a), str(b), "--json"]) == 0
    assert sorted(p.name for p in a.iterdir() if p.name.startswith("compare-")) == [
        "compare-iwae_mnist_k5-test-is-log_likelihood.json",
        "compare-iwae_mnist_k5-test-is-log_likelihood.png",
    ]
    assert json.loads((a / "compare-iwae_mnist_k5-test-is-log_likelihood.json").read_text())[
        "mean_diff"
    ] == pytest.approx(1 / 3)
    assert cli.main(["compare", str(a), str(b), "--out", str(tmp_path / "nowhere" / "f.png")]) == 2
    assert "its directory does not exist" in capsys.readouterr().err


def test_damaged_files_and_unwritable_outputs_are_one_line_errors(tmp_path, capsys):
    a = _hand_made(tmp_path / "a", [1.0, 2.0, 3.0])
    b = _hand_made(tmp_path / "b", [1.0, 2.5, 3.0])
    assert cli.main(["compare", str(a), str(b), "--json", str(tmp_path / "nowhere" / "r.json")]) == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert "cannot write the numbers" in err and "its directory does not exist" in err
    assert not list(a.glob("compare-*"))  # nothing written before the refusal
    per_example = b / "eval-test-per-example.pt"
    per_example.write_bytes(per_example.read_bytes()[:40])  # truncated
    assert cli.main(["compare", str(a), str(b)]) == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert f"{b}: cannot read eval-test-per-example.pt" in err and "make it again with: vaelab evaluate" in err
    (b / "eval-test.json").write_text('{"n": 3,')  # cut short
    assert cli.main(["compare", str(a), str(b)]) == 2
    assert f"{b}: cannot read eval-test.json" in capsys.readouterr().err
