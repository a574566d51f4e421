"""training.png (`vaelab.viz.training`, `vaelab.train.trainer.write_training_figure`): the panels built from
metrics rows (gaps in validation, none at all, cut lines, the robust loss axis, the schedules present), and the
picture written when a session ends (finished, early-stopped, interrupted, resumed) and by `vaelab sample`."""

from __future__ import annotations

import json

import pytest
import torch

import vaelab.viz.training as training
from vaelab import recording
from vaelab.app import runs
from vaelab.app.cli import main
from vaelab.config import load_config
from vaelab.train.trainer import Trainer, fit_with_provenance, write_training_figure
from vaelab.viz.training import robust_ylim, stop_note, training_panels

TINY = [
    "data.subset=300",
    "data.valid_subset=100",
    "model.latent_dim=4",
    "model.encoder={type: mlp, hidden: [32]}",
    "model.decoder={type: mlp, hidden: [32]}",
    "train.progress=false",
    "objective.warmup_epochs=2",
]


def rows_of(n: int, validate_every: int = 1, **columns) -> list[dict]:
    """n metrics rows like the trainer's: the loss falls from 3x to 1x of 100, validation every `validate_every`."""
    out = []
    for e in range(1, n + 1):
        row = {"epoch": e, "lr": 1e-3, "beta": min(1.0, e / 3), "entropy_weight": 1.0, "steps_per_s": 50.0 + e}
        row["train_loss"] = 100.0 + 200.0 * 0.5 ** (e - 1)
        if e % validate_every == 0:
            row["valid_loss"] = row["train_loss"] + 5.0 + (e - n / 2) ** 2 / n  # lowest mid-run: overfitting after
        out.append({**row, **{k: v(e) for k, v in columns.items()}})
    return out


def by_title(panels) -> dict:
    return {p.title.split(";")[0].split(":")[0]: p for p in panels}


def test_panels_follow_every_epoch_with_validation_gaps_and_mark_the_best():
    rows = rows_of(12, validate_every=3, temperature=lambda e: 1.0 - 0.02 * e)
    panels = by_title(training_panels(rows[::-1]))  # any order
    loss = panels["loss (negative bound per point)"]
    assert loss.series["train"][0] == list(range(1, 13))
    assert loss.series["validation"][0] == [3, 6, 9, 12]
    valid = {r["epoch"]: r["valid_loss"] for r in rows if "valid_loss" in r}
    best = min(valid, key=valid.get)
    assert list(loss.vlines.values()) == [best] and f"epoch {best}" in next(iter(loss.vlines))
    # the first epochs (300, 200 nats) lie far above the rest: the axis is cut and the title says so
    low, high = loss.ylim
    drawn = loss.series["train"][1] + loss.series["validation"][1]
    assert low < min(drawn) and 110 < high < 200
    above = sum(v > high for v in drawn)
    assert above >= 3 and f"y axis cut: {above} point(s) above" in loss.title
    schedules = panels["schedules"]
    assert set(schedules.series) == {"beta (KL weight)", "temperature"}  # entropy_weight is constant: left out
    assert schedules.right["learning rate"][0] == list(range(1, 13)) and not schedules.right_logy
    assert panels["throughput"].series["training steps/s"][1] == [50.0 + e for e in range(1, 13)]
    assert "CP-VAE" not in panels


def test_panels_without_validation_and_with_varying_entropy_weight_and_lr():
    rows = rows_of(5, validate_every=10)
    for r in rows:
        r["entropy_weight"], r["lr"] = min(1.0, r["epoch"] / 4), 1e-2 * 0.1 ** r["epoch"]
    panels = by_title(training_panels(rows))
    loss = panels["loss (negative bound per point)"]
    assert set(loss.series) == {"train"} and not loss.vlines and "no validation" in loss.title
    assert "entropy weight" in panels["schedules"].series and panels["schedules"].right_logy


def test_robust_axis_cuts_only_outliers():
    assert robust_ylim([5.0, 4.6, 4.3, 4.1, 4.0]) is None  # a steady descent: everything shown
    assert robust_ylim([9.0, 4.0, 3.9, 3.8])[1] == 1  # one epoch far above the rest: cut
    assert robust_ylim([1.0, 1.0]) is None and robust_ylim([]) is None
    (low, high), above = robust_ylim([-50.0, -90.0, -99.0, -100.0, -100.5])  # negative losses (continuous data)
    assert low < -100.5 < high < -90.0 and above == 2  # high = median + 4 (median - min) = -93


def test_category_panel_appears_with_the_cpvae_columns():
    rows = rows_of(4, validate_every=2)
    for r in rows:
        if "valid_loss" in r:
            r.update(q_c_perplexity=9.0 / r["epoch"], categories_used=10 - r["epoch"], hungarian_accuracy=0.2)
    panel = by_title(training_panels(rows))["CP-VAE"]
    assert panel.series["q(c) perplexity"] == ([2, 4], [4.5, 2.25]) and panel.series["categories used"][1] == [8, 6]
    assert set(panel.right) == {"Hungarian accuracy"}


def test_stop_note_reads_the_last_session():
    done = {"finished": "t", "finished_training": True, "stop_reason": "early stopping: no improvement for 2 epochs"}
    assert stop_note({"sessions": [done]}, 4) == done["stop_reason"]
    cut = {"finished": "t", "finished_training": False, "epochs": [0, 3]}
    assert "not finished: stopped after epoch 3" in stop_note({"sessions": [done, cut]}, 3)
    assert "killed" in stop_note({"sessions": [{"finished": None, "epochs": [3, 5]}]}, 5)
    assert stop_note({"sessions": []}, 1) == ""


def test_cut_lines_and_rows_without_an_epoch_still_draw(tmp_path):
    rows = rows_of(3)
    text = "".join(json.dumps(r) + "\n" for r in rows) + '{"note": "no epoch"}\n{"epoch": 4, "train_l'
    (tmp_path / "metrics.jsonl").write_text(text)
    assert write_training_figure(tmp_path) == tmp_path / "training.png" and (tmp_path / "training.png").stat().st_size
    assert write_training_figure(tmp_path / "missing") is None  # no metrics yet: nothing drawn


@pytest.fixture
def drawn(monkeypatch):
    """The panels and title of every training.png drawn: [(epochs of the train loss, title)]."""
    seen = []
    draw = training.save_curve_grid

    def spy(grid, path, title=""):
        loss = grid[0][0]
        seen.append((loss.series["train"][0], title, {p.title.split(":")[0] for row in grid for p in row if p}))
        return draw(grid, path, title)

    monkeypatch.setattr(training, "save_curve_grid", spy)
    return seen


def test_written_after_train_interrupt_resume_and_early_stop(tmp_path, drawn):
    cfg = load_config(None, [*TINY, "train.epochs=3"])
    run_dir = runs.new_run_dir(cfg, tmp_path / "r")
    (run_dir / "config.yaml").write_text(cfg.to_yaml())
    run = recording.build_run(cfg, run_dir)
    trainer = Trainer(cfg, run_dir, run.model, run.dataset, run.device)
    epoch = trainer.train_epoch

    def interrupted(e):
        if e == 1:
            raise KeyboardInterrupt
        return epoch(e)

    trainer.train_epoch = interrupted
    with pytest.raises(KeyboardInterrupt):
        fit_with_provenance(trainer)
    assert (run_dir / "training.png").is_file()
    assert drawn[-1][0] == [1] and "not finished: stopped after epoch 1" in drawn[-1][1]
    runs.train(cfg, run_dir, resume=True)  # the resumed session draws every epoch of metrics.jsonl
    assert drawn[-1][0] == [1, 2, 3] and drawn[-1][1] == "r: completed 3 epochs"
    assert not any("CP-VAE" in titles for _, _, titles in drawn)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert not any("q_c_perplexity" in json.loads(line) for line in lines)  # not a CP-VAE: no category columns

    stop = load_config(None, [*TINY, "train.epochs=20", "train.lr=0", "train.early_stopping=2"])
    stopped = runs.train(stop, tmp_path / "stopped").path
    epochs = [json.loads(line)["epoch"] for line in (stopped / "metrics.jsonl").read_text().splitlines()]
    assert len(epochs) < 20 and drawn[-1][0] == epochs
    assert drawn[-1][1] == f"stopped: {len(epochs)} epochs; early stopping: no improvement for 2 epochs"


def test_vaelab_sample_draws_it_again(tmp_path, drawn, capsys):
    cfg = load_config(None, [*TINY, "train.epochs=2"])
    run_dir = runs.new_run_dir(cfg, tmp_path / "r")
    runs.train(cfg, run_dir)
    (run_dir / "training.png").unlink()
    assert main(["sample", str(run_dir), "--n", "4", "--out", str(tmp_path / "pictures")]) == 0
    assert (tmp_path / "pictures" / "training.png").is_file() and drawn[-1][0] == [1, 2]
    assert f"wrote {tmp_path / 'pictures' / 'training.png'}" in capsys.readouterr().out


def test_a_picture_that_fails_does_not_hide_the_run(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(training, "save_curve_grid", broken)
    cfg = load_config(None, [*TINY, "train.epochs=1"])
    run = runs.train(cfg, runs.new_run_dir(cfg, tmp_path / "r"))
    assert (run.path / "best.safetensors").is_file() and not (run.path / "training.png").exists()
    assert "could not draw" in capsys.readouterr().err and torch.isfinite(next(run.model.parameters())).all()


@pytest.mark.parametrize("right_logy", [False, True])
def test_a_two_axis_legend_covers_no_point_of_either_axis(right_logy):
    """With a right y axis, matplotlib's loc="best" sees only the left axis's lines: the CP-VAE panel's legend lay
    over the accuracy curves. Here both axes' lines span the whole box; after drawing, no point of either (in
    display coordinates) may fall inside the legend's box, also on a log right axis."""
    from vaelab.viz.curves import Panel, _draw
    from vaelab.viz.figure import pyplot

    epochs = list(range(1, 101))
    left = {"perplexity": (epochs, [9.8 + 0.002 * (e % 7) for e in epochs]), "used": (epochs, [10.0] * 100)}
    right = {"majority": (epochs, [0.4 + 0.003 * e for e in epochs]), "hungarian": (epochs, [0.01 * e for e in epochs])}
    if right_logy:
        right["hungarian"] = (epochs, [1e-4 * 1.1**e for e in epochs])
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    _draw(ax, Panel(left, "epoch", "categories", right=right, right_logy=right_logy))
    fig.tight_layout()
    renderer = fig.canvas.get_renderer()
    box = ax.get_legend().get_window_extent(renderer)
    twin = next(a for a in fig.axes if a is not ax)
    for axis, series in ((ax, left), (twin, right)):
        for x, y in series.values():
            points = axis.transData.transform(list(zip(x, y, strict=True)))
            assert not any(box.contains(px, py) for px, py in points)
    plt.close(fig)
