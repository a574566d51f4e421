"""Run directories are never lost or poisoned: --overwrite, failed commands, --resume --set, divergence,
read-only and corrupt files. The CLI runs in-process on a tiny slice of the bundled MNIST."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from helpers import TINY

from vaelab.app.cli import main

# lr 1e3 on 2,000 images (20 steps per epoch): NaN from the first epoch on
DIVERGES = ["--set", "data.subset=2000", "--set", "train.lr=1e3"]
# lr 1e-3 in epoch 1, 1e3 from epoch 2 on: a good first checkpoint, then divergence
DIVERGES_AFTER_EPOCH_1 = [
    *DIVERGES,
    "--set",
    "train.lr=1e-3",
    "--set",
    "train.lr_schedule={type: step, every: 1, gamma: 1000000}",
]


def cli(capsys, *args) -> tuple[int, list[str]]:
    """Run `vaelab ARGS` in-process: (exit code, stderr lines). An uncaught exception fails the test."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err.strip().splitlines()


def snapshot(path: Path) -> dict[str, str]:
    """sha1 of every file under `path`, by relative path."""
    return {
        str(f.relative_to(path)): hashlib.sha1(f.read_bytes()).hexdigest()
        for f in sorted(path.rglob("*"))
        if f.is_file()
    }


def refused(code: int, err: list[str], message: str = "") -> bool:
    """Exit code 2 and one line of stderr naming the problem."""
    return code == 2 and len(err) == 1 and err[0].startswith("vaelab ") and message in err[0]


# --- --overwrite ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "target, message",
    [
        (".", "current directory"),
        ("..", "current directory"),
        ("notes", "not a vaelab run"),
        ("project", "not a vaelab run"),  # a config.yaml and other files, but none a run writes
        ("marker.txt", "is a file"),
    ],
)
def test_overwrite_refuses_what_is_not_a_run(tmp_path, monkeypatch, capsys, target, message):
    cwd = tmp_path / "work"
    (cwd / "notes").mkdir(parents=True)
    (cwd / "notes" / "keep.txt").write_text("mine")
    (cwd / "project").mkdir()
    (cwd / "project" / "config.yaml").write_text("a: 1\n")
    (cwd / "project" / "train.py").write_text("print(1)\n")
    (cwd / "marker.txt").write_text("marker")
    before = snapshot(tmp_path)
    monkeypatch.chdir(cwd)
    code, err = cli(capsys, "train", *TINY, "--run-dir", target, "--overwrite")
    assert refused(code, err, message), err
    assert snapshot(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["work"]


def test_overwrite_moves_the_old_run_aside(good, capsys):
    before = snapshot(good)
    code, err = cli(capsys, "train", *TINY, "--set", "model.latent_dim=2", "--run-dir", good, "--overwrite")
    assert code == 0, err
    (aside,) = good.parent.glob("good.replaced-*")
    assert snapshot(aside) == before  # the old run, whole, beside the new one
    assert any(str(aside) in line for line in err)
    assert "latent_dim: 2" in (good / "config.yaml").read_text() and (good / "best.safetensors").is_file()


@pytest.mark.parametrize(
    "args",
    [
        ["--set", "model.encoder.bogus=1"],  # fails while checking, before anything is written
        DIVERGES,  # fails in epoch 1, before the first checkpoint
    ],
)
def test_failed_overwrite_leaves_the_old_run_in_place(good, capsys, args):
    before = snapshot(good)
    code, err = cli(capsys, "train", *TINY, *args, "--run-dir", good, "--overwrite")
    assert code == 2 and err[-1].startswith("vaelab train: error:"), err
    assert snapshot(good) == before and sorted(p.name for p in good.parent.iterdir()) == ["good"]


# --- a failed command leaves nothing behind -----------------------------------------------------------------
@pytest.mark.parametrize(
    "bad, message",
    [
        ("model.encoder.bogus=1", "bogus"),
        ("model.posterior.type=diagonal_gausian", "diagonal_gausian"),
        ("objective.type=elbow", "elbow"),
        ("data.name=mnits", "mnits"),
    ],
)
def test_a_config_error_does_not_poison_the_run_dir(tmp_path, capsys, bad, message):
    run = tmp_path / "runs" / "r"
    code, err = cli(capsys, "train", *TINY, "--set", bad, "--run-dir", run)
    assert refused(code, err, message), err
    assert not (tmp_path / "runs").exists()
    code, err = cli(capsys, "train", *TINY, "--run-dir", run)  # the corrected command, without --overwrite
    assert code == 0, err
    assert (run / "checkpoints" / "latest").is_file()


def test_divergence_before_the_first_checkpoint_leaves_nothing(tmp_path, capsys):
    run = tmp_path / "r"
    code, err = cli(capsys, "train", *TINY, *DIVERGES, "--run-dir", run)
    assert code == 2 and "training stopped in epoch 1" in err[-1], err
    assert not run.exists()


# --- --resume --set ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("change", ["model.latent_dim=8", "data.subset=100", "train.lr=1", "objective.type=iwae"])
def test_resume_refuses_changes_to_the_model_or_data(good, capsys, change):
    before = snapshot(good)
    code, err = cli(capsys, "train", "--resume", good, "--set", change, "--no-progress", "--no-eval")
    assert refused(code, err, f"cannot change {change.split('=')[0]}"), err
    assert snapshot(good) == before
    assert cli(capsys, "evaluate", good, "--samples", "2", "--subset", "10")[0] == 0  # still a good run


def test_resume_may_train_longer(good, capsys):
    code, err = cli(capsys, "train", "--resume", good, "--set", "train.epochs=2", "--no-progress", "--no-eval")
    assert code == 0, err
    assert "epochs: 2" in (good / "config.yaml").read_text()
    assert (good / "checkpoints" / "latest").read_text().strip() == "epoch-000002"


def test_resume_keeps_no_eval_unless_told_otherwise(good, capsys):
    """`--no-eval` is saved with the run (eval.after_training: false): a plain resume of it skips the evaluation
    too, and `--set eval.after_training=true` turns it back on (a resumable key)."""
    assert "after_training: false" in (good / "config.yaml").read_text()
    code, err = cli(capsys, "train", "--resume", good, "--set", "train.epochs=2", "--no-progress")
    assert code == 0, err
    assert not list(good.glob("eval-*.json")), "the resume evaluated a run started with --no-eval"
    settings = ["--set", "train.epochs=3", "--set", "eval.after_training=true", "--set", "eval.is_samples=2"]
    code, err = cli(capsys, "train", "--resume", good, *settings, "--set", "eval.subset=10", "--no-progress")
    assert code == 0, err
    assert (good / "eval-test.json").is_file() and "after_training: true" in (good / "config.yaml").read_text()


def test_divergence_keeps_the_last_good_checkpoint(tmp_path, capsys):
    run = tmp_path / "r"
    assert cli(capsys, "train", *TINY, *DIVERGES_AFTER_EPOCH_1, "--run-dir", run)[0] == 0
    kept = {k: v for k, v in snapshot(run).items() if k.startswith("checkpoints/") or k == "best.safetensors"}
    code, err = cli(capsys, "train", "--resume", run, "--set", "train.epochs=4", "--no-progress", "--no-eval")
    assert code == 2 and "training stopped in epoch 2" in err[-1] and "epoch-000001" in err[-1], err
    assert {k: v for k, v in snapshot(run).items() if k in kept or k.startswith("checkpoints/")} == kept
    assert cli(capsys, "evaluate", run, "--samples", "2", "--subset", "10")[0] == 0


# --- files that cannot be written or read -----------------------------------------------------------------
@pytest.mark.parametrize(
    "command",
    [["train", *TINY, "--run-dir"], ["train", "--resume"], ["evaluate"], ["sample"]],
    ids=["train", "resume", "evaluate", "sample"],
)
def test_a_file_as_run_dir_is_one_line(tmp_path, capsys, command):
    path = tmp_path / "file"
    path.write_text("not a run")
    code, err = cli(capsys, *command, path)
    assert refused(code, err, "is a file"), err
    assert path.read_text() == "not a run"


@pytest.mark.parametrize(
    "command",
    [["train", "--resume", "{run}", "--set", "train.epochs=2"], ["evaluate", "{run}"], ["sample", "{run}"]],
    ids=["resume", "evaluate", "sample"],
)
def test_a_read_only_run_dir_is_one_line(good, capsys, monkeypatch, command):
    import os
    import tempfile

    before = snapshot(good)
    good.chmod(0o555)
    if os.geteuid() == 0:  # root writes anyway: refuse as a read-only file system would
        mkstemp = tempfile.mkstemp

        def read_only(*args, dir=None, **kw):
            if dir is not None and Path(dir).resolve() == good.resolve():
                raise PermissionError(13, "Permission denied")
            return mkstemp(*args, dir=dir, **kw)

        monkeypatch.setattr(tempfile, "mkstemp", read_only)
    try:
        code, err = cli(capsys, *[good if a == "{run}" else a for a in command], "--no-progress")
    finally:
        good.chmod(0o755)
    assert refused(code, err, "cannot write into"), err
    assert snapshot(good) == before


def test_resume_falls_back_from_a_corrupt_checkpoint(good, capsys):
    assert cli(capsys, "train", "--resume", good, "--set", "train.epochs=2", "--no-progress", "--no-eval")[0] == 0
    latest = good / "checkpoints" / "epoch-000002" / "model.safetensors"
    latest.write_bytes(latest.read_bytes()[:100])  # truncated
    code, err = cli(capsys, "train", "--resume", good, "--set", "train.epochs=3", "--no-progress", "--no-eval")
    assert code == 0, err
    assert any("epoch-000002" in line and "unreadable" in line and "epoch-000001" in line for line in err)
    assert sorted(p.name for p in (good / "checkpoints").glob("epoch-*")) == ["epoch-000002", "epoch-000003"]
