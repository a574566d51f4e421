"""Plots of numbers: histograms (e.g. per-example test log-likelihoods, VampPrior Fig. 7)."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from vaelab.viz.figure import pyplot, save_figure


def save_histogram(values: Tensor, path: str | Path, xlabel: str, title: str = "", bins: int = 50) -> Path:
    """Histogram of `values` `[N]` with its mean marked, written as PNG."""
    plt = pyplot()

    v = values.detach().float().cpu().numpy()
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    ax.hist(v, bins=bins, color="#4c72b0", alpha=0.85)
    ax.axvline(v.mean(), color="k", linestyle="--", linewidth=1, label=f"mean {v.mean():.2f}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("examples")
    ax.set_title(title, fontsize=10)
    ax.legend(frameon=False)
    return save_figure(fig, path)
