"""Plots of numbers: histograms (e.g. per-example test log-likelihoods, VampPrior Fig. 7) and paired per-point
values (`vaelab compare`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor

from vaelab.viz.figure import pyplot, save_figure


def save_histogram(values: Tensor, path: str | Path, xlabel: str, title: str = "", bins: int = 50) -> Path:
    """Histogram of the finite entries of `values` `[N]` with their mean marked, written as PNG. NaN and +-Inf
    entries cannot be binned: they are left out, and their count is written in the legend."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    _histogram(ax, values, xlabel, bins)
    ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def _histogram(ax, values: Tensor, xlabel: str, bins: int = 50) -> None:
    """`save_histogram`'s picture, drawn on `ax`."""
    v = values.detach().double().cpu().numpy()
    finite = np.isfinite(v)
    kept, left_out = v[finite], int((~finite).sum())
    if kept.size:
        ax.hist(kept, bins=bins, color="#4c72b0", alpha=0.85)
        label = f"mean {kept.mean():.2f}" + (f" of the {kept.size} finite" if left_out else "")
        ax.axvline(kept.mean(), color="k", linestyle="--", linewidth=1, label=label)
    if left_out:
        ax.plot([], [], " ", label=f"{left_out} NaN/Inf not shown")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("examples")
    if kept.size or left_out:
        ax.legend(frameon=False)


def save_paired_figure(a: Tensor, b: Tensor, path: str | Path, label_a: str, label_b: str, quantity: str,
                       title: str = "") -> Path:  # fmt: skip
    """Two values per point, `a` and `b` `[N]`, written as PNG: b_i against a_i (with the diagonal a = b), and
    the histogram of the paired differences a_i - b_i with their mean and zero marked."""
    plt = pyplot()
    x, y = a.detach().double().cpu().numpy(), b.detach().double().cpu().numpy()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=120)
    left.scatter(x, y, s=4, alpha=0.5, color="#4c72b0", linewidths=0)
    both = np.concatenate([x, y])
    lo, hi = float(both.min()), float(both.max())
    left.plot([lo, hi], [lo, hi], color="k", linewidth=0.8, label="A = B")
    pad = 0.03 * (hi - lo or 1.0)
    left.set_xlim(lo - pad, hi + pad)
    left.set_ylim(lo - pad, hi + pad)
    left.set_aspect("equal", adjustable="box")
    left.set_xlabel(f"{quantity}, A: {label_a}", fontsize=8)
    left.set_ylabel(f"{quantity}, B: {label_b}", fontsize=8)
    left.legend(frameon=False)
    _histogram(right, a - b, f"{quantity}: A - B per point")
    right.axvline(0.0, color="#c44e52", linewidth=1)
    return save_figure(fig, path, title)
