"""The posterior-family interface, for amortised and for per-data-point use.

A family is a parametric set of distributions q(z; lambda) over `[D]`. It serves two uses:

* amortised: `family(h)` maps encoder features `h` `[B, F]` to q(z | x) with batch `[B]`: its encoder head
  (`head_params`) computes lambda(x) from h, and `distribution(lambda)` builds q;
* per data point: `family.per_point(n)` holds free parameters lambda_i `[n, *shape]` (one set per data point, no
  encoder: the optimal q*(z | x_i) of Cremer et al. 2018, sec. 3.1), and `PerPoint()` builds q from them.

A family that declares `param_shapes` and `distribution` serves both; one that only overrides `forward` is
amortised only. Built with `in_features=None`, a family has no encoder head and is used per data point only.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, MultivariateNormal

from vaelab.distributions import DiagonalNormal


class PosteriorFamily(nn.Module):
    """Maps encoder features `h` `[B, F]` to q(z | x), a distribution with batch shape `[B]` and event `[D]`.

    The returned distribution must provide `rsample(sample_shape)` -> `[*S, B, D]` (reparameterised) and
    `log_prob(z)` -> `[*S, B]`; `mean` and `entropy()` are used where present (active units, analytic KL).

    Subclasses either override `forward` (amortised only) or declare their parameters: `param_shapes()` (the
    shapes of one data point's parameters), `distribution(params)` and the encoder head `head_params(h)`, and
    optionally `initial_params` (where per-point optimisation starts; default: all zero).

    >>> import torch, vaelab
    >>> from torch import nn
    >>> from torch.distributions import Independent, Normal
    >>> class UnitVariance(vaelab.PosteriorFamily):  # q = N(mu(h), I), amortised only (overrides forward)
    ...     def __init__(self, in_features, latent_dim):
    ...         super().__init__(in_features, latent_dim)
    ...         self.mu = nn.Linear(in_features, latent_dim)
    ...     def forward(self, h):
    ...         return Independent(Normal(self.mu(h), 1.0), 1)
    >>> q = UnitVariance(8, 2)(torch.zeros(3, 8))  # features h [3, 8]
    >>> q.batch_shape, q.event_shape, q.rsample((5,)).shape
    (torch.Size([3]), torch.Size([2]), torch.Size([5, 3, 2]))
    """

    def __init__(self, in_features: int | None, latent_dim: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.latent_dim = latent_dim

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape of one data point's parameters (their unconstrained values)."""
        raise NotImplementedError(f"{type(self).__name__} is an amortised family only: it declares no param_shapes")

    def distribution(self, params: Mapping[str, Tensor]) -> Distribution:
        """q with batch `[B]` from parameters `params[name]` `[B, *param_shapes()[name]]`."""
        raise NotImplementedError(f"{type(self).__name__} is an amortised family only: it declares no distribution")

    def head_params(self, h: Tensor) -> dict[str, Tensor]:
        """The encoder head: features `h` `[B, F]` -> parameters `[B, *shape]` (as `param_shapes`)."""
        raise NotImplementedError(f"{type(self).__name__} declares no encoder head")

    def forward(self, h: Tensor) -> Distribution:
        if self.in_features is None:
            raise ValueError(f"this {type(self).__name__} was built with in_features=None: per-data-point use only")
        return self.distribution(self.head_params(h))

    def initial_params(self, n: int, init: Distribution | None = None, like: Tensor | None = None) -> dict[str, Tensor]:
        """Starting parameters `[n, *shape]` for per-point use: at the prior (`init=None`; all zero, which the
        built-in families map to N(0, I)) or matched to `init` (batch `[n]`, e.g. the encoder's q(z | x))."""
        if init is not None:
            raise NotImplementedError(f"{type(self).__name__} cannot start its per-point parameters from {init}")
        ref = like if like is not None else torch.zeros(())
        return {name: ref.new_zeros(n, *shape) for name, shape in self.param_shapes().items()}

    def per_point(self, n: int, init: Distribution | None = None, like: Tensor | None = None) -> PerPoint:
        """q_i for `n` data points, each with its own free parameters, started by `initial_params`; `like` is a
        tensor whose dtype and device they take. The family must have no encoder head (`in_features=None`)."""
        if self.in_features is not None:
            raise ValueError(
                f"per_point needs a {type(self).__name__} without an encoder head: build it with in_features=None"
            )
        return PerPoint(self, self.initial_params(n, init, like))


class PerPoint(nn.Module):
    """N data points' variational parameters of one `family` (every parameter's first dimension is the data point,
    so one optimiser fits all N at once); `forward()` -> q = `family.distribution(params)`, batch `[N]`, event `[D]`.

    The parameters are attributes by their names (`loc`, `log_scale`, ...); the family's own parameters, if any
    (a local flow's per-point networks), belong to this module too and are fitted with them.

    >>> import torch, vaelab
    >>> family = vaelab.DiagonalGaussian(None, 2)  # no encoder head: per-point use
    >>> local = vaelab.PerPoint(family, {"loc": torch.zeros(4, 2), "log_scale": torch.zeros(4, 2)})
    >>> [name for name, _ in local.named_parameters()], local().batch_shape  # the same as family.per_point(4)
    (['loc', 'log_scale'], torch.Size([4]))
    """

    def __init__(self, family: PosteriorFamily, params: Mapping[str, Tensor]) -> None:
        super().__init__()
        shapes = family.param_shapes()
        if set(params) != set(shapes):
            raise ValueError(f"{type(family).__name__} takes parameters {sorted(shapes)}, got {sorted(params)}")
        self.n, self.latent_dim = next(iter(params.values())).shape[0], family.latent_dim
        for name in shapes:
            value = params[name]
            if tuple(value.shape) != (self.n, *shapes[name]):
                raise ValueError(f"parameter {name} must be {[self.n, *shapes[name]]}, got {list(value.shape)}")
            self.register_parameter(name, nn.Parameter(value.detach().clone()))
        self.family = family

    def forward(self) -> Distribution:
        return self.family.distribution(dict(self.named_parameters(recurse=False)))


@torch.no_grad()
def moments(q: Distribution, samples: int = 2000) -> tuple[Tensor, Tensor]:
    """Mean `[N, D]` and covariance `[N, D, D]` of q (closed form for Gaussians, else from `samples` draws)."""
    if isinstance(q, DiagonalNormal):
        return q.loc, torch.diag_embed(q.variance)
    if isinstance(q, MultivariateNormal):
        return q.loc, q.covariance_matrix
    z = q.sample((samples,))  # [S, N, D]
    mean = z.mean(0)
    c = z - mean
    return mean, torch.einsum("snd,sne->nde", c, c) / (samples - 1)
