"""The auxiliary-variable flow posterior q(z, v | x) of Cremer, Li & Duvenaud (2018, sec. 3.2, Table 8):
a diagonal-Gaussian q_0(z_0 | x) from the encoder, then T Real NVP steps with an auxiliary v and a reverse
model r(v_T | z_T); see `vaelab.distributions.auxiliary_flow` for the equations (12)-(14).

Config: `posterior: {type: auxiliary_flow, steps: 2, hidden: [100, 100], aux_hidden: [100, 100],
reverse_hidden: [100, 100], activation: elu}`. The flow's networks act on z and v only (Table 8), so they are
shared by all data points; only q_0 depends on x. Per data point (the locally optimised q*_Flow, appendix 6.4),
q_0's parameters are free and every point has its own networks (`AuxiliaryFlow` with N groups).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

from torch import Tensor
from torch.distributions import Distribution

from vaelab.distributions.auxiliary_flow import AuxiliaryFlow, AuxiliaryFlowDistribution
from vaelab.errors import ConfigError
from vaelab.posteriors.base import PerPoint, PosteriorFamily
from vaelab.posteriors.diagonal_gaussian import DiagonalGaussian


class AuxiliaryFlowPosterior(PosteriorFamily):
    """Parameters of q_0 (`loc`, `log_scale`, as `DiagonalGaussian`) -> `AuxiliaryFlowDistribution` (batch `[B]`,
    event `[D]`).

    `base` is a `DiagonalGaussian` (q_0(z_0 | x), with the encoder head); `flow` holds the networks of
    q(v_0 | z_0), the steps and r(v_T | z_T) (`AuxiliaryFlow`); options as there, plus the base's log-variance
    clamp. Registry name `auxiliary_flow`.

    >>> import torch, vaelab
    >>> family = vaelab.AuxiliaryFlowPosterior(8, 2, steps=1, hidden=[16], aux_hidden=[16], reverse_hidden=[16])
    >>> q = family(torch.zeros(3, 8))  # features h [3, 8]
    >>> z, log_q = q.rsample_and_log_prob((5,))  # log q(z, v | x) - log r(v | x, z), eq. 14
    >>> z.shape, log_q.shape
    (torch.Size([5, 3, 2]), torch.Size([5, 3]))
    """

    def __init__(
        self,
        in_features: int | None,
        latent_dim: int,
        steps: int = 2,
        hidden: Sequence[int] = (100, 100),
        aux_hidden: Sequence[int] = (100, 100),
        reverse_hidden: Sequence[int] = (100, 100),
        activation: str = "elu",
        conditional_aux: bool = True,
        min_log_var: float | None = None,
        max_log_var: float | None = None,
    ) -> None:
        super().__init__(in_features, latent_dim)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ConfigError(f"auxiliary_flow needs an integer number of steps >= 0, got {steps!r}")
        self.base = DiagonalGaussian(in_features, latent_dim, min_log_var, max_log_var)
        self.flow = AuxiliaryFlow(
            latent_dim, steps, list(hidden), list(aux_hidden), list(reverse_hidden), activation, conditional_aux
        )

    @classmethod
    def around(cls, flow: AuxiliaryFlow) -> AuxiliaryFlowPosterior:
        """The family with no encoder head whose networks are `flow` itself (not a copy): with N groups, a
        per-data-point family for N points. Builds no networks of its own (draws no random numbers)."""
        family = cls.__new__(cls)
        PosteriorFamily.__init__(family, None, flow.latent_dim)
        family.base, family.flow = DiagonalGaussian(None, flow.latent_dim), flow
        return family

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return self.base.param_shapes()

    def head_params(self, h: Tensor) -> dict[str, Tensor]:
        return self.base.head_params(h)

    def distribution(self, params: Mapping[str, Tensor]) -> AuxiliaryFlowDistribution:
        return AuxiliaryFlowDistribution(self.base.distribution(params), self.flow)

    def initial_params(self, n: int, init: Distribution | None = None, like: Tensor | None = None) -> dict[str, Tensor]:
        """q_0 at N(0, I), at `init`'s q_0 when `init` is an auxiliary flow, else as `DiagonalGaussian` does."""
        base = init.base if isinstance(init, AuxiliaryFlowDistribution) else init
        return self.base.initial_params(n, base, like)

    def per_point(self, n: int, init: Distribution | None = None, like: Tensor | None = None) -> PerPoint:
        """q*_i for `n` points: free q_0 parameters `[n, D]` (`initial_params`) and `n` groups of networks,
        fitted together (Cremer et al. appendix 6.4). The networks are copies of `init`'s when `init` is an
        auxiliary flow (the encoder's q: Krishnan et al. 2017); else this family's own when it has no encoder
        head (they must have n groups); else a freshly initialised set of this family's architecture."""
        if isinstance(init, AuxiliaryFlowDistribution):
            flow = copy.deepcopy(init.flow).regroup(n)
        elif self.in_features is None:
            if self.flow.groups != n:
                raise ValueError(f"a local flow for {n} points needs {n} network groups, got {self.flow.groups}")
            flow = self.flow
        else:
            flow = copy.deepcopy(self.flow).regroup(n).reset_parameters()
        family = AuxiliaryFlowPosterior.around(flow.requires_grad_(True))
        local = PerPoint(family, family.initial_params(n, init, like))
        return local.to(like) if like is not None else local
