"""What `vaelab evaluate` does for a CP-VAE (Lavda et al.): the bound of eq. (7) computed with the exact sum over c
(its negative is Table 1's NVLB), its parts A, B1, B2 (eqs. 8-9), how the categories are used, and the clustering
accuracy of argmax q(c | x) when the data have labels (sec. 5.2); and, when the decoder reads c (p(x | z, c),
eq. 3), log p(x) by importance sampling stratified over c (`log_likelihood_over_c`):

    log p^(x) = logsumexp_k [ log p(k) + log (1/T) sum_t exp(log w_tk) ],    z_tk ~ q(z | x, c = k),  t = 1..T,
    log w_tk  = log p(x | z_tk, k) + log p(z_tk | k) - log q(z_tk | x, k),

each category's term an IS estimate of p(x | c = k), c summed exactly (eq. 3). It is the SIWAE estimate
(`vaelab.evaluation.stratified`) with the categories as strata and the joint weights q(k | x) * p(x | z, k) p(z | k)
p(k) / (q(k | x) q(z | x, k)), q(k | x) cancelling; unbiased for p(x), so a stochastic lower bound on log p(x) that
converges as T grows, and exact for any T when q(z | x, k) is the exact p(z | x, k). Allocation: the budget of
`samples` draws per point is split equally, T = round(samples / K) per category (at least 1; SIWAE's "total sample
number fixed"), so the cost matches the generic IS evaluator's: about `samples` decoder passes per point. Its "elbo"
is eq. (7) by Monte Carlo over those draws.

With a decoder on z alone, the IS evaluator applies unchanged (c summed out of q and p); its "elbo" is then a
different, larger bound, E_{q(z|x)}[log p(x, z) - log q(z|x)], which does not pay for KL(q(c | z, x) || p(c | z)).
"""

from __future__ import annotations

import torch
from torch import Tensor

from vaelab.errors import ConfigError
from vaelab.evaluation.clustering import clustering_accuracy, perplexity
from vaelab.evaluation.loglik import ISEstimate
from vaelab.evaluation.stratified import draws_per_component, evaluate_stratified_log_likelihood
from vaelab.models.cpvae import conditional_pair, reads_category
from vaelab.nets.modes import in_eval_mode
from vaelab.objectives.cpvae import exact_reconstruction, gumbel_reconstruction, kl_terms
from vaelab.progress import progress as progress_bar
from vaelab.stats import mean_se


def log_likelihood_over_c(
    model, data: Tensor, samples: int = 5000, batch_size: int = 100, max_elements: int = 2**24, progress: bool = True
) -> ISEstimate:
    """log p(x) `[N]` for `data` `[N, *event]` by IS stratified over c (module docstring), `samples` draws per point
    in total, for a CP-VAE whose decoder reads c; per-point estimate, eq. (7) by Monte Carlo and ESS, on the CPU."""
    conditional_pair(model, "log p(x) stratified over c")
    if not reads_category(model):
        raise ConfigError("log p(x) stratified over c is for a decoder p(x | z, c); this one reads z only (use IS)")
    return evaluate_stratified_log_likelihood(
        model, data, samples, batch_size, max_elements, progress, desc="log p(x), IS stratified over c"
    )


def over_c_summary(model, samples: int) -> dict:
    """What `eval-<split>.json` records of `log_likelihood_over_c`'s allocation."""
    family, _ = conditional_pair(model, "log p(x) stratified over c")
    return {
        "log_likelihood_estimator": "importance sampling stratified over c",
        "categories": family.categories,
        "z_samples_per_category": draws_per_component(samples, family.categories),
    }


@torch.no_grad()
@in_eval_mode
def evaluate_cpvae(
    model,
    data: Tensor,
    labels: Tensor | None = None,
    batch_size: int = 100,
    samples: int = 1,
    progress: bool = True,
    temperature: float | None = None,
) -> dict:
    """NVLB = -L(x) (eq. 7, exact over c, `samples` draws of z per category) with standard error, mean A, B1, B2,
    the aggregated posterior's perplexity exp H(q(c)) over `data`, and `clustering_accuracy` against `labels`.
    With a `temperature` tau > 0 also `nvlb_relaxed`: -(A~ - B1 - B2) with A~ = log p(x | z, c~) at one Gumbel-Softmax
    draw c~ at tau and z ~ q(z | x, c~) (eq. 11), the training estimator, which is how the authors' code scores its
    test "lower bound" (calculate_lower_bound -> calculate_loss); not a bound for tau > 0 (`CPVAEBound`)."""
    family, prior = conditional_pair(model, "CP-VAE evaluation")
    device = next(model.parameters()).device
    parts, probs, relaxed = [], [], []
    batches = range(0, data.shape[0], batch_size)
    for start in progress_bar(batches, desc="CP-VAE bound", unit="batch", enabled=progress):
        x = data[start : start + batch_size].to(device)
        q = model.posterior(x)
        rec = exact_reconstruction(model, x, q, samples)
        parts.append(torch.stack([rec, *kl_terms(q, prior)[:2]]).cpu())  # [3, B]: A, B1, B2
        probs.append(q.log_weights.exp().cpu())
        if temperature:
            relaxed.append(gumbel_reconstruction(model, x, q, 1, temperature).cpu())
    rec, kl_c, kl_z = torch.cat(parts, 1).double()
    nvlb = kl_c + kl_z - rec
    n = nvlb.numel()
    q_c = torch.cat(probs).double().mean(0)
    result = {
        "nvlb": float(nvlb.mean()),
        "nvlb_se": mean_se(nvlb)[1],
        "reconstruction": float(rec.mean()),
        "kl_c": float(kl_c.mean()),
        "kl_z": float(kl_z.mean()),
        "z_samples_per_category": samples,
        "categories": family.categories,
        "q_c_perplexity": perplexity(q_c),
    }
    if temperature:
        nvlb_relaxed = kl_c + kl_z - torch.cat(relaxed).double()
        result["nvlb_relaxed"] = float(nvlb_relaxed.mean())
        result["nvlb_relaxed_se"] = mean_se(nvlb_relaxed)[1]
        result["temperature"] = temperature
    if labels is not None:
        pred = torch.cat(probs).argmax(1)
        result["clustering"] = clustering_accuracy(pred, labels[:n].cpu(), family.categories)
    return result
