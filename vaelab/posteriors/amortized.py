"""x -> q(z | x) through an encoder and a posterior family: the amortised posterior of a model."""

from __future__ import annotations

from torch import Tensor, nn
from torch.distributions import Distribution


class Amortized:
    """x -> q(z | x) through `encoder` and `family` (flattening x first when `flatten`, for encoders of flat
    input). A plain callable, not a module, so a prior that holds it (VampPrior) does not own a second copy of the
    encoder's weights."""

    def __init__(self, encoder: nn.Module, family: nn.Module, flatten: bool = True) -> None:
        self.encoder, self.family, self.flatten = encoder, family, flatten

    def __call__(self, x: Tensor) -> Distribution:
        return self.family(self.encoder(x.flatten(1) if self.flatten else x))

    def modules(self) -> list[nn.Module]:
        """The modules whose parameters and buffers determine q(z | x)."""
        return [self.encoder, self.family]
