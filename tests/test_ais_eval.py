"""`vaelab evaluate RUN --ais ...`: presets and overrides, and the AIS result written beside the IS result.

The AIS estimator itself is checked against exact answers in test_mcmc.py; here the run-directory layer: what
is run (the options reach `ais`), what is written (consistent with the per-example file), and the errors.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import pytest
import torch

from vaelab.app import cli, runs
from vaelab.config import load_config
from vaelab.errors import ConfigError
from vaelab.evaluation.batches import saved_batches
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
    """AIWAE sec. 5.2 and its NLL script: 16 chains from q(z|x), 10,000 evenly spaced temperatures, 10 leapfrog
    steps, one step size (0.1 at first) adapted toward acceptance 0.6; the same from the prior; Cremer et al.
    sec. 5.2: 100 chains, 500 temperatures, 10 leapfrog steps, from the prior."""
    a, p, c = PRESETS["aiwae"], PRESETS["aiwae_prior"], PRESETS["cremer"]
    assert (a.chains, a.temps, a.leapfrog, a.schedule, a.target_acceptance) == (16, 10000, 10, "linear", 0.6)
    assert (a.init, a.adapt, a.step_size) == ("posterior", "all", 0.1)
    assert dataclasses.replace(a, init="prior", adapt="data", adapt_rate=0.1) == p
    assert (c.chains, c.temps, c.leapfrog, c.init) == (100, 500, 10, "prior")
    assert parse_ais_options(["aiwae"]) == a and parse_ais_options([]) == a
    assert parse_ais_options(["aiwae", "init=prior", "adapt=data", "adapt_rate=0.1"]) == p
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
    assert parse_ais_options(["cremer", "replicates=4"]).gradient_evaluations(points=5) == 4 * 5 * 100 * 499 * 11


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
    assert ll.shape == (6,) and log_w.shape == (1, 5, 6)  # [replicates, chains, points]
    torch.testing.assert_close(ll, torch.logsumexp(log_w[0], 0) - math.log(5))
    assert r["replicates"] == 1 and r["mc_se_method"] == "delta" and "in one run, which understates it" in out
    assert r["log_likelihood_mc_se"] == r["log_likelihood_mc_se_delta"] < r["log_likelihood_se_data"]
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
        (["--stop-after", "1h"], "--stop-after is for --ais and --bdmc"),
        (["--ais", "cremer", "--stop-after", "soon"], "must be a duration such as 2h30m"),
        (["--ais", "cremer", "--stop-after", "0m"], "must be a duration > 0"),
    ],
)
def test_ais_user_errors_are_one_line(run_dir, capsys, args, message):
    assert cli.main(["evaluate", str(run_dir), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_replicates_measure_the_spread_the_delta_method_misses():
    """R independent AIS runs per point, annealed as one (`ais_replicates`). On an easy 2-D model every replicate's
    estimate sits at its own point's exact log p(x) (the rows are not mixed up). At D = 50 from the prior (16
    chains x 100 temperatures) the delta-method se within one run (~0.75, it cannot exceed 1) is less than half
    the actual spread of the runs (1.3-3.6 nats), while the se from 8 replicates agrees with the spread of their
    means (ratio of RMS se to the sd over 8 groups measured at 0.84-1.18 over 4 seeds). Neither sees the bias:
    the runs' mean is nats below log p(x) (BDMC bounds that)."""
    from helpers import linear_gaussian, set_encoder

    from vaelab.mcmc import ais_replicates

    torch.manual_seed(0)
    easy = linear_gaussian(x_dim=4, latent_dim=2, sigma=0.8)
    set_encoder(easy, var_scale=1.2)  # AIS from a q near the posterior: each estimate within 0.1 nat
    x = easy.marginal().sample((5,)) * torch.tensor([0.5, 1.0, 1.5, 2.0, 2.5], dtype=torch.float64)[:, None]
    exact = easy.exact_log_marginal(x).detach()
    r = ais_replicates(easy, x, replicates=3, chains=16, temps=50, leapfrog=3, init="posterior", progress=False)
    assert r.estimates.shape == (3, 5) and r.log_weights.shape == (3, 16, 5) and exact.max() - exact.min() > 5
    assert ((r.estimates - exact).abs() < 0.1).all(), r.estimates - exact
    torch.testing.assert_close(r.estimates, torch.logsumexp(r.log_weights, 1) - math.log(16))
    s = r.summary()
    assert s["mc_se_method"] == "replicates" and s["replicates"] == 3
    assert s["log_likelihood_mc_se"] == pytest.approx(float(r.estimates.mean(1).std() / math.sqrt(3)))

    model = linear_gaussian(x_dim=8, latent_dim=50, sigma=0.8)
    for p in model.parameters():
        p.requires_grad_(False)
    x = model.marginal().sample((4,))
    R, G = 64, 8
    r = ais_replicates(model, x, replicates=R, chains=16, schedule=100, leapfrog_steps=5, progress=False)
    runs_ = r.estimates  # [R, B]: independent single runs
    spread = runs_.std(0)
    delta = r.result.log_weight_se.reshape(4, R).T.mean(0)  # each run's own delta-method se, averaged
    assert (delta < 0.5 * spread).all(), (delta, spread)
    groups = runs_.reshape(G, R // G, 4)  # 8 experiments of 8 replicates each
    replicate_se = groups.std(1) / math.sqrt(R // G)  # what each experiment reports [G, B]
    actual = groups.mean(1).std(0)  # how much the experiments' estimates actually differ [B]
    ratio = float(replicate_se.square().mean().sqrt() / actual.square().mean().sqrt())
    assert 0.65 < ratio < 1.5, ratio
    assert float((runs_.mean(0) - model.exact_log_marginal(x)).mean()) < -0.5  # the bias: a stochastic lower bound


def test_evaluate_ais_replicates_and_bdmc(run_dir, capsys):
    """`--ais ... replicates=3`: 3 runs per point, the Monte Carlo se from their spread (the per-example file's
    log-weights `[3, C, B]` reproduce the JSON), named in the printed line. `--bdmc`: forward and reverse AIS on
    points simulated from the model; the printed gap is upper minus lower, written to eval-bdmc.json."""
    base = ["evaluate", str(run_dir), "--no-progress"]
    ais_args = ["--ais", "cremer", "chains=3", "temps=10", "leapfrog=2", "replicates=3", "--subset", "4"]
    assert cli.main([*base, *ais_args]) == 0
    out = capsys.readouterr().out
    assert "Monte Carlo se" in out and "from 3 replicates" in out and "se over data" in out
    r = json.loads((run_dir / "eval-test-ais.json").read_text())
    per = torch.load(run_dir / "eval-test-ais-per-example.pt", weights_only=True)
    assert per["log_weights"].shape == (3, 3, 4) and per["replicate_se"].shape == (4,)
    estimates = torch.logsumexp(per["log_weights"], 1) - math.log(3)  # [R, B]
    torch.testing.assert_close(per["log_likelihood"], estimates.mean(0))
    assert r["replicates"] == 3 and r["mc_se_method"] == "replicates" and r["n"] == 4
    assert r["log_likelihood_mc_se"] == pytest.approx(float(estimates.mean(1).std() / math.sqrt(3)), rel=1e-5)
    assert r["gradient_evaluations"] == 3 * 4 * 3 * 9 * 3

    assert cli.main([*base, "--bdmc", "cremer", "chains=2", "temps=10", "leapfrog=2", "--subset", "5"]) == 0
    out = capsys.readouterr().out
    b = json.loads((run_dir / "eval-bdmc.json").read_text())
    assert b["n"] == 5 and b["chains"] == 2 and b["data"] == "simulated from the model"
    assert b["gap"] == pytest.approx(b["upper"] - b["lower"], abs=1e-3) and b["gap_se"] > 0  # float32 means
    assert f"gap {b['gap']:.3f}" in out and "error bound of AIS with 2 chains x 10 temperatures" in out

    assert cli.main([*base, "--ais", "cremer", "--bdmc"]) == 2
    assert cli.main([*base, "--bdmc", "cremer", "replicates=2"]) == 2
    assert "replicates" in capsys.readouterr().err


def _ais_outputs(run_dir) -> tuple[dict, dict]:
    summary = json.loads((run_dir / "eval-test-ais.json").read_text())
    for timing in ("seconds", "seconds_total", "batches_resumed", "batches_untimed", "partials_kept"):
        summary.pop(timing)
    return summary, torch.load(run_dir / "eval-test-ais-per-example.pt", weights_only=True)


def test_a_stopped_bdmc_continues_only_on_as_many_points(run_dir, tmp_path, monkeypatch):
    """BDMC simulates its n points at once, so another n simulates other points from the first on: a stopped BDMC
    of 5 points in batches of 2 is refused for 6 points (naming n) and continued for 5, from its saved batch."""
    from vaelab.evaluation import annealed
    from vaelab.recording import load_run

    stopped = tmp_path / "stopped"
    shutil.copytree(run_dir, stopped, ignore=shutil.ignore_patterns("eval-*"))
    options = dataclasses.replace(parse_ais_options(["cremer", "chains=2", "temps=6", "leapfrog=2"]), batch_size=2)
    calls, real, stop_at = [], annealed.bdmc, [2]

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == stop_at[0]:
            raise RuntimeError("stopped")
        return real(*args, **kwargs)

    monkeypatch.setattr(annealed, "bdmc", failing)
    with pytest.raises(RuntimeError, match="stopped"):
        runs.evaluate_bdmc(load_run(stopped), options, 5, progress=False)
    assert saved_batches(stopped / "eval-bdmc-partial") == 1
    with pytest.raises(ConfigError, match="n: 5 there, 6 now"):
        runs.evaluate_bdmc(load_run(stopped), options, 6, progress=False)
    calls.clear(), stop_at.clear(), stop_at.append(0)
    result = runs.evaluate_bdmc(load_run(stopped), options, 5, progress=False)
    assert len(calls) == 2 and result["batches_resumed"] == 1 and not (stopped / "eval-bdmc-partial").exists()


def test_a_stopped_ais_evaluation_continues_from_its_saved_batches(run_dir, tmp_path, monkeypatch, capsys):
    """AIS on 10 points in 4 batches (3, 3, 3, 1), stopped by an error in its third batch: the two batches done are
    kept in eval-test-ais-partial/ (one file each, beside the manifest, no temporary file). Other settings (chains,
    seed) are refused with an error naming them. A shorter evaluation reads the batches it shares and leaves them
    there; the same settings continue from the two batches, and the result (summary and per-point values) equals an
    uninterrupted run's; the partial results are removed."""
    from vaelab.evaluation import annealed
    from vaelab.recording import load_run

    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    for copy in (whole, stopped):
        shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("eval-*"))
    options = parse_ais_options(["cremer", "chains=3", "temps=8", "leapfrog=2", "replicates=2"])
    runs.evaluate_ais(load_run(whole), options, "test", 10, 3, progress=False)
    seed = load_run(whole).cfg.seed + 2  # the options have none: the config's seed + 2

    calls, real = [], annealed.ais_replicates

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("stopped")
        return real(*args, **kwargs)

    monkeypatch.setattr(annealed, "ais_replicates", failing)
    with pytest.raises(RuntimeError, match="stopped"):
        runs.evaluate_ais(load_run(stopped), options, "test", 10, 3, progress=False)
    partial = stopped / "eval-test-ais-partial"
    saved = sorted(p.name for p in partial.iterdir())
    assert saved == ["batch-000000.pt.gz", "batch-000001.pt.gz", "manifest.json", "points-wanted.json"]
    assert not (stopped / "eval-test-ais.json").exists()
    for other, message in [({"chains": 4}, "chains: 3 there, 4 now"), ({"seed": 7}, f"seed: {seed} there, 7 now")]:
        changed = dataclasses.replace(options, **other)
        with pytest.raises(ConfigError, match=message):
            runs.evaluate_ais(load_run(stopped), changed, "test", 10, 3, progress=False)
    whole_points = _ais_outputs(whole)[1]["log_likelihood"]
    calls.clear()  # an evaluation of the first 3 points reads batch 0 and keeps the longer evaluation's batches
    shorter = runs.evaluate_ais(load_run(stopped), options, "test", 3, 3, progress=False)
    assert not calls and shorter["batches_resumed"] == 1 and shorter["partials_kept"]
    assert json.loads((stopped / "eval-test-ais.json").read_text())["partials_kept"]  # and the file says so
    assert torch.equal(_ais_outputs(stopped)[1]["log_likelihood"], whole_points[:3])
    calls.clear()  # of the first 5: batch 1 holds points 3 and 4 alone, other points than the saved batch 1's
    runs.evaluate_ais(load_run(stopped), options, "test", 5, 3, progress=False)
    assert len(calls) == 1 and saved_batches(partial) == 2  # computed, and not saved over the full batch
    calls.clear()  # of the first 6: both saved batches, and no more; kept, since the stopped evaluation asked for 10
    shorter = runs.evaluate_ais(load_run(stopped), options, "test", 6, 3, progress=False)
    assert not calls and shorter["batches_resumed"] == 2 and shorter["partials_kept"]
    ais = ["--ais", "cremer", "chains=3", "temps=8", "leapfrog=2", "replicates=2", "--batch-size", "3"]
    capsys.readouterr()
    assert cli.main(["evaluate", str(stopped), "--no-progress", *ais, "--subset", "6"]) == 0 and not calls
    out, err = capsys.readouterr()
    assert "2 batches were read from eval-*-ais-partial/ (kept for a longer evaluation" in err
    assert " s with the batches read back)" in out

    calls.clear()
    result = runs.evaluate_ais(load_run(stopped), options, "test", 10, 3, progress=False)
    assert len(calls) == 2 and result["batches_resumed"] == 2  # batches 2 and 3 run; 0 and 1 read back
    assert not partial.exists() and not result["partials_kept"] and result["batches_untimed"] == 0
    assert result["seconds_total"] > result["seconds"]  # the time that the two batches read back had taken
    (a, per_a), (b, per_b) = _ais_outputs(whole), _ais_outputs(stopped)
    assert a == b and a["n"] == 10 and a["seed"] is None and a["seed_used"] == seed
    from vaelab.app.commands.report import Protocol, _mismatch

    assert _mismatch(a, "ais", 10, Protocol(ais=options)) is None  # `vaelab report` takes it as made with options
    assert per_a.keys() == per_b.keys() and all(torch.equal(per_a[k], per_b[k]) for k in per_a)


def test_stop_after_ends_an_ais_evaluation_between_batches(run_dir, tmp_path, monkeypatch, capsys):
    """`--stop-after 3s` with batches that take over 2 s: the first batch runs, the second would end after the
    limit, so the command stops there with status 75 and says what is saved and how to go on; the same command
    without the limit continues from the saved batch, and the result equals an uninterrupted run's."""
    import time

    from vaelab.app.cli import OUT_OF_TIME
    from vaelab.evaluation import annealed

    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    for copy in (whole, stopped):
        shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("eval-*"))
    ais = ["--ais", "cremer", "chains=2", "temps=6", "leapfrog=2", "replicates=2", "--subset", "6", "--batch-size", "3"]
    assert cli.main(["evaluate", str(whole), *ais, "--no-progress"]) == 0
    real = annealed.ais_replicates

    def slow(*args, **kwargs):
        time.sleep(2.1)
        return real(*args, **kwargs)

    monkeypatch.setattr(annealed, "ais_replicates", slow)
    capsys.readouterr()
    assert cli.main(["evaluate", str(stopped), *ais, "--no-progress", "--stop-after", "3s"]) == OUT_OF_TIME == 75
    err = capsys.readouterr().err
    assert "vaelab evaluate: stopped within its time limit: 1 batch left (about 2 s each), 1 saved in" in err
    assert "eval-test-ais-partial; run the same command again to continue" in err
    assert saved_batches(stopped / "eval-test-ais-partial") == 1 and not (stopped / "eval-test-ais.json").exists()
    monkeypatch.undo()
    assert cli.main(["evaluate", str(stopped), *ais, "--no-progress"]) == 0
    (a, per_a), (b, per_b) = _ais_outputs(whole), _ais_outputs(stopped)
    assert a == b and all(torch.equal(per_a[k], per_b[k]) for k in per_a)
