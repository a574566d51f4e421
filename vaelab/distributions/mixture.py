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

import math

import torch
from torch import Size, Tensor
from torch.distributions import Categorical, Distribution, MixtureSameFamily

from vaelab.distributions.diagonal_normal import DiagonalNormal
from vaelab.errors import ConfigError


class MixtureNotReparameterizable(ConfigError, NotImplementedError):
    """`rsample` of a mixture: a configuration error (elbo/iwae chosen for a mixture posterior), raised as a
    `ConfigError` (one line in the CLI) that is also a `NotImplementedError` (what `rsample` raises in torch)."""


class ReparameterizedMixture(MixtureSameFamily):
    """sum_k alpha_k q_k(z) with `logits` `[*batch, K]` and `components` (batch `[*batch, K]`, event `[D]`,
    reparameterisable).

    `stratified_rsample(T)` -> `[T, K, *batch, D]`; `log_prob(z [*S, *batch, D])` -> `[*S, *batch]`;
    `component_log_prob(z)` -> `[*S, *batch, K]`; `stratified_log_prob(z [T, K, *batch, D])` -> `[T, K, *batch]`
    (fast for diagonal components); `sample` draws ancestrally (no gradient). `rsample`
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

    def stratified_log_prob(self, z: Tensor) -> Tensor:
        """log q(z) `[T, K, *batch]` for stratified draws `z` `[T, K, *batch, D]` (stratum j = `z[:, j]` drawn from
        component j): the values of `log_prob(z)`, computed for diagonal-Gaussian components with matmuls
        instead of `[T, K, *batch, K, D]` differences. Centred on each draw's own component,
        u = z - mu_j, v_jk = mu_k - mu_j, the quadratic form of component k is

            sum_d P_kd (u_d - v_jkd)^2 = u^2 . P_k - 2 u . (P_k v_jk) + v_jk^2 . P_k,     P_k = 1 / sigma_k^2,

        whose terms are small where the result is (own component: v = 0, exactly u^2 . P_j; a far component:
        the result is large), so float32 keeps the accuracy of the direct form. Other components: `log_prob`."""
        comps = self.component_distribution
        if not isinstance(comps, DiagonalNormal) or z.dim() != comps.loc.dim() + 1:
            return self.log_prob(z)
        T, K, D = z.shape[0], z.shape[1], z.shape[-1]
        batch = z.shape[2:-1]
        loc = comps.loc.reshape(-1, K, D)  # [N, K, D]
        log_scale = comps.log_scale.expand_as(comps.loc).reshape(-1, K, D)
        N = loc.shape[0]
        precision = torch.exp(-2 * log_scale)  # [N, K, D]
        u = (z.reshape(T, K, N, D) - loc.transpose(0, 1)).permute(2, 0, 1, 3).reshape(N, T * K, D)  # [N, T*J, D]
        v = loc.unsqueeze(1) - loc.unsqueeze(2)  # [N, J, K, D]: mu_k - mu_j
        pv = precision.unsqueeze(1) * v
        quad = (u * u) @ precision.mT  # [N, T*J, K]
        cross = u.reshape(N, T, K, D).transpose(1, 2).reshape(N * K, T, D) @ pv.reshape(N * K, K, D).mT  # [N*J, T, K]
        quad = quad.reshape(N, T, K, K) - 2 * cross.reshape(N, K, T, K).transpose(1, 2) + (pv * v).sum(-1).unsqueeze(1)
        norm = log_scale.sum(-1) + 0.5 * D * math.log(2 * math.pi)  # [N, K]
        comp = -0.5 * quad.clamp(min=0) - norm.unsqueeze(1).unsqueeze(1)  # [N, T, J, K]
        log_q = torch.logsumexp(comp + self.log_weights.reshape(N, 1, 1, K), -1)  # [N, T, J]
        return log_q.permute(1, 2, 0).reshape(T, K, *batch)

    def rsample(self, sample_shape: Size = Size()) -> Tensor:
        raise MixtureNotReparameterizable(
            "a mixture posterior has no reparameterised sampler (the component draw is discrete), so elbo and iwae "
            "cannot train it: set objective.type to selbo or siwae (stratified draws from every component)"
        )
