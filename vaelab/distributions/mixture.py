"""Mixtures of reparameterisable components, with stratified sampling (Morningstar et al., SIWAE, sec. 2).

    q(z) = sum_k alpha_k q_k(z),   components q_k with batch `[B, K]`, mixture weights alpha `[B, K]`.

`torch.distributions.MixtureSameFamily` (which this subclasses for `log_prob`, `sample`, `mean`) has no
`rsample`: drawing the component index is not differentiable in alpha. Stratified sampling sidesteps that:
draw T samples from *every* component, `z_tk ~ q_k` `[T, K, B, D]` (reparameterised in the components'
parameters), and weight each stratum by alpha_k, so that for any f

    E_q[f(z)] = sum_k alpha_k E_{q_k}[f(z)]                       (SIWAE eq. 2, the SELBO form),

whose gradient reaches alpha analytically and the components by the reparameterisation trick.
"""

from __future__ import annotations

from torch import Size, Tensor
from torch.distributions import Categorical, Distribution, MixtureSameFamily


class ReparameterizedMixture(MixtureSameFamily):
    """sum_k alpha_k q_k(z) with `logits` `[*batch, K]` and `components` (batch `[*batch, K]`, event `[D]`,
    reparameterisable).

    `stratified_rsample(T)` -> `[T, K, *batch, D]`; `log_prob(z [*S, *batch, D])` -> `[*S, *batch]`;
    `component_log_prob(z)` -> `[*S, *batch, K]`; `sample` draws ancestrally (no gradient). `rsample`
    raises: an estimator that needs gradients must use the stratified draws.
    """

    has_rsample = False

    def __init__(self, logits: Tensor, components: Distribution) -> None:
        if not components.has_rsample:
            raise ValueError(f"mixture components must be reparameterisable, got {type(components).__name__}")
        super().__init__(Categorical(logits=logits, validate_args=False), components, validate_args=False)

    @property
    def log_weights(self) -> Tensor:
        """log alpha `[*batch, K]`, normalised."""
        return self.mixture_distribution.logits

    @property
    def components(self) -> int:
        return self.log_weights.shape[-1]

    def stratified_rsample(self, samples: int = 1) -> Tensor:
        """T = `samples` reparameterised draws from each component: `[T, K, *batch, D]`."""
        z = self.component_distribution.rsample(Size([samples]))  # [T, *batch, K, D]
        return z.movedim(-2, 1)

    def component_log_prob(self, z: Tensor) -> Tensor:
        """log q_k(z) for every component k: `z` `[*S, *batch, D]` -> `[*S, *batch, K]`."""
        return self.component_distribution.log_prob(z.unsqueeze(-2))

    def rsample(self, sample_shape: Size = Size()) -> Tensor:
        raise NotImplementedError(
            "a mixture posterior has no reparameterised sampler (the component draw is discrete): train it with "
            "a stratified objective (selbo, siwae, ...), which draws from every component"
        )
