"""Histograms of generated one-dimensional data against the data (CP-VAE, Lavda et al., Figures 3 and 4)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from vaelab.viz.figure import pyplot, save_figure


def save_sample_histograms(panels: dict[str, Tensor], reference: Tensor, path: str | Path, title: str = "") -> Path:
    """One panel per entry of `panels` (label -> generated values `[N]` or `[N, 1]`), each over the histogram of
    `reference` (e.g. the training data), as densities on common bins; written as PNG."""
    plt = pyplot()

    ref = reference.detach().float().cpu().reshape(-1)
    values = {k: v.detach().float().cpu().reshape(-1) for k, v in panels.items()}
    lo, hi = torch.quantile(ref, torch.tensor([0.001, 0.999])).tolist()
    pad = 0.25 * (hi - lo)
    bins = torch.linspace(lo - pad, hi + pad, 81).numpy()
    fig, axes = plt.subplots(1, len(values), figsize=(4 * len(values), 3.2), dpi=120, squeeze=False)
    for ax, (label, v) in zip(axes[0], values.items(), strict=True):
        ax.hist(ref.numpy(), bins=bins, density=True, color="0.75", label=f"data ({ref.numel()})")
        ax.hist(v.numpy(), bins=bins, density=True, histtype="step", color="#c44e52", linewidth=1.5, label=label)
        ax.set_xlabel("x")
        ax.legend(frameon=False, fontsize=8)
    axes[0][0].set_ylabel("density")
    fig.suptitle(title, fontsize=10)  # even when empty, as it always was
    return save_figure(fig, path)
