"""The command line end to end on a tiny budget: train, kill -9, resume, evaluate, sample, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TINY = [
    "--set", "data.subset=2000", "--set", "data.valid_subset=500", "--set", "model.latent_dim=8",
    "--set", "model.encoder={type: gated_mlp, hidden: [64]}", "--set", "model.decoder={type: gated_mlp, hidden: [64]}",
    "--set", "train.epochs=30", "--set", "eval.is_samples=50", "--set", "eval.subset=100", "--set", "eval.grid=4",
    "--set", "objective.warmup_epochs=5",
]  # fmt: skip


def vaelab(*args, check=True, **kw):
    proc = subprocess.run([sys.executable, "-m", "vaelab.cli", *args], capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"vaelab {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def rows(run_dir: Path):
    out = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for r in out:
        r.pop("epoch_time_s"), r.pop("steps_per_s")
    return out


@pytest.mark.slow
def test_train_kill_resume_evaluate_sample(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    vaelab("train", *TINY, "--run-dir", str(full), "--no-progress")
    assert (full / "samples.png").is_file() and (full / "reconstructions.png").is_file()
    reference = json.loads((full / "eval-test.json").read_text())

    proc = subprocess.Popen(
        [sys.executable, "-m", "vaelab.cli", "train", *TINY, "--run-dir", str(killed), "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "latest").exists():
        assert proc.poll() is None and time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    time.sleep(0.3)  # land the kill somewhere in the middle of later epochs
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(rows(killed)) if (killed / "metrics.jsonl").exists() else 0
    assert done < 30, "the run finished before it was killed; the test needs a longer run"

    killed_session = json.loads((killed / "provenance.json").read_text())["sessions"]
    assert len(killed_session) == 1 and killed_session[0]["finished"] is None  # the kill left its record
    assert killed_session[0]["epochs"][1] >= 1 and killed_session[0]["wall_seconds"] > 0
    out = vaelab("train", "--resume", str(killed), "--no-progress")
    assert "log p(x)" in out.stdout
    assert rows(killed) == rows(full)  # identical numbers, epoch by epoch
    sessions = json.loads((killed / "provenance.json").read_text())["sessions"]
    assert [s["finished"] is None for s in sessions] == [True, False] and sessions[1]["finished_training"]
    resumed = json.loads((killed / "eval-test.json").read_text())
    assert resumed["log_likelihood"] == reference["log_likelihood"]

    ev = vaelab("evaluate", str(killed), "--samples", "20", "--subset", "50", "--split", "valid")
    assert "mnist_static valid (50 examples)" in ev.stdout
    result = json.loads((killed / "eval-valid.json").read_text())
    assert result["n"] == 50 and result["elbo"] <= result["log_likelihood"]
    sample_dir = tmp_path / "pics"
    vaelab("sample", str(killed), "--n", "16", "--out", str(sample_dir))
    assert (sample_dir / "samples.png").stat().st_size > 0


@pytest.mark.slow
def test_sigterm_stops_training_like_ctrl_c_even_when_sigint_is_ignored(tmp_path):
    """`kill PID` (SIGTERM) on a run started the way a script starts a background job (`cmd &` ignores SIGINT):
    no traceback, exit status 143, the resume hint, the session's record closed and its picture drawn, and
    `--resume` goes on from the kept checkpoint, without the evaluation that the run was started without."""
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaelab.cli", "train", *TINY, "--set", "train.epochs=500", "--run-dir", str(run),
         "--no-progress", "--no-eval"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )  # fmt: skip
    deadline = time.time() + 120
    while not (run / "checkpoints" / "latest").exists():
        assert proc.poll() is None and time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)  # ignored, as in a background job: the run goes on
    time.sleep(0.5)
    assert proc.poll() is None, "SIGINT was ignored at start, so it must not stop the run"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and "stopped by SIGTERM" in err
    assert f"continue with: vaelab train --resume {run}\n" in err  # the run keeps its --no-eval
    session = json.loads((run / "provenance.json").read_text())["sessions"][0]
    assert session["finished"] is not None and not session["finished_training"], "the record was not closed"
    assert (run / "training.png").is_file(), "the session's end draws its picture"
    done = len(rows(run))
    assert 1 <= done < 500
    vaelab("train", "--resume", str(run), "--set", f"train.epochs={done + 2}", "--no-progress")
    assert [r["epoch"] for r in rows(run)] == list(range(1, done + 3))
    assert not list(run.glob("eval-*.json")), "the resume evaluated a run started with --no-eval"


def test_refuses_to_overwrite_a_run(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.yaml").write_text("name: x\n")
    proc = vaelab("train", "--run-dir", str(run), check=False)
    assert proc.returncode == 2
    assert "already holds a run" in proc.stderr and "Traceback" not in proc.stderr
    assert (run / "config.yaml").read_text() == "name: x\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (["evaluate", "/nonexistent/run"], "does not exist"),
        (["sample", "."], "not a vaelab run directory"),
        (["train", "--set", "data.name=mnits", "--run-dir", "{tmp}/a"], "mnits"),
        (["train", "--set", "train.epoch=3", "--run-dir", "{tmp}/b"], "did you mean 'epochs'"),
        (["train", "nope.yaml"], "does not exist"),
    ],
)
def test_user_errors_are_one_line(tmp_path, args, message):
    proc = vaelab(*[a.replace("{tmp}", str(tmp_path)) for a in args], check=False, cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 2  # at most "run directory: ..." and the error


def test_bernoulli_on_gray_data_is_refused(tmp_path):
    proc = vaelab("train", "--set", "data.name=freyfaces", "--run-dir", str(tmp_path / "f"), check=False)
    if "not found" in proc.stderr:
        pytest.skip("freyfaces copy not available")
    assert proc.returncode == 2 and "likelihood" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("command", ["train", "evaluate", "sample", "datasets"])
def test_help_explains_every_option(command):
    from vaelab.app.cli import _parser

    sub = next(a for a in _parser()._actions if a.dest == "command").choices[command]
    for action in sub._actions:
        assert action.help, f"vaelab {command}: option {action.option_strings or action.dest} has no help"
    assert "usage: vaelab " + command in vaelab(command, "--help").stdout


def test_evaluate_help_describes_each_ais_preset_as_it_is():
    """`vaelab evaluate --ais` names every preset with its chains, temperatures, leapfrog steps and start as
    `vaelab.mcmc.options.PRESETS` holds them (the text once said that aiwae starts at the prior; it starts at q)."""
    from vaelab.app.cli import _parser
    from vaelab.mcmc.options import PRESETS

    sub = next(a for a in _parser()._actions if a.dest == "command").choices["evaluate"]
    text = " ".join(next(a for a in sub._actions if a.dest == "ais").help.split())
    for name, p in PRESETS.items():
        start = "q(z|x)" if p.init == "posterior" else "the prior"
        assert f"{name} ({p.chains} chains x {p.temps} temperatures x {p.leapfrog} leapfrog steps from {start}" in text


def test_datasets_lists_where_each_was_found(tmp_path):
    empty = dict(os.environ, VAELAB_DATA=str(tmp_path), XDG_CACHE_HOME=str(tmp_path))
    out = vaelab("datasets", env=empty).stdout
    first = out.split("\n", 2)
    assert first[0].startswith("mnist_static") and "yes" in first[0] and "bundled" in first[1]
    assert "omniglot" in out and "not found" in out
