"""log p(x) by the stratified importance-sampling estimate of SIWAE (Morningstar et al., eq. 2), the paper's
evidence measure (100 samples for MNIST, sec. 4.3; 10^6 for the toy, sec. 4.1):

    log p^(x) = log (1/T) sum_{t=1..T} sum_k alpha_k w_tk,   z_tk ~ q_k(z | x),   w = p(x, z) / q(z | x),

with `samples` draws in total, T = samples / K per component ("it holds the total sample number fixed").
Its expectation is the SIWAE-T bound; it converges to log p(x) as T grows. For a posterior that is not a
mixture (K = 1) it is the plain IS estimate. Draws are made in chunks of T so memory stays bounded.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from vaelab.distributions import ReparameterizedMixture
from vaelab.errors import ConfigError
from vaelab.evaluation.loglik import ISEstimate, map_batches
from vaelab.nets.modes import in_eval_mode
from vaelab.objectives.stratified import stratified_log_weights
from vaelab.threads import CPU_CHUNK_ELEMENTS


def components_of(q) -> int:
    """K of a mixture posterior, 1 for any other."""
    return q.components if isinstance(q, ReparameterizedMixture) else 1


def draws_per_component(samples: int, components: int) -> int:
    """T = max(1, round(samples / K)): draws per component out of `samples` in total."""
    return max(1, round(samples / components))


def _widest(model) -> int:
    """The widest layer a decoder pass produces per latent sample (at least the likelihood's outputs)."""
    widths = [m.out_features for m in model.decoder.modules() if isinstance(m, nn.Linear)]
    return max([model.likelihood.num_outputs, *widths])


@torch.no_grad()
def stratified_log_likelihood(
    model, x, samples: int = 100, max_elements: int = 2**24, q: Distribution | None = None
) -> ISEstimate:
    """SIWAE estimate of log p(x) `[B]` for one batch, `samples` draws in total (T = round(samples / K) per
    component, at least 1), from the encoder's q(z | x) or from `q` (batch `[B]`). Returns an `ISEstimate`: the
    estimate, the SELBO (sum_k alpha_k mean_t log w_tk) over the same draws, and the effective sample size
    (sum v)^2 / sum v^2 of the weights v_tk = alpha_k w_tk; its delta-method se treats the T per-draw sums
    u_t = sum_k v_tk as the iid terms (NaN at T = 1)."""
    q = model.posterior(x) if q is None else q
    K, B = components_of(q), x.shape[0]
    T = draws_per_component(samples, K)
    if isinstance(x, Tensor) and x.device.type == "cpu":
        max_elements = min(max_elements, CPU_CHUNK_ELEMENTS)
    chunk = max(1, min(T, max_elements // (K * B * _widest(model))))
    lse, lse2, term_lse2, selbo_sum = [], [], [], 0.0
    for start in range(0, T, chunk):
        draws = stratified_log_weights(model, x, min(chunk, T - start), q)
        log_w = draws.parts.log_w  # [t, K, B]
        v = log_w + draws.log_alpha
        lse.append(torch.logsumexp(v.flatten(0, 1), 0))
        lse2.append(torch.logsumexp(2 * v.flatten(0, 1), 0))
        term_lse2.append(torch.logsumexp(2 * torch.logsumexp(v, 1), 0))  # log sum_t u_t^2, u_t = sum_k v_tk
        selbo_sum = selbo_sum + (draws.log_alpha.exp() * log_w.sum(0)).sum(0)
    return ISEstimate.from_chunks(lse, lse2, selbo_sum, T, term_lse2)


@torch.no_grad()
@in_eval_mode
def evaluate_stratified_log_likelihood(
    model,
    data,
    samples: int = 100,
    batch_size: int = 100,
    max_elements: int = 2**24,
    progress: bool = True,
    desc: str = "SIWAE log-likelihood",
) -> ISEstimate:
    """`stratified_log_likelihood` over a dataset `[N, *event]` in batches of data points; `[N]` CPU tensors."""
    if samples < 1:
        raise ConfigError(f"the SIWAE evidence estimate needs samples >= 1, got {samples}")
    device = next(model.parameters()).device
    estimate = lambda x: stratified_log_likelihood(model, x, samples, max_elements).cpu()  # noqa: E731
    return ISEstimate.cat(map_batches(estimate, data, batch_size, device, progress, desc))


@torch.no_grad()
def implicit_posterior_sample(model, x, n: int, samples: int) -> Tensor:
    """n independent draws `[n, B, D]` from the implicit importance-weighted posterior q_IW (Cremer et al. 2017;
    SIWAE Fig. 2) with `samples` stratified proposals (T = samples / K per component): for each draw, fresh
    proposals z_tk and one of them picked with probability proportional to alpha_k w_tk. NaN weights are never
    picked; a draw whose proposals have no finite weight (log p(x, z) = -inf or NaN at all of them) is NaN."""
    B = x.shape[0]
    q = model.posterior(x[torch.arange(B, device=x.device).repeat(n)])  # batch [n * B]
    T = draws_per_component(samples, components_of(q))
    draws = stratified_log_weights(model, x[torch.arange(B, device=x.device).repeat(n)], T, q)
    v = (draws.parts.log_w + draws.log_alpha).flatten(0, 1)  # [T*K, n*B]
    v = v.masked_fill(v.isnan(), -math.inf)
    defined = v.isfinite().any(0) & ~(v == math.inf).any(0)  # some finite weight, none infinite
    probs = torch.softmax(torch.where(defined, v, 0.0), 0)  # undefined points: any proposal, replaced by NaN below
    pick = torch.multinomial(probs.T, 1).squeeze(-1)  # [n*B]
    z = draws.z.flatten(0, 1)  # [T*K, n*B, D]
    chosen = z[pick, torch.arange(z.shape[1], device=z.device)]
    return chosen.masked_fill(~defined[:, None], math.nan).reshape(n, B, -1)


@torch.no_grad()
def stratified_summary(
    model, data, samples: int, batch_size: int = 100, max_elements: int = 2**24, progress: bool = True
) -> dict:
    """For a mixture posterior, the SIWAE evidence with `samples` draws in total per point (the paper's measure,
    the same draw budget as the IS estimate) as `eval-<split>.json` fields: `siwae_log_likelihood` (+ `_se`, `_mc_se`),
    `siwae_selbo`, `components`, `siwae_draws_per_component`. Empty for any other posterior."""
    device = next(model.parameters()).device
    q = model.posterior(data[:1].to(device))
    if not isinstance(q, ReparameterizedMixture):
        return {}
    est = evaluate_stratified_log_likelihood(model, data, samples, batch_size, max_elements, progress).summary()
    return {
        "siwae_log_likelihood": est["log_likelihood"],
        "siwae_log_likelihood_se": est["log_likelihood_se"],  # spread over the data points
        "siwae_log_likelihood_mc_se": est["log_likelihood_mc_se"],  # Monte Carlo (delta method over the T draws)
        "siwae_selbo": est["elbo"],
        "components": q.components,
        "siwae_draws_per_component": draws_per_component(samples, q.components),
    }
