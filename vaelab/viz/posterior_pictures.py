"""What `vaelab sample` draws of q(z | x) for a VAE, for a few inputs (SIWAE, Morningstar et al.):

* `modes-<split>.png` (mixture posteriors; Fig. C.6): per row one input, then the decoder's mean E[x | z = mu_k]
  at each component's mean mu_k, components by decreasing weight alpha_k(x) ("we passed the mode of the encoder
  component distributions to the decoder"; the paper shows the decoded image's mode, we show its mean).
* `posterior-<split>.png` (2-D latents; as Fig. 2 for the toy): per column one input, draws of q(z | x) (top) and
  of the importance-weighted posterior q_IW with S stratified proposals (bottom; Cremer et al. 2017), over the
  contours of the exact posterior p(z | x) (proportional to p(x, z), evaluated on a grid).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from vaelab.distributions import ReparameterizedMixture
from vaelab.evaluation.stratified import implicit_posterior_sample
from vaelab.models.cpvae import decode_given, one_hot, reads_category
from vaelab.protocols import AuxiliarySampler
from vaelab.viz.grids import save_image_grid
from vaelab.viz.posterior2d import save_posterior_panels


@torch.no_grad()
def component_mode_images(model, x: Tensor) -> Tensor:
    """`[B, 1 + K, *event]`: each input `x` `[B, *event]` followed by E[x | z = mu_k] for its K components,
    ordered by decreasing alpha_k(x). Needs a mixture posterior."""
    q = model.posterior(x)
    means = q.component_distribution.mean  # [B, K, D]
    order = q.log_weights.argsort(-1, descending=True)  # [B, K]
    means = means.gather(1, order.unsqueeze(-1).expand_as(means))
    c = one_hot(order.T, order.shape[-1], means)  # [K, B, K]: a CP-VAE decoder p(x | z, c) reads component k as c = k
    decoded = model.likelihood.mean(decode_given(model, means.transpose(0, 1), c)).transpose(0, 1)  # [B, K, *event]
    return torch.cat([x.unsqueeze(1).to(decoded.dtype), decoded], 1)


@torch.no_grad()
def log_joint_on_grid(model, x: Tensor, z: Tensor, chunk: int = 2000) -> Tensor:
    """log p(x, z) - max over the grid, `[M]` float64, for one input `x` `[*event]` and latents `z` `[M, 2]`
    (decoded `chunk` at a time)."""
    device = next(model.parameters()).device
    xb = x[None].to(device)
    parts = [
        model.log_joint(xb, z[i : i + chunk, None].to(device, torch.float32))[:, 0] for i in range(0, len(z), chunk)
    ]
    out = torch.cat(parts).double().cpu()
    return out - out.max()


@torch.no_grad()
def save_latent_posteriors(
    model, x: Tensor, path: str | Path, samples: int = 300, proposals: int = 50, grid: int = 100, title: str = ""
) -> Path:
    """`posterior-<split>.png` for inputs `x` `[B, *event]` (a column each): `samples` draws of q(z | x) and of q_IW
    with `proposals` stratified proposals, over the contours of p(z | x) on a `grid` x `grid` lattice."""
    device = next(model.parameters()).device
    xd = x.to(device)
    z_q = model.posterior(xd).sample((samples,)).cpu()  # [S, B, 2]
    z_iw = implicit_posterior_sample(model, xd, samples, proposals).cpu()
    names = [f"input {i}" for i in range(x.shape[0])]
    panels = {
        "q(z|x)": {n: z_q[:, i] for i, n in enumerate(names)},
        f"q_IW, {proposals} proposals": {n: z_iw[:, i] for i, n in enumerate(names)},
    }
    # floored at max - 30 nats, so that no underflow to 0 draws a spurious zero-level contour far out
    densities = {n: (lambda z, xi=x[i]: log_joint_on_grid(model, xi, z).clamp_min(-30.0)) for i, n in enumerate(names)}
    windows = {n: _grow_window(_window(torch.cat([z_q[:, i], z_iw[:, i]])), densities[n]) for i, n in enumerate(names)}
    return save_posterior_panels(panels, path, densities, title=title, grid=grid, windows=windows)


def _window(z: Tensor) -> tuple[float, float, float]:
    """A square around draws `z` `[N, 2]` (NaN rows, a q_IW draw with no finite weight, left out): centred on
    their median, half width 1.15 x the largest 99.5% quantile of |z - median| over the two coordinates, at
    least 0.05; (0, 0, 1) when no draw is finite."""
    z = z[z.isfinite().all(-1)].double()
    if not len(z):
        return 0.0, 0.0, 1.0
    centre = z.median(0).values
    half = max(float((z - centre).abs().quantile(0.995, 0).max()) * 1.15, 0.05)
    return float(centre[0]), float(centre[1]), half


def _grow_window(
    window: tuple[float, float, float], log_density, reach: float = 4.0, coarse: int = 60, within: float = 3.0
) -> tuple[float, float, float]:
    """`window` (`_window`: centre z_1, centre z_2, half width) widened to hold the density too: `log_density`
    (`[M, 2] -> [M]`) on a `coarse` x `coarse` grid `reach` times as wide, and the smallest square around the
    window and every grid point within `within` nats of that grid's highest value (the contours' reach: the lowest
    of the 6 linear levels is at 1/7 of the peak, 1.95 nats below it), at most `reach` times as wide. So a
    posterior that reaches beyond the draws of q (a mode q misses) is not cut off."""
    cx, cy, half = window
    t = torch.linspace(-reach * half, reach * half, coarse, dtype=torch.float64)
    z = torch.cartesian_prod(t + cx, t + cy)
    values = log_density(z)
    finite = values.isfinite()
    if not finite.any():
        return window
    near = z[finite & (values >= values[finite].max() - within)]
    mid = torch.tensor([cx, cy], dtype=torch.float64)  # the window's centre
    lo, hi = torch.minimum(near.min(0).values, mid - half), torch.maximum(near.max(0).values, mid + half)
    centre = (lo + hi) / 2  # lo and hi lie within the grid and around the window: half <= the new half <= reach * half
    return float(centre[0]), float(centre[1]), float((hi - lo).max()) / 2


def save_posterior_pictures(model, x: Tensor, out: Path, split: str, modes: int = 8, latents: int = 4) -> list[Path]:
    """`modes-<split>.png` for the first `modes` inputs of `x` (mixture posteriors) and `posterior-<split>.png`
    for the first `latents` (2-D latents, the inputs beside); [] for other models."""
    paths = []
    q = model.posterior(x[:1].to(next(model.parameters()).device))
    if isinstance(q, ReparameterizedMixture):
        images = component_mode_images(model, x[:modes].to(next(model.parameters()).device)).cpu()
        paths.append(save_image_grid(images.flatten(0, 1), out / f"modes-{split}.png", rows=images.shape[0]))
    no_density = isinstance(q, AuxiliarySampler) or reads_category(model)  # a flow's q; p(x, z) needs c
    if tuple(q.event_shape) == (2,) and not no_density:
        title = "columns: inputs (modes-*.png rows, in order); contours: p(z|x) on the grid"
        paths.append(save_latent_posteriors(model, x[:latents], out / f"posterior-{split}.png", title=title))
    return paths
