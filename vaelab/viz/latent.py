"""The 2-D latent space of a VIB classifier for one input, as SIWAE Fig. 3 draws it.

Background: at each latent position z the decoder's predicted class argmax_y p(y | z) as a colour, with
opacity its confidence relative to the runner-up, (p1 - p2) / (p1 + p2) in [0, 1] (1: the runner-up has
no mass; 0: a tie). Points: draws from q(z | x). Left: the input itself.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from vaelab.errors import ConfigError
from vaelab.viz.figure import pyplot, save_figure


def decision_regions(probs: Tensor) -> tuple[Tensor, Tensor]:
    """Predicted class `[...]` and relative confidence (p1 - p2) / (p1 + p2) `[...]` for probs `[..., C]`."""
    top = probs.topk(2, dim=-1)
    p1, p2 = top.values.unbind(-1)
    return top.indices[..., 0], (p1 - p2) / (p1 + p2)


def _as_image(x: Tensor) -> Tensor:
    """A single input as a 2-D picture: a vector (one image column) stands upright, an image keeps its shape."""
    return x.reshape(-1, 1) if x.dim() == 1 else x.reshape(x.shape[-2], x.shape[-1])


@torch.no_grad()
def save_latent_figure(
    model,
    x: Tensor,
    path: str | Path,
    target: int | None = None,
    samples: int = 2000,
    grid: int = 200,
    title: str = "",
) -> Path:
    """Draw `samples` z ~ q(z | x) for one input `x` `[*event]` over the decoder's decision regions on a
    `grid` x `grid` lattice covering the draws (PNG). Needs a 2-D latent."""
    plt = pyplot()
    from matplotlib.patches import Patch

    device = next(model.parameters()).device
    z = model.posterior(x[None].to(device)).sample((samples,))[:, 0]  # [S, D]
    if z.shape[-1] != 2:
        raise ConfigError(
            f"the latent picture needs a 2-D latent, the model has {z.shape[-1]}; set model.latent_dim: 2"
        )
    lo, hi = z.quantile(0.002, 0), z.quantile(0.998, 0)
    centre, half = (lo + hi) / 2, 0.65 * (hi - lo).max().clamp_min(1e-3)  # a square window, 30% margin
    axis = torch.linspace(-1, 1, grid, device=device) * half
    zz = torch.stack(torch.meshgrid(centre[0] + axis, centre[1] + axis, indexing="xy"), -1)  # [G, G, 2], rows: z2
    probs = model.likelihood.mean(model.decode(zz))  # [G, G, C]
    classes, alpha = decision_regions(probs)
    palette = torch.tensor(plt.get_cmap("tab10").colors, dtype=torch.float32)
    rgba = torch.cat([palette[classes.cpu() % 10], alpha.cpu()[..., None]], -1)
    predictive = model.likelihood.mean(model.decode(z)).mean(0).cpu()  # p(y | x) from these draws

    fig, (ax_x, ax_z) = plt.subplots(1, 2, figsize=(6.4, 5), dpi=120, gridspec_kw={"width_ratios": [1, 6]})
    ax_x.imshow(_as_image(x.cpu()).numpy(), cmap="gray", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    ax_x.set_xticks([])
    ax_x.set_yticks([])
    ax_x.set_title("input" if target is None else f"input\n(class {target})", fontsize=9)
    (x0, y0), (x1, y1) = (centre - half).tolist(), (centre + half).tolist()
    ax_z.imshow(rgba.numpy(), origin="lower", extent=(x0, x1, y0, y1), aspect="auto")
    pts = z.cpu().numpy()
    ax_z.scatter(pts[:, 0], pts[:, 1], s=2, c="k", alpha=0.25, linewidths=0)
    ax_z.set_xlim(x0, x1)
    ax_z.set_ylim(y0, y1)
    ax_z.set_xlabel("z1")
    ax_z.set_ylabel("z2")
    top = predictive.topk(3)
    ranked = ", ".join(f"{int(c)}: {float(p):.2f}" for p, c in zip(top.values, top.indices, strict=True))
    ax_z.set_title(title or f"q(z|x) draws over the decoder's classes; p(y|x) {ranked}", fontsize=9)
    shown = sorted(set(classes.unique().tolist()))
    handles = [Patch(color=palette[c % 10].tolist(), label=str(c)) for c in shown]
    ax_z.legend(handles=handles, title="class", fontsize=7, title_fontsize=7, loc="upper right", framealpha=0.8)
    return save_figure(fig, path)
