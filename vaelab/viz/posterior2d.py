"""2-D pictures: latent samples over the contours of a reference density (SIWAE Fig. 2), and 2-D point clouds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from vaelab.viz.figure import pyplot, save_figure


def save_posterior_panels(
    panels: dict[str, dict[str, Tensor]],
    path: str | Path,
    log_density: Callable[[Tensor], Tensor] | dict[str, Callable[[Tensor], Tensor]] | None = None,
    extent: float = 2.0,
    title: str = "",
    grid: int = 200,
    windows: dict[str, tuple[float, float, float]] | None = None,
) -> Path:
    """A grid of panels, `panels[row][column]` = samples `[N, 2]` (rows: e.g. q and its importance-weighted
    version; columns: models, or inputs), each over the contours of `log_density` (`[M, 2] -> [M]` float64, e.g.
    the exact log p(z | x) up to a constant; or a dict `column -> callable`, one density per column) on the
    square [-extent, extent]^2, or on a column's own square `windows[column]` = (centre z_1, centre z_2, half
    width) (columns of different inputs, whose posteriors lie far apart and are small beside their spread). NaN
    draws are not drawn, nor contours of a density that is nowhere finite."""
    plt = pyplot()

    cols = list(next(iter(panels.values())))
    fig, axes = plt.subplots(
        len(panels), len(cols), figsize=(3.0 * len(cols), 3.0 * len(panels)), dpi=120, squeeze=False
    )
    densities = log_density if isinstance(log_density, dict) else dict.fromkeys(cols, log_density)
    square = {c: (windows or {}).get(c, (0.0, 0.0, extent)) for c in cols}
    line = lambda centre, half: torch.linspace(centre - half, centre + half, grid, dtype=torch.float64)  # noqa: E731
    ticks = {c: (line(cx, h), line(cy, h)) for c, (cx, cy, h) in square.items()}
    dens = {  # [grid^2, 2] with the first coordinate slowest, so that after .T rows follow the 2nd coordinate
        c: f(torch.cartesian_prod(*ticks[c])).exp().reshape(grid, grid).T for c, f in densities.items() if f is not None
    }
    for r, (row, entries) in enumerate(panels.items()):
        for c, name in enumerate(cols):
            ax, z = axes[r][c], entries[name].detach().cpu()
            d = dens.get(name)
            drawable = d is not None and d.isfinite().any() and d[d.isfinite()].max() > d[d.isfinite()].min()
            tx, ty = ticks[name]
            if drawable:  # else (NaN, or -inf everywhere, e.g. log p(x | z) = -inf) no contours
                ax.contour(tx.numpy(), ty.numpy(), d.numpy(), levels=6, colors="0.55", linewidths=0.7)
            ax.scatter(z[:, 0].numpy(), z[:, 1].numpy(), s=2, alpha=0.35, color="#c44e52", linewidths=0)
            ax.set_xlim(float(tx[0]), float(tx[-1]))
            ax.set_ylim(float(ty[0]), float(ty[-1]))
            ax.set_aspect("equal")
            ax.locator_params(nbins=4)  # a 3-inch panel holds 4 tick labels of a long value (-3.25) side by side
            ax.set_title(f"{name}: {row}" + ("" if drawable or d is None else " (density NaN/Inf)"), fontsize=9)
            ax.set_xlabel("$z_1$")
        axes[r][0].set_ylabel("$z_2$")
    return save_figure(fig, path, title)


def save_point_clouds(panels: dict[str, Tensor], path: str | Path, title: str = "") -> Path:
    """Side-by-side scatter plots of 2-D points, one panel per `panels` entry `title -> [N, 2]` (e.g. data
    and model samples of a 2-D toy dataset), on shared axes."""
    plt = pyplot()

    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.3), dpi=120, squeeze=False, sharey=True)
    for ax, (name, x) in zip(axes[0], panels.items(), strict=True):
        x = x.detach().cpu()
        ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), s=3, alpha=0.5, linewidths=0)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("$x_1$")
    axes[0][0].set_ylabel("$x_2$")
    return save_figure(fig, path, title)
