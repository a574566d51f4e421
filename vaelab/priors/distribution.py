"""A prior from a torch `Distribution`, or from a module whose `forward()` returns one (an unconditional flow)."""

from __future__ import annotations

from torch import nn
from torch.distributions import Distribution

from vaelab.errors import ConfigError
from vaelab.priors.base import Prior


class DistributionPrior(Prior):
    """p(z) = `source` (a `Distribution` with event `[D]` and no batch shape) or `source()` (a module, so its
    parameters train with the model, e.g. `zuko.flows.NSF(features=D)`). A `Distribution`'s tensors are not the
    module's, so `model.to(device)` does not move them: build it on the device, or use a module.

    >>> import torch
    >>> from torch.distributions import Independent, Normal
    >>> p = DistributionPrior(Independent(Normal(torch.zeros(3), torch.ones(3)), 1))
    >>> p.latent_dim, p.sample(4).shape, p.log_prob(torch.zeros(5, 3)).shape
    (3, torch.Size([4, 3]), torch.Size([5]))
    """

    def __init__(self, source: Distribution | nn.Module) -> None:
        dist = source() if isinstance(source, nn.Module) else source
        if not isinstance(dist, Distribution) or len(dist.event_shape) != 1 or len(dist.batch_shape) != 0:
            what = type(dist).__name__
            if isinstance(dist, Distribution):
                what = f"batch {list(dist.batch_shape)}, event {list(dist.event_shape)}"
            raise ConfigError(f"a prior must be a Distribution over [D] (no batch shape, event [D]); got {what}")
        super().__init__(dist.event_shape[0])
        self.module: nn.Module | None = source if isinstance(source, nn.Module) else None
        self._dist = None if isinstance(source, nn.Module) else source

    def distribution(self) -> Distribution:
        return self.module() if self.module is not None else self._dist
