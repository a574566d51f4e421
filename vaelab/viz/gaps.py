"""Pictures of inference quality (Cremer et al. 2018): the gap bar chart, and posterior contours in a 2-D
latent space (Figure 2: the true posterior beside the amortised q, the optimal FFG and the optimal flow)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor
from torch.distributions import Distribution

from vaelab.protocols import MarginalEstimator
from vaelab.viz.figure import pyplot, save_figure


def save_gap_chart(columns: list[tuple[str, dict]], path: str | Path) -> Path:
    """Stacked bars, one per `(name, summary)` (`GapResult.summary()`): approximation below, amortization
    above, their sum the inference gap; error bars are standard errors over data points."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(2.4 + 1.4 * len(columns), 4.0), dpi=120)
    xs = range(len(columns))
    for i, (_, s) in enumerate(columns):
        approx = s.get("approximation") or {"mean": float("nan"), "se": 0.0}
        amort = s.get("amortization") or {"mean": float("nan"), "se": 0.0}
        ax.bar(
            i, approx["mean"], color="#4c72b0", yerr=approx["se"], capsize=3, label="approximation" if i == 0 else None
        )
        ax.bar(
            i, amort["mean"], bottom=approx["mean"], color="#dd8452", yerr=amort["se"], capsize=3,
            label="amortization" if i == 0 else None,
        )  # fmt: skip
        top = approx["mean"] + amort["mean"]
        ax.text(i + 0.42, top, f"{s['inference']['mean']:.2f}", ha="right", va="bottom", fontsize=8)
    ax.set_xticks(list(xs), [name for name, _ in columns], fontsize=8, rotation=15)
    ax.set_xlim(-0.7, len(columns) - 0.3)
    ax.set_ylabel("nats")
    ax.set_title("inference gap\n= approximation + amortization", fontsize=9)
    ax.legend(frameon=False, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=2)
    return save_figure(fig, path)


def _log_density(q: Distribution, z: Tensor, flow_samples: int) -> Tensor:
    """log q(z) `[G, K]` for grid points `z` `[G, K, 2]`: exact, or (auxiliary flow) its IS estimate."""
    if isinstance(q, MarginalEstimator):
        return torch.cat([q.log_marginal_estimate(c, flow_samples) for c in z.split(2500)])
    return q.log_prob(z)


@torch.no_grad()
def save_posterior_contours(
    model,
    x: Tensor,
    rows: dict[str, Distribution],
    path: str | Path,
    grid: int = 60,
    flow_samples: int = 64,
) -> Path:
    """Figure 2 of Cremer et al. (2018) for a model with a 2-D latent: one column per data point `x` `[K, *event]`,
    the first row the true posterior p(z | x) ∝ p(x, z) on a grid, then one row per `rows` entry (a q with
    batch `[K]`: the amortised q, q*_FFG, q*_Flow, ...). Each column's window is the true posterior's mean
    ± 4 standard deviations (from a coarse grid over [-6, 6]^2); contours of each density, normalised on the grid,
    and a note where a q has less than half of its mass in the window."""
    if model.latent_dim != 2:
        from vaelab.errors import ConfigError

        raise ConfigError(f"posterior contours need a model with a 2-D latent, this one has {model.latent_dim}")
    plt = pyplot()
    K = x.shape[0]
    t = torch.linspace(0.0, 1.0, grid, dtype=x.dtype, device=x.device)
    unit = torch.stack(torch.meshgrid(t, t, indexing="xy"), -1).reshape(-1, 1, 2)  # [G, 1, 2] in [0, 1]^2
    coarse = -6 + 12 * unit.expand(-1, K, -1)
    w = torch.softmax(model.log_joint(x, coarse), 0).unsqueeze(-1)  # [G, K, 1]
    mean = (w * coarse).sum(0)
    std = ((w * (coarse - mean) ** 2).sum(0)).sqrt().clamp(min=0.05)
    lo, hi = mean - 4 * std, mean + 4 * std  # [K, 2]
    z = lo + (hi - lo) * unit  # [G, K, 2]
    densities = {"true posterior": model.log_joint(x, z)}
    densities.update({name: _log_density(q, z, flow_samples) for name, q in rows.items()})
    cell = ((hi - lo) / (grid - 1)).prod(-1)  # [K]
    fig, axes = plt.subplots(len(densities), K, figsize=(2.2 * K, 2.2 * len(densities)), dpi=120, squeeze=False)
    for r, (name, logd) in enumerate(densities.items()):
        logd = logd.nan_to_num(-torch.inf)
        mass = (torch.logsumexp(logd, 0).exp() * cell).cpu()  # q's probability inside each window (r > 0)
        dens = torch.softmax(logd, 0).reshape(grid, grid, K).cpu()
        for k in range(K):
            ax = axes[r, k]
            gx = z[:, k, 0].reshape(grid, grid).cpu()
            gy = z[:, k, 1].reshape(grid, grid).cpu()
            ax.contourf(gx.numpy(), gy.numpy(), dens[..., k].numpy(), levels=8, cmap="Blues")
            ax.set_xticks([])
            ax.set_yticks([])
            if r > 0 and mass[k] < 0.5:  # contours of a q that lies mostly elsewhere would mislead
                ax.text(0.5, 0.5, f"{100 * mass[k]:.0f}% of its mass\nin this window", ha="center", va="center",
                        transform=ax.transAxes, fontsize=7)  # fmt: skip
            if k == 0:
                ax.set_ylabel(name, fontsize=8)
            if r == 0:
                ax.set_title(f"point {chr(65 + k) if k < 26 else k}", fontsize=9)
    return save_figure(fig, path)
