"""Line plots of numbers against a training or sweep axis (one line per labelled series), as PNG: one panel
(`save_curves`) or a grid of panels (`save_curve_grid`, e.g. a sweep's metrics x grid axes)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vaelab.viz.figure import pyplot, save_figure

Series = dict[str, tuple[Sequence[float], Sequence[float]]]


@dataclass
class Panel:
    """One panel: `series` `label -> (x, y)` drawn as lines with markers, dashed `hlines` `label -> level`, dotted
    vertical `vlines` `label -> x`, plain tick labels at `xticks` (e.g. a sweep's grid values on a log axis), the
    y axis limited to `ylim` (None: matplotlib's choice), and `right` series on a second y axis on the right
    (`right_ylabel`, `right_logy`, `right_ylim`), for quantities of another scale (a learning rate beside the
    warm-up weights)."""

    series: Series
    xlabel: str
    ylabel: str
    title: str = ""
    logy: bool = False
    logx: bool = False
    hlines: dict[str, float] = field(default_factory=dict)
    xticks: Sequence[float] | None = None
    vlines: dict[str, float] = field(default_factory=dict)
    ylim: tuple[float, float] | None = None
    right: Series = field(default_factory=dict)
    right_ylabel: str = ""
    right_logy: bool = False
    right_ylim: tuple[float, float] | None = None


def _finite(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):  # None, or not a number
        return False


def _lines(ax, series: Series, first_color: int = 0) -> tuple[list[float], list[float]]:
    """Draw each series on `ax` (colours from the cycle, starting at `first_color`); the x and y values drawn.
    Points that are NaN, +-Inf or missing cannot be drawn: they are left out and counted in the legend."""
    xs, ys = [], []
    for i, (label, (x, y)) in enumerate(series.items()):
        pairs = list(zip(x, y, strict=True))
        kept = [(float(a), float(b)) for a, b in pairs if _finite(a) and _finite(b)]
        left_out = f" ({len(pairs) - len(kept)} NaN/Inf not shown)" if len(kept) < len(pairs) else ""
        ax.plot([a for a, _ in kept], [b for _, b in kept], marker="o", markersize=3, linewidth=1.2,
                color=f"C{(first_color + i) % 10}", label=label + left_out)  # fmt: skip
        xs += [a for a, _ in kept]
        ys += [b for _, b in kept]
    return xs, ys


def _draw(ax, p: Panel) -> None:
    """Draw panel `p` on `ax` (`_lines`); a log axis is used only when some value drawn on it is positive."""
    xs, ys = _lines(ax, p.series)
    styles = ["--", ":", "-.", (0, (5, 1))]
    for i, (label, level) in enumerate(p.hlines.items()):
        if _finite(level):
            ax.axhline(level, color="k", linestyle=styles[i % len(styles)], linewidth=1, label=label)
            ys.append(float(level))
        else:
            ax.plot([], [], " ", label=f"{label}: {level} (not shown)")
    for label, at in p.vlines.items():
        if _finite(at):
            ax.axvline(float(at), color="0.4", linestyle=":", linewidth=1.2, label=label)
    if p.logy and any(v > 0 for v in ys):
        ax.set_yscale("log")
    if p.logx and any(v > 0 for v in xs):
        ax.set_xscale("log")
    if p.xticks is not None:
        ax.set_xticks(list(p.xticks), [f"{v:g}" for v in p.xticks])
        ax.minorticks_off()
    if p.ylim is not None:
        ax.set_ylim(*p.ylim)
    ax.set_xlabel(p.xlabel)
    ax.set_ylabel(p.ylabel)
    ax.set_title(p.title, fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    if p.right:
        twin = ax.twinx()
        _, right_ys = _lines(twin, p.right, first_color=len(p.series))
        if p.right_logy and any(v > 0 for v in right_ys):
            twin.set_yscale("log")
        if p.right_ylim is not None:
            twin.set_ylim(*p.right_ylim)
        twin.set_ylabel(p.right_ylabel)
        more_handles, more_labels = twin.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + [f"{label} (right)" for label in more_labels]
        # matplotlib's loc="best" sees only the left axis's lines, so the legend went over the right axis's: put it
        # at the top, in two columns, and raise both axes' upper limits until no line reaches it
        legend = ax.legend(handles, labels, frameon=False, fontsize=7, loc="upper left", ncol=2)
        _clear_below(legend, ax, twin)
    else:
        ax.legend(handles, labels, frameon=False, fontsize=7 if len(labels) > 6 else 8)


def _clear_below(legend, *axes) -> None:
    """Raise each of `axes`' upper y limit (they share one box) so that their data fill only the part of the box
    below `legend`, whose top is at the box's top; in log space on a log axis."""
    renderer = legend.figure.canvas.get_renderer()
    taken = legend.get_window_extent(renderer).height / axes[0].get_window_extent(renderer).height
    keep = max(1.0 - taken - 0.04, 0.3)  # the fraction of the box left to the data
    for axis in axes:
        lo, hi = axis.get_ylim()
        if axis.get_yscale() == "log":
            axis.set_ylim(lo, lo * (hi / lo) ** (1 / keep))
        else:
            axis.set_ylim(lo, lo + (hi - lo) / keep)


def save_curve_grid(panels: Sequence[Sequence[Panel | None]], path: str | Path, title: str = "") -> Path:
    """A grid of panels, `panels[row][column]` (None leaves a cell empty), as one PNG."""
    plt = pyplot()
    rows, cols = len(panels), max(len(r) for r in panels)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 3.6 * rows), dpi=120, squeeze=False)
    for r, row in enumerate(panels):
        for c in range(cols):
            p = row[c] if c < len(row) else None
            if p is None:
                axes[r][c].axis("off")
            else:
                _draw(axes[r][c], p)
    return save_figure(fig, path, title)


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
    return save_curve_grid([[Panel(series, xlabel, ylabel, title, logy, logx, dict(hlines or {}), xticks)]], path)
