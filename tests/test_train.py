"""The trainer on a small slice of real data: determinism, resume, non-finite steps, early stopping."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from vaelab import recording
from vaelab.app import runs
from vaelab.config import load_config
from vaelab.errors import TrainingDiverged
from vaelab.train.checkpoint import latest_checkpoint
from vaelab.train.trainer import Trainer

TINY = [
    "data.subset=600",
    "data.valid_subset=200",
    "model.latent_dim=4",
    "model.encoder={type: mlp, hidden: [32]}",
    "model.decoder={type: mlp, hidden: [32]}",
    "train.progress=false",
    "train.lr=1e-3",
    "objective.warmup_epochs=2",
]


def tiny_config(*extra):
    return load_config(None, TINY + list(extra))


def metric_rows(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for r in rows:  # wall-clock figures differ between runs
        r.pop("epoch_time_s"), r.pop("steps_per_s")
    return rows


def test_resumed_run_matches_uninterrupted_run(tmp_path):
    cfg = tiny_config("train.epochs=4")
    full = runs.train(cfg, runs.new_run_dir(cfg, tmp_path / "full"))
    # the same run stopped after epoch 2, then resumed from its checkpoint in a fresh Trainer
    part_dir = runs.new_run_dir(cfg, tmp_path / "part")
    runs.train(load_config(None, TINY + ["train.epochs=2"]), part_dir)
    (part_dir / "config.yaml").write_text(cfg.to_yaml())
    torch.manual_seed(12345)  # the resumed run must not depend on the caller's RNG state
    resumed = runs.train(cfg, part_dir, resume=True)
    assert metric_rows(part_dir) == metric_rows(tmp_path / "full")
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_training_improves_the_bound(tmp_path):
    cfg = tiny_config("train.epochs=4", "objective.warmup_epochs=0")
    runs.train(cfg, runs.new_run_dir(cfg, tmp_path / "r"))
    rows = metric_rows(tmp_path / "r")
    assert rows[-1]["valid_loss"] < rows[0]["valid_loss"] - 5  # nats


def _nan_on(steps):
    """Wrap a trainer's loss so that the given global steps produce NaN."""

    def patch(trainer):
        forward = trainer.module.forward

        def poisoned(x, beta=1.0, entropy_weight=1.0):
            out = forward(x, beta, entropy_weight)
            return out * float("nan") if trainer.state.step in steps else out

        trainer.module.forward = poisoned

    return patch


def _trainer(cfg, path):
    run = recording.build_run(cfg, path)
    return Trainer(cfg, path, run.model, run.dataset, run.device)


def test_isolated_nonfinite_steps_are_skipped(tmp_path):
    cfg = tiny_config("train.epochs=1")
    trainer = _trainer(cfg, tmp_path)
    _nan_on({2, 3})(trainer)
    with pytest.warns(UserWarning, match="skipped 2 step"):
        state = trainer.fit()
    assert state.skipped_steps == 2 and state.finished
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_persistent_nonfinite_loss_stops_and_keeps_last_checkpoint(tmp_path):
    cfg = tiny_config("train.epochs=3", "train.max_nonfinite_steps=3")
    trainer = _trainer(cfg, tmp_path)
    _nan_on(set(range(6, 1000)))(trainer)  # epoch 1 (steps 0-5) is clean
    with pytest.raises(TrainingDiverged, match="4 consecutive steps had a NaN/Inf") as err:
        trainer.fit()
    assert "epoch-000001" in str(err.value)
    assert latest_checkpoint(tmp_path / "checkpoints").name == "epoch-000001"


def test_nonfinite_steps_are_counted_across_epochs(tmp_path):
    # 6 steps per epoch, all NaN from epoch 2 on: no epoch alone reaches 10, but 11 in a row stop the run
    cfg = tiny_config("train.epochs=5", "train.max_nonfinite_steps=10")
    trainer = _trainer(cfg, tmp_path)
    _nan_on(set(range(6, 1000)))(trainer)
    with pytest.raises(TrainingDiverged, match="training stopped in epoch 3: 11 consecutive steps") as err:
        trainer.fit()
    assert "epoch-000001" in str(err.value)
    # epoch 2 had no good step: no checkpoint and no best weights from it
    assert [p.name for p in (tmp_path / "checkpoints").glob("epoch-*")] == ["epoch-000001"]
    best, first = (
        load_file(tmp_path / "best.safetensors"),
        load_file(tmp_path / "checkpoints/epoch-000001/model.safetensors"),
    )
    assert all(torch.equal(best[k], first[k]) for k in first)


def test_early_stopping_waits_for_warmup_then_stops(tmp_path):
    # lr = 0: the validation loss never improves after the first epoch
    cfg = tiny_config("train.epochs=20", "train.lr=0", "train.early_stopping=2", "objective.warmup_epochs=3")
    state = _trainer(cfg, tmp_path).fit()
    assert state.finished and state.stop_reason.startswith("early stopping")
    # beta = 1/3, 2/3 in epochs 1-2 (no counting while beta < 1); epochs 3 and 4 count: stop after 4
    assert state.epoch == 4


def test_resume_before_the_first_checkpoint_starts_over_identically(tmp_path):
    cfg = tiny_config("train.epochs=2")
    runs.train(cfg, runs.new_run_dir(cfg, tmp_path / "full"))
    early = runs.new_run_dir(cfg, tmp_path / "early")
    (early / "config.yaml").write_text(cfg.to_yaml())
    # killed after writing a metrics line (the last one cut short) but before any checkpoint
    (early / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 1.0}\n{"epoch": 2, "tr')
    runs.train(cfg, early, resume=True)
    assert metric_rows(early) == metric_rows(tmp_path / "full")


def test_per_step_learning_rate_schedule_halves_within_epochs(tmp_path):
    """SIWAE app. D.3's schedule: lr * 0.5^(step // every_steps), applied before each optimizer step."""
    cfg = tiny_config("train.epochs=2", "train.lr_schedule={type: step, every_steps: 4, gamma: 0.5}")
    trainer = _trainer(cfg, runs.new_run_dir(cfg, tmp_path / "r"))
    used, step = [], trainer.optimizer.step

    def record(*args, **kwargs):
        used.append(trainer.optimizer.param_groups[0]["lr"])
        return step(*args, **kwargs)

    trainer.optimizer.step = record
    trainer.fit()
    assert len(used) == 12  # 600 examples / batch 100, two epochs
    assert used == pytest.approx([1e-3 * 0.5 ** (i // 4) for i in range(12)])
    assert metric_rows(tmp_path / "r")[-1]["lr"] == pytest.approx(2.5e-4)


def test_two_sessions_of_one_process_in_the_same_second_are_both_recorded(tmp_path):
    """A fit and its resume in one process can start within the same second: their provenance ids still differ."""
    from vaelab import provenance

    first, second = (provenance.start_session(tmp_path, torch.device("cpu")) for _ in range(2))
    for session in (first, second):
        provenance.record_session(tmp_path, session, finished=True)
    assert len(provenance.read(tmp_path)["sessions"]) == 2
