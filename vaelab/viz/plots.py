"""Plots of numbers: histograms (e.g. per-example test log-likelihoods, VampPrior Fig. 7)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor

from vaelab.viz.figure import pyplot, save_figure


def save_histogram(values: Tensor, path: str | Path, xlabel: str, title: str = "", bins: int = 50) -> Path:
    """Histogram of the finite entries of `values` `[N]` with their mean marked, written as PNG. NaN and +-Inf
    entries cannot be binned: they are left out, and their count is written in the legend."""
    plt = pyplot()

    v = values.detach().double().cpu().numpy()
    finite = np.isfinite(v)
    kept, left_out = v[finite], int((~finite).sum())
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    if kept.size:
        ax.hist(kept, bins=bins, color="#4c72b0", alpha=0.85)
        label = f"mean {kept.mean():.2f}" + (f" of the {kept.size} finite" if left_out else "")
        ax.axvline(kept.mean(), color="k", linestyle="--", linewidth=1, label=label)
    if left_out:
        ax.plot([], [], " ", label=f"{left_out} NaN/Inf not shown")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("examples")
    ax.set_title(title, fontsize=10)
    if kept.size or left_out:
        ax.legend(frameon=False)
    return save_figure(fig, path)
