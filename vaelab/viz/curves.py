"""Line plots of numbers against a training or sweep axis (one line per labelled series), as PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def save_curves(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    xlabel: str,
    ylabel: str,
    title: str = "",
    logy: bool = False,
    logx: bool = False,
    hlines: dict[str, float] | None = None,
    xticks: Sequence[float] | None = None,
) -> Path:
    """One line with markers per `series` entry `label -> (x, y)`; `hlines` adds dashed reference levels;
    `xticks` puts plain labels at those values (e.g. a sweep's grid values on a log axis)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    for label, (x, y) in series.items():
        ax.plot(list(x), list(y), marker="o", markersize=3, linewidth=1.2, label=label)
    for label, level in (hlines or {}).items():
        ax.axhline(level, color="k", linestyle="--", linewidth=1, label=label)
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    if xticks is not None:
        ax.set_xticks(list(xticks), [f"{v:g}" for v in xticks])
        ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
