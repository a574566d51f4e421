"""Image grids saved as PNG (matplotlib's `imsave`, so no extra imaging dependency)."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from vaelab.viz.figure import pyplot


def image_grid(images: Tensor, rows: int | None = None, pad: int = 1) -> Tensor:
    """Tile `[N, C, H, W]` (or `[N, H, W]`) images in [0, 1] into one `[rows*(H+pad), cols*(W+pad)(, C)]`
    array; empty cells and padding are white."""
    if images.dim() == 3:
        images = images.unsqueeze(1)
    n, c, h, w = images.shape
    rows = rows or math.ceil(math.sqrt(n))
    cols = math.ceil(n / rows)
    grid = torch.ones(c, rows * (h + pad) + pad, cols * (w + pad) + pad)
    for i in range(n):
        r, col = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, top : top + h, left : left + w] = images[i].clamp(0, 1)
    return grid[0] if c == 1 else grid.permute(1, 2, 0)


def save_image_grid(images: Tensor, path: str | Path, rows: int | None = None, scale: int = 3) -> Path:
    """Write a grid of images in [0, 1] to a PNG, each pixel enlarged `scale` times."""
    plt = pyplot()

    grid = image_grid(images.detach().float().cpu(), rows)
    if scale > 1:
        grid = grid.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
    path = Path(path)
    plt.imsave(path, grid.numpy(), cmap="gray", vmin=0.0, vmax=1.0)
    return path


def save_reconstructions(x: Tensor, recon: Tensor, path: str | Path, per_row: int = 10) -> Path:
    """Pairs of rows: originals above their reconstructions."""
    n = (x.shape[0] // per_row) * per_row or x.shape[0]
    x, recon = x[:n].cpu(), recon[:n].cpu()
    per_row = min(per_row, n)
    rows = []
    for start in range(0, n, per_row):
        rows += [x[start : start + per_row], recon[start : start + per_row]]
    return save_image_grid(torch.cat(rows), path, rows=len(rows))
