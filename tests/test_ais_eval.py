"""`vaelab evaluate RUN --ais ...`: presets and overrides, and the AIS result written beside the IS result.

The AIS estimator itself is checked against exact answers in test_mcmc.py; here the run-directory layer: what
is run (the options reach `ais`), what is written (consistent with the per-example file), and the errors.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from vaelab import cli, runs
from vaelab.config import load_config
from vaelab.errors import ConfigError
from vaelab.mcmc.options import PRESETS, AISOptions, parse_ais_options

TINY = [
    "data.subset=200",
    "data.valid_subset=50",
    "model.latent_dim=4",
    "model.encoder={type: mlp, hidden: [32]}",
    "model.decoder={type: mlp, hidden: [32]}",
    "train.progress=false",
    "train.lr=3e-3",
    "train.epochs=1",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    cfg = load_config(None, TINY)
    path = runs.new_run_dir(cfg, tmp_path_factory.mktemp("runs") / "tiny")
    runs.train(cfg, path)
    return path


def test_presets_are_the_papers_protocols():
    """AIWAE sec. 5.2: 16 chains, 10,000 evenly spaced temperatures, 10 leapfrog steps, acceptance 0.6;
    Cremer et al. sec. 5.2: 100 chains, 500 temperatures, 10 leapfrog steps, from the prior."""
    a, c = PRESETS["aiwae"], PRESETS["cremer"]
    assert (a.chains, a.temps, a.leapfrog, a.schedule, a.target_acceptance) == (16, 10000, 10, "linear", 0.6)
    assert (c.chains, c.temps, c.leapfrog, c.init) == (100, 500, 10, "prior")
    assert parse_ais_options(["aiwae"]) == a and parse_ais_options([]) == a
    assert parse_ais_options(["chains=16", "temps=10000", "leapfrog=10"]) == a
    got = parse_ais_options(
        ["cremer", "chains=3", "temperatures=1e3", "adapt=none", "step_size=5e-2"], init="posterior"
    )
    assert got == AISOptions(
        chains=3, temps=1000, leapfrog=10, init="posterior", adapt=None, step_size=0.05, target_acceptance=0.65
    )
    betas = got.betas()
    assert betas.shape == (1000,) and betas[0] == 0 and betas[-1] == 1
    assert got.ais_kwargs(batch_size=7)["batch_size"] == 7 and got.ais_kwargs()["schedule"].shape == (1000,)
    assert got.gradient_evaluations(points=5) == 5 * 3 * 999 * 11


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        (["crem"], "did you mean 'cremer'"),
        (["chains=4", "aiwae"], "not key=value"),
        (["chans=4"], "did you mean 'chains'"),
        (["temps=many"], "temps must be int"),
        (["temps=1"], "temps .* must be >= 2"),
        (["init=encoder"], "init must be prior or posterior"),
        (["schedule=cosine"], "schedule must be one of"),
        (["chains="], "chains needs a value"),
    ],
)
def test_bad_ais_options_are_config_errors(tokens, message):
    with pytest.raises(ConfigError, match=message):
        parse_ais_options(tokens)


def test_evaluate_ais_writes_its_result_beside_the_is_result(run_dir, capsys):
    """IS first on 6 test points, then AIS (Cremer's preset, shrunk) on the same 6 and on 4: the JSON holds
    the options used, the mean and se of the per-point estimates in the per-example file (which are the
    log-mean-exp of its log-weights), ESS in [1, chains], acceptances, the evaluation count and the time;
    the IS estimate is copied in only for the same examples. The IS result is left as it was."""
    assert cli.main(["evaluate", str(run_dir), "--samples", "100", "--subset", "6", "--no-progress"]) == 0
    is_result = (run_dir / "eval-test.json").read_text()
    args = ["evaluate", str(run_dir), "--ais", "cremer", "chains=5", "temps=30", "leapfrog=2", "--no-progress"]
    assert cli.main([*args, "--subset", "6", "--ais-init", "posterior", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "(6 examples): log p(x) ~" in out and "AIS, 5 chains x 30 temperatures x 2 leapfrog steps" in out
    r = json.loads((run_dir / "eval-test-ais.json").read_text())
    assert (r["chains"], r["temps"], r["leapfrog"], r["init"], r["target_acceptance"]) == (5, 30, 2, "posterior", 0.65)
    assert r["batch_size"] == 4  # --batch-size: points annealed together
    per = torch.load(run_dir / "eval-test-ais-per-example.pt", weights_only=True)
    ll, log_w = per["log_likelihood"], per["log_weights"]
    assert ll.shape == (6,) and log_w.shape == (5, 6)
    torch.testing.assert_close(ll, torch.logsumexp(log_w, 0) - math.log(5))
    assert r["n"] == 6 and r["log_likelihood"] == pytest.approx(ll.mean().item(), rel=1e-6)
    assert r["log_likelihood_se"] == pytest.approx(ll.std().item() / math.sqrt(6), rel=1e-5)
    assert (
        r["per_chain_bound"] == pytest.approx(log_w.mean().item(), rel=1e-6)
        and r["per_chain_bound"] <= r["log_likelihood"]
    )
    assert 1 <= r["ess_min"] <= r["ess_mean"] <= 5 and 0 < r["acceptance_mean"] < 1 and 0 < r["acceptance_last"] < 1
    assert r["gradient_evaluations"] == 6 * 5 * 29 * 3 and r["seconds"] > 0
    assert r["bits_per_dim"] == pytest.approx(-r["log_likelihood"] / (784 * math.log(2)))
    assert r["is_log_likelihood"] == json.loads(is_result)["log_likelihood"] and r["is_samples"] == 100

    assert cli.main([*args, "--subset", "4"]) == 0
    r = json.loads((run_dir / "eval-test-ais.json").read_text())
    assert r["n"] == 4 and r["init"] == "prior" and r["batch_size"] == 100 and "is_log_likelihood" not in r
    assert (run_dir / "eval-test.json").read_text() == is_result


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ais", "cremer", "chans=3"], "did you mean 'chains'"),
        (["--ais-init", "prior"], "--ais-init needs --ais"),
    ],
)
def test_ais_user_errors_are_one_line(run_dir, capsys, args, message):
    assert cli.main(["evaluate", str(run_dir), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
