"""The auxiliary-variable flow of Cremer, Li & Duvenaud (2018, sec. 3.2 and appendix 6.2-6.3): Real NVP
couplings (Dinh et al. 2017) between the latent z and an auxiliary v of the same size (Ranganath et al.
2016; Maaloe et al. 2016).

    z_0 ~ q_0(z | x) (diagonal Gaussian),   v_0 ~ q(v_0 | z_0) (Table 8; N(0, I) in appendix 6.2),
    each step t:  v' = v o sigma_1(z) + mu_1(z)     (eq. 12)
                  z' = z o sigma_2(v') + mu_2(v')   (eq. 13),
    log |det Df_t| = sum_i log sigma_1(z)_i + sum_j log sigma_2(v')_j   (appendix 6.3),

so q(z_T, v_T | x) = q_0(z_0 | x) q(v_0 | z_0) / prod_t |det Df_t|. The marginal q(z_T | x) has no closed
form; a reverse model r(v_T | z_T) (Table 8) gives the bound (eq. 14)

    log p(x) >= E_q[ log p(x, z_T) + log r(v_T | z_T) - log q(z_T, v_T | x) ],

whose weight p(x, z) r(v | z) / q(z, v | x) is unbiased for p(x) (its expectation over v given z is
p(x, z) / q(z | x)). `AuxiliaryFlowDistribution.rsample_and_log_prob` returns z_T with
log q(z_T, v_T | x) - log r(v_T | z_T) in place of log q(z | x); every estimator in vaelab takes that path
(`vaelab.objectives.bounds.sample_log_weights`).

Scales are sigma = 2 sigmoid(a) in (0, 2) (1 at a = 0), a bounded, smooth choice of ours (the paper does
not say); the log-variances of q(v_0 | z_0) and r(v_T | z_T) are smoothly bounded too (`LOG_VAR_BOUND`).
Networks are `GroupedMLP`s: one shared set of weights (amortised) or one per data point (the locally
optimised flow q*_Flow). Output layers start at zero, so a new flow is the identity, q(v_0 | z_0) and
r(v_T | z_T) start as N(0, I), and the bound starts equal to the base Gaussian's ELBO.

With entropy annealing (Cremer et al. sec. 5.3.1) the weight lambda multiplies the whole
log q(z, v | x) - log r(v | z), the auxiliary bound's stand-in for log q(z | x).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Size, Tensor, nn
from torch.distributions import Distribution, constraints

from vaelab.distributions.diagonal_normal import DiagonalNormal
from vaelab.nets.grouped import GroupedLinear, GroupedMLP, repeat_groups

_LOG_2 = math.log(2.0)


def _log_sigma(a: Tensor) -> Tensor:
    """log sigma for sigma = 2 sigmoid(a), stable for large |a|."""
    return _LOG_2 + F.logsigmoid(a)


#: |log variance| of q(v_0 | z_0) and r(v_T | z_T) stays below this (a smooth bound: standard deviations within
#: [0.007, 150]), so a far-out sample cannot underflow a scale to 0 and turn a log-density into -inf.
LOG_VAR_BOUND = 10.0


def _gaussian(out: Tensor) -> DiagonalNormal:
    """N(mu, diag exp(log_var)) from a network output `[..., 2D]` = (mu, a), log_var = B tanh(a / B) (B =
    `LOG_VAR_BOUND`; = a near 0)."""
    mu, raw = out.chunk(2, dim=-1)
    log_scale = 0.5 * LOG_VAR_BOUND * torch.tanh(raw / LOG_VAR_BOUND)
    return DiagonalNormal(mu, torch.exp(log_scale), log_scale)


class FlowStep(nn.Module):
    """One step (eqs. 12-13): four networks R^D -> R^D (Table 8: D-100-ELU-100-ELU-D each)."""

    def __init__(self, dim: int, hidden: Sequence[int], activation: str, groups: int) -> None:
        super().__init__()
        net = lambda: GroupedMLP(dim, hidden, dim, activation, groups, zero_output=True)  # noqa: E731
        self.mu_v, self.sigma_v, self.mu_z, self.sigma_z = net(), net(), net(), net()


class AuxiliaryFlow(nn.Module):
    """The networks of q(v_0 | z_0), the T flow steps and r(v_T | z_T), with `groups` weight sets (1: shared;
    B: one per data point). Maps batches `[*S, B, D]`.

    Args:
        latent_dim: D (= size of v).
        steps: T, the number of flow steps (2 on MNIST, 4 on CIFAR-10 in the paper).
        hidden: hidden widths of each mu / sigma network.
        aux_hidden: hidden widths of q(v_0 | z_0); `conditional_aux=False` makes q(v_0) = N(0, I) (appendix 6.2).
        reverse_hidden: hidden widths of r(v_T | z_T) (Table 8: 100-100; appendix 6.2: 50-50).
    """

    def __init__(
        self,
        latent_dim: int,
        steps: int = 2,
        hidden: Sequence[int] = (100, 100),
        aux_hidden: Sequence[int] = (100, 100),
        reverse_hidden: Sequence[int] = (100, 100),
        activation: str = "elu",
        conditional_aux: bool = True,
        groups: int = 1,
    ) -> None:
        super().__init__()
        D = latent_dim
        self.latent_dim, self.groups = D, groups
        self.aux = GroupedMLP(D, aux_hidden, 2 * D, activation, groups, zero_output=True) if conditional_aux else None
        self.steps = nn.ModuleList(FlowStep(D, hidden, activation, groups) for _ in range(steps))
        self.reverse = GroupedMLP(D, reverse_hidden, 2 * D, activation, groups, zero_output=True)

    def regroup(self, groups: int) -> AuxiliaryFlow:
        """Make the shared networks (1 group) into `groups` identical per-data-point copies, in place."""
        repeat_groups(self, groups)
        self.groups = groups
        return self

    def reset_parameters(self) -> AuxiliaryFlow:
        """Fresh initial values for every network (the identity flow, q(v_0 | z_0) = r(v_T | z_T) = N(0, I))."""
        for layer in self.modules():
            if isinstance(layer, GroupedLinear):
                layer.reset_parameters()
        return self

    def aux_distribution(self, z0: Tensor) -> DiagonalNormal:
        """q(v_0 | z_0), batch `z0.shape[:-1]`."""
        if self.aux is None:
            zero = torch.zeros_like(z0)
            return DiagonalNormal(zero, torch.ones_like(z0), zero)
        return _gaussian(self.aux(z0))

    def reverse_distribution(self, z: Tensor) -> DiagonalNormal:
        """r(v_T | z_T), batch `z.shape[:-1]`."""
        return _gaussian(self.reverse(z))

    def forward_flow(self, z: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(z_0, v_0) -> (z_T, v_T) by eqs. 12-13, and sum_t log |det Df_t| (appendix 6.3) `[*S, B]`."""
        log_det = z.new_zeros(z.shape[:-1])
        for step in self.steps:
            log_s1 = _log_sigma(step.sigma_v(z))
            v = v * torch.exp(log_s1) + step.mu_v(z)
            log_s2 = _log_sigma(step.sigma_z(v))
            z = z * torch.exp(log_s2) + step.mu_z(v)
            log_det = log_det + log_s1.sum(-1) + log_s2.sum(-1)
        return z, v, log_det

    def inverse_flow(self, z: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(z_T, v_T) -> (z_0, v_0), undoing eqs. 13 then 12 step by step, and sum_t log |det Df_t| of the
        forward map at the preimage `[*S, B]`."""
        log_det = z.new_zeros(z.shape[:-1])
        for step in reversed(self.steps):
            log_s2 = _log_sigma(step.sigma_z(v))
            z = (z - step.mu_z(v)) * torch.exp(-log_s2)
            log_s1 = _log_sigma(step.sigma_v(z))
            v = (v - step.mu_v(z)) * torch.exp(-log_s1)
            log_det = log_det + log_s1.sum(-1) + log_s2.sum(-1)
        return z, v, log_det


@dataclass
class AuxiliarySample:
    """Draws `[*S, B, D]` of z_T and v_T with log q(z_T, v_T | x) and log r(v_T | z_T), each `[*S, B]`."""

    z: Tensor
    v: Tensor
    log_q_joint: Tensor
    log_r: Tensor


class AuxiliaryFlowDistribution(Distribution):
    """q(z_T | x) of the auxiliary flow: batch `[B]` (the base's), event `[D]`.

    Sampling is reparameterised. `log_prob` raises (the marginal is intractable); use
    `rsample_and_log_prob` (z and log q(z, v | x) - log r(v | z), the unbiased weight's denominator),
    `joint_log_prob(z, v)` (exact, by inverting the flow) or `log_marginal_estimate` (importance sampling).
    """

    arg_constraints: dict = {}
    support = constraints.independent(constraints.real, 1)
    has_rsample = True

    def __init__(self, base: DiagonalNormal, flow: AuxiliaryFlow) -> None:
        self.base, self.flow = base, flow
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    def rsample_with_aux(self, sample_shape: Size = Size()) -> AuxiliarySample:
        """z_T, v_T `[*S, B, D]` with log q(z_T, v_T | x) and log r(v_T | z_T) `[*S, B]`."""
        z0 = self.base.rsample(sample_shape)
        q_v = self.flow.aux_distribution(z0)
        v0 = q_v.rsample()
        z, v, log_det = self.flow.forward_flow(z0, v0)
        log_q = self.base.log_prob(z0) + q_v.log_prob(v0) - log_det
        return AuxiliarySample(z, v, log_q, self.flow.reverse_distribution(z).log_prob(v))

    def rsample_and_log_prob(self, sample_shape: Size = Size()) -> tuple[Tensor, Tensor]:
        """z_T `[*S, B, D]` and log q(z_T, v_T | x) - log r(v_T | z_T) `[*S, B]`: with it,
        log p(x, z) - (that) is the log of the unbiased weight of eq. 14."""
        s = self.rsample_with_aux(sample_shape)
        return s.z, s.log_q_joint - s.log_r

    def rsample(self, sample_shape: Size = Size()) -> Tensor:
        z0 = self.base.rsample(sample_shape)
        return self.flow.forward_flow(z0, self.flow.aux_distribution(z0).rsample())[0]

    def sample(self, sample_shape: Size = Size()) -> Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def joint_log_prob(self, z: Tensor, v: Tensor) -> Tensor:
        """log q(z_T = z, v_T = v | x) `[*S, B]` exactly, by running the flow backwards."""
        z0, v0, log_det = self.flow.inverse_flow(z, v)
        return self.base.log_prob(z0) + self.flow.aux_distribution(z0).log_prob(v0) - log_det

    def log_marginal_estimate(self, z: Tensor, samples: int = 100) -> Tensor:
        """log of the importance-sampling estimate (1/K) sum_k q(z, v_k | x) / r(v_k | z), v_k ~ r(v | z), of
        the marginal q(z | x) at `z` `[*S, B, D]` -> `[*S, B]` (unbiased for q(z | x); for plots and checks)."""
        r = self.flow.reverse_distribution(z)
        v = r.sample((samples,))  # [K, *S, B, D]
        log_ratio = self.joint_log_prob(z.expand_as(v), v) - r.log_prob(v)
        return torch.logsumexp(log_ratio, 0) - math.log(samples)

    def log_prob(self, value: Tensor) -> Tensor:
        raise NotImplementedError(
            "the auxiliary flow's marginal q(z|x) has no closed form: estimators must use rsample_and_log_prob "
            "(vaelab.objectives.bounds.sample_log_weights does), and AIS must start from the prior or use "
            "vaelab.distributions.auxiliary_flow.extended_space"
        )

    def __repr__(self) -> str:
        return (
            f"AuxiliaryFlowDistribution(batch_shape={tuple(self.batch_shape)}, event_shape="
            f"{tuple(self.event_shape)}, steps={len(self.flow.steps)})"
        )


class _ExtendedInit(Distribution):
    """q(z_T, v_T | x) as one distribution over u = (z, v) `[*S, B, 2D]` (sampling and exact density)."""

    arg_constraints: dict = {}
    support = constraints.independent(constraints.real, 1)

    def __init__(self, q: AuxiliaryFlowDistribution) -> None:
        self.q = q
        D = q.event_shape[0]
        super().__init__(q.batch_shape, Size([2 * D]), validate_args=False)

    def sample(self, sample_shape: Size = Size()) -> Tensor:
        with torch.no_grad():
            s = self.q.rsample_with_aux(sample_shape)
            return torch.cat([s.z, s.v], -1)

    def log_prob(self, u: Tensor) -> Tensor:
        z, v = u.chunk(2, dim=-1)
        return self.q.joint_log_prob(z, v)


class _ExtendedModel:
    """p(x, z) r(v | z) over u = (z, v): an unnormalised density whose normaliser is p(x)."""

    def __init__(self, model, q: AuxiliaryFlowDistribution) -> None:
        self.model, self.q = model, q

    def log_joint(self, x: Tensor, u: Tensor) -> Tensor:
        z, v = u.chunk(2, dim=-1)
        return self.model.log_joint(x, z) + self.q.flow.reverse_distribution(z).log_prob(v)


def extended_space(model, q: AuxiliaryFlowDistribution) -> tuple[_ExtendedModel, Distribution]:
    """AIS from an auxiliary flow q: the extended target p(x, z) r(v | z) on u = (z, v) (normaliser p(x)) and
    the initial distribution q(z, v | x) (exact density by inversion). `vaelab.mcmc.ais(target, x,
    init=initial)` then anneals q(z, v | x)^(1 - beta) (p(x, z) r(v | z))^beta and estimates log p(x)."""
    return _ExtendedModel(model, q), _ExtendedInit(q)
