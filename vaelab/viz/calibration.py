"""Reliability diagrams (Guo et al. 2017, Fig. 1): per-bin accuracy against confidence, as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor

from vaelab.evaluation.calibration import max_confidence_bins, true_class_bins
from vaelab.viz.figure import pyplot, save_figure


def save_reliability_diagram(probs: Tensor, targets: Tensor, path: str | Path, title: str = "", bins: int = 10) -> Path:
    """Two panels for predictive probabilities `probs` `[N, C]` and classes `targets` `[N]`: left, Guo et al.'s
    equal-width bins of the max confidence (bars: accuracy; red: the gap to the diagonal); right, SIWAE app.
    B.1's equal-mass bins of the true-class confidence (points: fraction correct against mean p(y_true))."""
    plt = pyplot()

    guo, siwae = max_confidence_bins(probs, targets, bins), true_class_bins(probs, targets, bins)
    fig, (left, right) = plt.subplots(1, 2, figsize=(8.4, 4), dpi=120)
    width = 1.0 / bins
    centres = (np.arange(bins) + 0.5) * width
    acc, conf = np.nan_to_num(guo.accuracy.numpy()), guo.confidence.numpy()
    left.bar(centres, acc, width=width, edgecolor="k", color="#4c72b0", label="accuracy")
    filled = guo.count.numpy() > 0
    left.bar(
        centres[filled],
        (conf - acc)[filled],
        bottom=acc[filled],
        width=width,
        edgecolor="r",
        color="r",
        alpha=0.3,
        label="gap to confidence",
    )
    left.set_title(f"max confidence, equal width: ECE {guo.weighted_gap():.3f}", fontsize=9)
    left.set_xlabel("confidence max_y p(y|x)")
    left.set_ylabel("accuracy")
    keep = siwae.count > 0
    right.plot(siwae.confidence[keep].numpy(), siwae.accuracy[keep].numpy(), "o-", color="#dd8452")
    right.set_title(f"true-class confidence, equal mass (SIWAE): ECE {siwae.mean_gap():.3f}", fontsize=9)
    right.set_xlabel("mean p(y_true|x) in bin")
    right.set_ylabel("fraction correct in bin")
    for ax in (left, right):
        ax.plot([0, 1], [0, 1], "k--", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
    left.legend(frameon=False, loc="upper left", fontsize=8)
    return save_figure(fig, path, title)
