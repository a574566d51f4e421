"""`training.png`: a run's training at a glance, from the rows of its `metrics.jsonl` alone (one dict per epoch), so
it can be drawn again at any time (`vaelab.train.trainer.write_training_figure`).

Panels (`training_panels`), two to a row:
  * loss: train and validation loss (the negative bound per data point) against the epoch, the best validation
    epoch marked; validation every N epochs leaves gaps, a run without validation draws the train loss alone. The
    first epochs are often several times the final loss, so the y axis is cut at a robust top (`robust_ylim`) and the
    panel's title says how many points lie above it;
  * schedules: beta (KL warm-up), entropy_weight (entropy annealing, when it is not constant) and CP-VAE's
    Gumbel-Softmax temperature, with the learning rate on the right-hand axis;
  * throughput: steps/s;
  * CP-VAE categories (when the rows have them, `vaelab.train.diagnostics`): q(c) perplexity and categories used,
    with the clustering accuracies on the right-hand axis.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path

from vaelab.viz.curves import Panel, Series, save_curve_grid

#: The loss axis ends at median + SPREAD * (median - min) of the losses drawn (when that cuts something off).
SPREAD = 4.0
SCHEDULE_COLUMNS = {"beta": "beta (KL weight)", "entropy_weight": "entropy weight", "temperature": "temperature"}
CATEGORY_COLUMNS = {"q_c_perplexity": "q(c) perplexity", "categories_used": "categories used"}
ACCURACY_COLUMNS = {"majority_accuracy": "majority accuracy", "hungarian_accuracy": "Hungarian accuracy"}


def _number(v) -> float | None:
    """`v` as a finite float, else None (missing, NaN, Inf, not a number)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def epoch_rows(rows: Sequence[dict]) -> list[dict]:
    """The rows that carry an integer `epoch`, in epoch order, the last row of a repeated epoch kept (a session
    killed between its metrics line and its checkpoint repeats that epoch when resumed)."""
    by_epoch = {}
    for row in rows:
        epoch = row.get("epoch") if isinstance(row, dict) else None
        if isinstance(epoch, int) and not isinstance(epoch, bool):
            by_epoch[epoch] = row
    return [by_epoch[e] for e in sorted(by_epoch)]


def column(rows: Sequence[dict], key: str) -> tuple[list[int], list[float]]:
    """(epochs, values) of the rows that have `key` (a non-finite value kept: the panel counts it as not shown)."""
    kept = [(row["epoch"], row[key]) for row in rows if row.get(key) is not None]
    return [e for e, _ in kept], [float(v) if _number(v) is not None else math.nan for _, v in kept]


def robust_ylim(values: Sequence[float], spread: float = SPREAD) -> tuple[tuple[float, float], int] | None:
    """((low, high), points above high) for an axis that keeps the bulk of `values` visible: high = median +
    `spread` (median - min), low = min, padded by 5% of the range; None when that would cut nothing off (or there
    are too few values to judge)."""
    finite = [f for f in map(_number, values) if f is not None]
    if len(finite) < 3:
        return None
    low, mid, top = min(finite), statistics.median(finite), max(finite)
    high = mid + spread * (mid - low)
    if not high > low or high >= top:
        return None
    pad = 0.05 * (high - low)
    return (low - pad, high + pad), sum(f > high + pad for f in finite)


def best_validation(rows: Sequence[dict]) -> tuple[int, float] | None:
    """(epoch, loss) of the lowest finite validation loss (the first, as the trainer keeps it), else None."""
    found = [(v, row["epoch"]) for row in rows if (v := _number(row.get("valid_loss"))) is not None]
    if not found:
        return None
    loss, epoch = min(found, key=lambda t: t[0])  # min keeps the first of equal losses
    return epoch, loss


def loss_panel(rows: Sequence[dict]) -> Panel:
    """Train and validation loss against the epoch (module docstring)."""
    series: Series = {"train": column(rows, "train_loss")}
    valid = column(rows, "valid_loss")
    title = "loss (negative bound per point)"
    if valid[0]:
        series["validation"] = valid
    else:
        title += "; no validation"
    best = best_validation(rows)
    vlines = {f"best validation {best[1]:.2f} (epoch {best[0]})": float(best[0])} if best else {}
    cut = robust_ylim(series["train"][1] + valid[1])
    if cut is not None:
        title += f"; y axis cut: {cut[1]} point(s) above"
    return Panel(series, "epoch", "loss", title, vlines=vlines, ylim=cut[0] if cut else None)


def _varies(values: Sequence[float]) -> bool:
    finite = [f for f in map(_number, values) if f is not None]
    return bool(finite) and max(finite) > min(finite)


def schedule_panel(rows: Sequence[dict]) -> Panel | None:
    """beta, entropy_weight (if it varies), the temperature, and the learning rate on the right; None if none is
    recorded."""
    series: Series = {}
    for key, label in SCHEDULE_COLUMNS.items():
        x, y = column(rows, key)
        if x and (key != "entropy_weight" or _varies(y)):
            series[label] = (x, y)
    lr = column(rows, "lr")
    if not lr[0]:
        return Panel(series, "epoch", "weight", "schedules") if series else None
    rates = [f for f in map(_number, lr[1]) if f is not None and f > 0]
    logy = bool(rates) and max(rates) >= 10 * min(rates)
    if not series:
        return Panel({"learning rate": lr}, "epoch", "learning rate", "schedules", logy=logy)
    return Panel(series, "epoch", "weight", "schedules", right={"learning rate": lr}, right_ylabel="learning rate",
                 right_logy=logy)  # fmt: skip


def throughput_panel(rows: Sequence[dict]) -> Panel | None:
    steps = column(rows, "steps_per_s")
    return Panel({"training steps/s": steps}, "epoch", "steps/s", "throughput") if steps[0] else None


def category_panel(rows: Sequence[dict]) -> Panel | None:
    """CP-VAE's category use per validation epoch, None when the rows have none."""
    series = {label: column(rows, key) for key, label in CATEGORY_COLUMNS.items() if column(rows, key)[0]}
    if not series:
        return None
    right = {label: column(rows, key) for key, label in ACCURACY_COLUMNS.items() if column(rows, key)[0]}
    title = "CP-VAE: q(c) over the validation set"
    return Panel(series, "epoch", "categories", title, right=right, right_ylabel="clustering accuracy",
                 right_ylim=(0.0, 1.0))  # fmt: skip


def training_panels(rows: Sequence[dict]) -> list[Panel]:
    """The panels of `training.png` for the metrics rows `rows` (any order; module docstring); [] without rows."""
    rows = epoch_rows(rows)
    if not rows:
        return []
    made = [loss_panel(rows), schedule_panel(rows), throughput_panel(rows), category_panel(rows)]
    return [p for p in made if p is not None]


def stop_note(provenance: dict, last_epoch: int) -> str:
    """Why training stopped, as the run's provenance (`vaelab.provenance`) tells it: its last session's stop reason
    when training finished (completed, early stopping), else that it was interrupted or is still going."""
    sessions = provenance.get("sessions") or []
    if not sessions:
        return ""
    last = sessions[-1]
    if last.get("finished_training"):
        return str(last.get("stop_reason") or "finished")
    epochs = last.get("epochs") or [None, last_epoch]
    if last.get("finished"):
        return f"not finished: stopped after epoch {epochs[-1]} (interrupted or failed; resume continues it)"
    return f"not finished: no final record after epoch {epochs[-1]} (still training, or killed)"


def save_training_figure(rows: Sequence[dict], path: str | Path, title: str = "") -> Path | None:
    """Write `training.png` for the metrics rows `rows` to `path`; None (nothing written) without rows."""
    panels = training_panels(rows)
    if not panels:
        return None
    return save_curve_grid([panels[i : i + 2] for i in range(0, len(panels), 2)], path, title)
