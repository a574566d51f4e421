"""Active units (Burda et al. 2016, sec. 5.2): dimension u is active if Cov_x(E_{q(z|x)}[z_u]) > 0.01."""

from __future__ import annotations

import torch
from torch import Tensor

from vaelab.nets.modes import in_eval_mode


@torch.no_grad()
@in_eval_mode
def posterior_means(model, data: Tensor, batch_size: int = 500, samples: int = 100) -> Tensor:
    """E_q[z | x] `[N, D]`: the family's closed-form mean when it has one, else a `samples`-sample average."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, data.shape[0], batch_size):
        q = model.posterior(data[start : start + batch_size].to(device))
        try:
            mean = q.mean
        except NotImplementedError:
            mean = q.sample((samples,)).mean(0)
        out.append(mean.cpu())
    return torch.cat(out)


def active_units(model, data: Tensor, threshold: float = 0.01, batch_size: int = 500) -> tuple[int, Tensor]:
    """Number of active units and the per-dimension activity Cov_x(E_q[z_u]) `[D]`."""
    activity = posterior_means(model, data, batch_size).var(0, unbiased=True)
    return int((activity > threshold).sum()), activity
