"""The auxiliary-variable flow posterior q(z, v | x) of Cremer, Li & Duvenaud (2018, sec. 3.2, Table 8):
a diagonal-Gaussian q_0(z_0 | x) from the encoder, then T Real NVP steps with an auxiliary v and a reverse
model r(v_T | z_T); see `vaelab.distributions.auxiliary_flow` for the equations (12)-(14).

Config: `posterior: {type: auxiliary_flow, steps: 2, hidden: [100, 100], aux_hidden: [100, 100],
reverse_hidden: [100, 100], activation: elu}`. The flow's networks act on z and v only (Table 8), so they are
shared by all data points; only q_0 depends on x.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from vaelab.distributions.auxiliary_flow import AuxiliaryFlow, AuxiliaryFlowDistribution
from vaelab.errors import ConfigError
from vaelab.posteriors.base import PosteriorFamily
from vaelab.posteriors.diagonal_gaussian import DiagonalGaussian


class AuxiliaryFlowPosterior(PosteriorFamily):
    """Encoder features `[B, F]` -> `AuxiliaryFlowDistribution` (batch `[B]`, event `[D]`).

    `base` is a `DiagonalGaussian` head (q_0(z_0 | x)); `flow` holds the networks of q(v_0 | z_0), the steps and
    r(v_T | z_T) (`AuxiliaryFlow`); options as there, plus the base's log-variance clamp.
    """

    def __init__(
        self,
        in_features: int,
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

    def forward(self, h: Tensor) -> AuxiliaryFlowDistribution:
        return AuxiliaryFlowDistribution(self.base(h), self.flow)
