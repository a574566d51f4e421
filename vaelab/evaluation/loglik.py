"""log p(x) by importance sampling with q(z | x) as proposal (the IWAE-k bound, Burda et al. 2016 eq. 8):

    log p^(x) = log (1/k) sum_{i=1..k} p(x, z_i) / q(z_i | x),   z_i ~ q(z | x),

for k up to thousands per point. Samples are drawn in chunks so memory stays bounded; each chunk is
batched over data points and samples together (one decoder call on `[c * B, D]`).

Two different errors come with the mean over N points (`ISEstimate.summary`): the spread over the data,
std_i log p^(x_i) / sqrt(N) (`log_likelihood_se_data`, also `log_likelihood_se`: other data, same model), and the
Monte Carlo error for these data, sqrt(sum_i se_i^2) / N with se_i the delta-method error of log p^(x_i),
sqrt(var_s(w_is) / k) / mean_s(w_is) (`log_likelihood_mc_se`: other draws). The second is trustworthy only where
the effective sample size is healthy (`LOW_ESS`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor
from torch.distributions import Distribution

from vaelab.evaluation.batches import seeded_batches
from vaelab.nets.modes import in_eval_mode
from vaelab.objectives.bounds import delta_method_se, sample_log_weights
from vaelab.progress import progress as progress_bar
from vaelab.stats import mean_se
from vaelab.threads import CPU_CHUNK_ELEMENTS

#: A point's estimate is flagged as unreliable when its effective sample size is below this many draws. A count,
#: not a share of S: the delta-method se rests on the sample variance of the weights, which the few largest of
#: them decide. Measured coverage of the nominal 95% interval +-1.96 se (linear-Gaussian, D = 10 and 50, S = 30 to
#: 4000; tests/test_estimators.py): 0.93-0.96 at ESS >= ~100, 0.86-0.91 at ESS 25-40, 0.79-0.86 at ESS 8-16,
#: 0.14 at ESS ~2, whatever the S.
LOW_ESS = 30

#: Warn (`reliability_warnings`) when more than this share of the points have ESS < `LOW_ESS`.
LOW_ESS_SHARE = 0.01


@dataclass
class ISEstimate:
    """Per-data-point results, each `[N]`: the IS log-likelihood log p^(x) = log (1/S) sum_s w_s, the ELBO (mean
    log-weight over the same samples), the effective sample size (sum w)^2 / sum w^2, and `mc_se`, the
    delta-method Monte Carlo standard error of log p^(x) (`vaelab.objectives.bounds.delta_method_se`)."""

    log_likelihood: Tensor
    elbo: Tensor
    ess: Tensor
    mc_se: Tensor

    def summary(self) -> dict[str, float]:
        """Means over the N points and their errors, for `eval-<split>.json`:

        - `log_likelihood_se` = `log_likelihood_se_data`: the spread over data points, std_i log p^(x_i) / sqrt(N)
          (how far the mean would move on other data from the same distribution);
        - `log_likelihood_mc_se`: the Monte Carlo error of the mean for these data, sqrt(sum_i se_i^2) / N
          (how far it would move with other draws); it omits the estimator's bias (log p^ is a stochastic lower
          bound, ~ -se_i^2 / 2 per point) and is itself unreliable where the ESS is low;
        - `ess_median`, `ess_low_share` (share of points with ESS < `LOW_ESS`, `ess_low_threshold`);
        - `n_nonfinite`, `elbo_n_nonfinite`: points whose estimate is NaN or +-Inf. Every mean and se above is over
          all N points, so one such point makes them non-finite; `finite_only` (present when some are) repeats
          them over the finite points only."""
        out = _point_summary(self.log_likelihood, self.elbo, self.mc_se)
        finite = torch.isfinite(self.log_likelihood) & torch.isfinite(self.elbo)
        out.update(
            {
                "ess_mean": float(self.ess.mean()),
                "ess_median": float(self.ess.double().quantile(0.5)) if self.ess.numel() else math.nan,
                "ess_min": float(self.ess.min()) if self.ess.numel() else math.nan,
                "ess_low_threshold": LOW_ESS,
                "ess_low_share": float((self.ess < LOW_ESS).double().mean()),
                "n_nonfinite": int((~torch.isfinite(self.log_likelihood)).sum()),
                "elbo_n_nonfinite": int((~torch.isfinite(self.elbo)).sum()),
            }
        )
        if not bool(finite.all()):
            out["finite_only"] = _point_summary(self.log_likelihood[finite], self.elbo[finite], self.mc_se[finite])
        return out

    @classmethod
    def from_chunks(
        cls, lse: list[Tensor], lse2: list[Tensor], total: Tensor, n: int, term_lse2: list[Tensor] | None = None
    ) -> ISEstimate:
        """The estimate from weights v per data point whose sum over n iid terms is the estimate's, reduced chunk
        by chunk: `lse`, `lse2` the chunks' log sum v and log sum v^2, `total` the sum over the n terms of the
        ELBO's summand, each `[B]`: log p^ = log (1/n) sum v, ELBO = total / n, ESS = (sum v)^2 / sum v^2, and the
        delta-method se from the terms u_t: `term_lse2` their chunks' log sum u^2 (default: the v are the terms,
        u = v; stratified sampling: u_t = sum_k v_tk, T terms)."""
        log_sum = torch.logsumexp(torch.stack(lse), 0)
        log_sum_sq = torch.logsumexp(torch.stack(lse2), 0)
        term_sq = log_sum_sq if term_lse2 is None else torch.logsumexp(torch.stack(term_lse2), 0)
        ess = torch.exp(2 * log_sum - log_sum_sq)
        return cls(log_sum - math.log(n), total / n, ess, delta_method_se(log_sum, term_sq, n))

    def cpu(self) -> ISEstimate:
        """The same estimate with its tensors on the CPU."""
        return ISEstimate(*(t.cpu() for t in self._tensors()))

    def _tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.log_likelihood, self.elbo, self.ess, self.mc_se

    @classmethod
    def cat(cls, parts: Sequence[ISEstimate]) -> ISEstimate:
        """One estimate `[N]` from per-batch ones `[B_i]`, concatenated in order."""
        return cls(*(torch.cat(ts) for ts in zip(*[p._tensors() for p in parts], strict=True)))


def _point_summary(log_likelihood: Tensor, elbo: Tensor, mc_se: Tensor) -> dict[str, float]:
    """Means over points and their standard errors (over data; Monte Carlo) of `[n]` per-point values."""
    n = log_likelihood.numel()
    se = lambda t: mean_se(t)[1]  # noqa: E731
    spread = se(log_likelihood)
    return {
        "n": n,
        "log_likelihood": float(log_likelihood.mean()) if n else math.nan,
        "log_likelihood_se": spread,
        "log_likelihood_se_data": spread,
        "log_likelihood_mc_se": float(mc_se.double().square().sum().sqrt() / n) if n else math.nan,
        "elbo": float(elbo.mean()) if n else math.nan,
        "elbo_se": se(elbo),
    }


def reliability_warnings(summary: dict, what: str = "the IS estimate") -> list[str]:
    """One-line warnings for a `summary` (`ISEstimate.summary`): too many points with low ESS (their log p^ and
    its delta-method se are both unreliable: the se cannot exceed 1 nat and understates the error there), and
    non-finite per-point values (which every mean includes)."""
    out = []
    share, n = summary.get("ess_low_share", 0.0), summary["n"]
    if share > LOW_ESS_SHARE:
        out.append(
            f"warning: {100 * share:.1f}% of the {n} points have ESS < {summary['ess_low_threshold']} (median "
            f"{summary['ess_median']:.1f}): {what} is unreliable there, and so is its Monte Carlo se (the delta method "
            "understates the error at low ESS); use more samples or a better proposal, or AIS with replicates"
        )
    bad = summary.get("n_nonfinite", 0) + summary.get("elbo_n_nonfinite", 0)
    if bad:
        f = summary.get("finite_only", {})
        out.append(
            f"warning: {summary['n_nonfinite']} log p^ and {summary['elbo_n_nonfinite']} ELBO values of the {n} points "
            f"are NaN or Inf and the means include them; over the {f.get('n', 0)} finite points only (excluded "
            f"explicitly): log p(x) ~ {f.get('log_likelihood', math.nan):.2f}, ELBO {f.get('elbo', math.nan):.2f}"
        )
    return out


R = TypeVar("R")


def map_batches(
    fn: Callable[[Tensor], R], data: Tensor, batch_size: int, device: torch.device, progress: bool, desc: str
) -> list[R]:
    """`[fn(b) for b in batches]`, the batches `data[i : i + batch_size]` of `data` `[N, ...]` moved to `device`
    one at a time, with a progress bar labelled `desc` (none when not `progress`)."""
    batches = range(0, data.shape[0], batch_size)
    bar = progress_bar(batches, desc=desc, unit="batch", enabled=progress)
    return [fn(data[start : start + batch_size].to(device)) for start in bar]


def _chunk_size(model, batch: int, samples: int, max_elements: int, device: torch.device | None = None) -> int:
    """Samples per chunk: at most `max_elements` decoder outputs (the memory bound; on the CPU also at most
    `CPU_CHUNK_ELEMENTS`, for speed), counting at least 1024 per sample so hidden layers are bounded too."""
    widest = max(model.likelihood.num_outputs, 1024)
    if device is not None and device.type == "cpu":
        max_elements = min(max_elements, CPU_CHUNK_ELEMENTS)
    return max(1, min(samples, max_elements // (batch * widest)))


#: Log-weights kept before they are folded into the running log-sum-exps: reducing many small chunks at
#: once costs a handful of operations instead of a handful per chunk.
_REDUCE_ELEMENTS = 2**22


@torch.no_grad()
def importance_sampled_log_likelihood(
    model, x: Tensor, samples: int = 5000, max_elements: int = 2**24, q: Distribution | None = None
) -> ISEstimate:
    """IS estimate of log p(x) for one batch `x` `[B, *event]`, drawing `samples` per point in chunks of at
    most `max_elements` decoder outputs (see `_chunk_size`), from the encoder's q(z | x) or from `q` (batch
    `[B]`, e.g. a per-data-point optimised q*). Returns an `ISEstimate` of `[B]` tensors."""
    q = model.posterior(x) if q is None else q
    chunk = _chunk_size(model, x.shape[0], samples, max_elements, x.device)
    lse, lse2, total, pending = [], [], 0.0, []

    def reduce() -> None:  # fold the pending log-weights [n, B] into the running sums
        nonlocal total
        lw = torch.cat(pending) if len(pending) > 1 else pending[0]
        lse.append(torch.logsumexp(lw, 0))
        lse2.append(torch.logsumexp(2 * lw, 0))
        total = total + lw.sum(0)
        pending.clear()

    for start in range(0, samples, chunk):
        pending.append(sample_log_weights(model, x, min(chunk, samples - start), q)[0].log_w)  # [c, B]
        if len(pending) * chunk * x.shape[0] >= _REDUCE_ELEMENTS:
            reduce()
    if pending:
        reduce()
    return ISEstimate.from_chunks(lse, lse2, total, samples)


@torch.no_grad()
@in_eval_mode
def evaluate_log_likelihood(
    model,
    data: Tensor,
    samples: int = 5000,
    batch_size: int = 100,
    max_elements: int = 2**24,
    progress: bool = True,
    desc: str = "IS log-likelihood",
    batch_seed: int | None = None,
    shard: bool = False,
) -> ISEstimate:
    """`importance_sampled_log_likelihood` over a whole dataset `[N, *event]` in batches of data points.

    Data are moved to the model's device batch by batch. Returns `[N]` tensors on the CPU.

    With `batch_seed`, batch j (points `j * batch_size` on) draws after `torch.manual_seed(derive_seed(batch_seed,
    j))`, so a point's values depend on its batch alone, not on the batches before it; without it, one stream runs
    through the batches. With `batch_seed` and `shard`, under a process group (`vaelab.distributed`; every rank must
    call this): rank r estimates batches r, r + W, ... and the per-point results are gathered on every rank
    (`vaelab.evaluation.batches.seeded_batches`), so every rank returns the same `[N]` tensors, equal to one
    process's with the same `batch_seed` and `batch_size`.
    """
    device = next(model.parameters()).device
    estimate = lambda x: importance_sampled_log_likelihood(model, x, samples, max_elements).cpu()  # noqa: E731
    if batch_seed is None:
        return ISEstimate.cat(map_batches(estimate, data, batch_size, device, progress, desc))

    def seeded(batch: slice, seed: int) -> ISEstimate:
        torch.manual_seed(seed)
        return estimate(data[batch].to(device))

    parts = seeded_batches(
        seeded, data.shape[0], batch_size, batch_seed, shard=shard, everywhere=True, progress=progress, desc=desc
    )
    return ISEstimate.cat(parts)  # type: ignore[arg-type]  # on every rank (everywhere)
