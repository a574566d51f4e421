"""Local optimisation of q*(z | x) for many data points at once (Cremer et al. 2018, appendix 6.4).

Each data point i has its own variational parameters (a `vaelab.posteriors.PerPoint`: `[N, ...]` tensors of a
posterior family's parameters, the same family classes the encoders use); one Adam
optimiser (lr 1e-3) maximises every point's S-sample ELBO (S = 100) together. The stopping rule is the
paper's, applied to every point on its own: after every `check_every` (100) steps the average of the last
`check_every` ELBO values of point i is compared with its best such average; after `patience` (10)
consecutive checks without improvement point i stops. A stopped point leaves the computation (each step
samples and decodes only the points still optimising, so a batch costs the sum of its points' steps, not
N times its slowest point's) and its parameters are held where they were when it stopped (Adam's momentum
would otherwise move them), so the remaining points run on unchanged. A point whose gradient is not finite
in a step (a rare sample far in a tail) gets a zero gradient in that step. Everything is masks and index sets
over `[N]`; no loop over points.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from vaelab.distributions.auxiliary_flow import AuxiliaryFlow, AuxiliaryFlowDistribution
from vaelab.errors import ConfigError
from vaelab.objectives.bounds import sample_log_weights
from vaelab.posteriors import AuxiliaryFlowPosterior, DiagonalGaussian, FullCovarianceGaussian, PerPoint
from vaelab.progress import progress as progress_bar

#: The local families of the gap analysis by name (Cremer et al. 2018: q*_FFG, q*_FullCov, q*_Flow).
LOCAL_FAMILIES = ("ffg", "full_covariance", "flow")


def local_family(
    name: str,
    n: int,
    latent_dim: int,
    init: Distribution | None = None,
    flow_options: dict | None = None,
    like: Tensor | None = None,
    template: AuxiliaryFlowPosterior | None = None,
) -> PerPoint:
    """The per-point family `name` (`LOCAL_FAMILIES`) for `n` data points, started at the prior N(0, I)
    (`init=None`; the flow as the identity, appendix 6.4) or from `init` (the encoder's q(z | x), batch `[n]`;
    Krishnan et al. 2017): the same family copies it, another matches its mean and covariance
    (`PosteriorFamily.initial_params`). A new flow takes the architecture of `template` (a trained flow family)
    or else `AuxiliaryFlow` options `flow_options`; `like` is a tensor whose dtype and device the parameters take.
    """
    if name not in LOCAL_FAMILIES:
        raise ConfigError(f"unknown local family {name!r}; choose from: {', '.join(LOCAL_FAMILIES)}")
    ref = like if like is not None else torch.zeros(())
    if name == "ffg":
        family = DiagonalGaussian(None, latent_dim)
    elif name == "full_covariance":
        family = FullCovarianceGaussian(None, latent_dim)
    elif template is not None:
        family = template
    elif isinstance(init, AuxiliaryFlowDistribution):  # per_point copies init's networks
        family = AuxiliaryFlowPosterior.around(init.flow)
    else:
        family = AuxiliaryFlowPosterior.around(AuxiliaryFlow(latent_dim, groups=n, **(flow_options or {})))
    return family.per_point(n, init, ref).to(ref)


@dataclass
class LocalFit:
    """The result of `optimize_local` for N points.

    - `family`: the fitted parameters (q* = `family()`).
    - `steps` `[N]`: optimisation steps each point took before it stopped.
    - `converged` `[N]`: stopped by the rule (False: still improving at `max_steps`).
    - `best_average` `[N]`: the best `check_every`-step average of the training ELBO.
    - `averages` `[checks, N]`: every check's average (NaN once a point had stopped).
    """

    family: PerPoint
    steps: Tensor
    converged: Tensor
    best_average: Tensor
    averages: Tensor


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Turn off gradients of `module`'s parameters (the model's, while q* is fitted), then restore them."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _point_mask(active: Tensor, p: Tensor) -> Tensor:
    """`active` `[N]` shaped to broadcast against a parameter `[N, ...]`."""
    return active.reshape(-1, *([1] * (p.dim() - 1)))


class _LocalELBO(nn.Module):
    """x `[M, *event]` -> the `samples`-sample ELBO `[M]` of `family`'s q at x. Called through
    `torch.func.functional_call` with M rows of the family's parameters (its per-point networks included), it is
    the ELBO of those M points alone, its work M points' and its gradient on those rows only; the whole
    computation runs inside the call, since a flow's q reads its networks when it is sampled."""

    def __init__(self, model: nn.Module, family: PerPoint, samples: int) -> None:
        super().__init__()
        self.model, self.family, self.samples = model, family, samples

    def forward(self, x: Tensor) -> Tensor:
        lw, _ = sample_log_weights(self.model, x, self.samples, self.family())
        return lw.log_w.mean(0)


def optimize_local(
    model,
    x: Tensor,
    family: PerPoint,
    samples: int = 100,
    lr: float = 1e-3,
    check_every: int = 100,
    patience: int = 10,
    max_steps: int | None = None,
    progress: bool = True,
    callback: Callable[[int, PerPoint, Tensor], None] | None = None,
    desc: str = "local q*",
) -> LocalFit:
    """Fit `family` (N points) to the posteriors of `model` at `x` `[N, *event]` by Adam on the `samples`-sample
    ELBO mean_s [log p(x, z_s) - log q(z_s)] `[N]`, stopping each point by the rule in the module docstring
    (and all of them at `max_steps`, if given). The model's own parameters are not touched.

    `callback(step, family, active)` runs after every step (`active` `[N]` bool: points still optimising).
    """
    if check_every < 1 or patience < 1 or samples < 1:
        raise ConfigError(f"need check_every, patience, samples >= 1, got {check_every}, {patience}, {samples}")
    params = list(family.parameters())
    for p in params:
        if p.shape[0] != family.n:
            raise ValueError(f"every local parameter must have leading dimension N = {family.n}, got {tuple(p.shape)}")
    optimizer = torch.optim.Adam(params, lr=lr)
    objective = _LocalELBO(model, family, samples)
    N, device, dtype = family.n, params[0].device, params[0].dtype
    active = torch.ones(N, dtype=torch.bool, device=device)
    held = [p.detach().clone() for p in params]  # the parameters of stopped points, as they stopped
    window = torch.zeros(N, dtype=dtype, device=device)
    best = torch.full((N,), -torch.inf, dtype=dtype, device=device)
    bad = torch.zeros(N, dtype=torch.long, device=device)
    steps = torch.zeros(N, dtype=torch.long, device=device)
    averages: list[Tensor] = []
    bar = progress_bar(total=max_steps, desc=desc, unit="step", enabled=progress)
    with frozen(model):
        for step in itertools.count(1) if max_steps is None else range(1, max_steps + 1):
            if bool(active.all()):
                elbo = objective(x)  # [N]
                loss = -elbo.sum()
            else:  # only the points still optimising: their rows of every parameter, their data
                index = active.nonzero().squeeze(1)
                rows = {f"family.{name}": p[index] for name, p in family.named_parameters()}
                part = torch.func.functional_call(objective, rows, (x[index],))  # [M]
                elbo = torch.zeros(N, dtype=part.dtype, device=device).index_copy(0, index, part.detach())
                loss = -part.sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():  # a point whose gradient is not finite (a rare far-out sample) skips this step
                grads = [p.grad for p in params if p.grad is not None]
                finite = torch.stack([g.flatten(1).isfinite().all(1) for g in grads]).all(0)
                if not bool(finite.all()):
                    for g in grads:
                        g.copy_(torch.where(_point_mask(finite, g), g, torch.zeros_like(g)))
            optimizer.step()
            with torch.no_grad():
                if not bool(active.all()):
                    for p, h in zip(params, held, strict=True):
                        p.copy_(torch.where(_point_mask(active, p), p, h))
                window += elbo.detach()
                steps += active
            if step % check_every == 0:
                avg = window / check_every
                window.zero_()
                averages.append(torch.where(active, avg, torch.full_like(avg, torch.nan)))
                improved = avg > best
                best = torch.where(active & improved, avg, best)
                bad = torch.where(improved, torch.zeros_like(bad), bad + 1)
                stopping = active & (bad >= patience)
                if bool(stopping.any()):
                    with torch.no_grad():
                        for p, h in zip(params, held, strict=True):
                            h.copy_(torch.where(_point_mask(stopping, p), p, h))
                    active = active & ~stopping
                bar.set_postfix(active=int(active.sum()), elbo=f"{float(best.mean()):.2f}", refresh=False)
            bar.update(1)
            if callback is not None:
                callback(step, family, active)
            if not bool(active.any()):
                break
    bar.close()
    history = torch.stack(averages) if averages else torch.empty(0, N, device=device)
    return LocalFit(family, steps.cpu(), (~active).cpu(), best.cpu(), history.cpu())
