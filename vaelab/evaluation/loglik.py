"""log p(x) by importance sampling with q(z | x) as proposal (the IWAE-k bound, Burda et al. 2016 eq. 8):

    log p^(x) = log (1/k) sum_{i=1..k} p(x, z_i) / q(z_i | x),   z_i ~ q(z | x),

for k up to thousands per point. Samples are drawn in chunks so memory stays bounded; each chunk is
batched over data points and samples together (one decoder call on `[c * B, D]`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor
from torch.distributions import Distribution
from tqdm.auto import tqdm

from vaelab.objectives.bounds import sample_log_weights


@dataclass
class ISEstimate:
    """Per-data-point results, each `[N]`: the IS log-likelihood, the ELBO (mean log-weight over the same
    samples) and the effective sample size (sum w)^2 / sum w^2."""

    log_likelihood: Tensor
    elbo: Tensor
    ess: Tensor

    def summary(self) -> dict[str, float]:
        n = self.log_likelihood.numel()
        se = lambda t: float(t.std() / math.sqrt(n)) if n > 1 else float("nan")  # noqa: E731
        return {
            "n": n,
            "log_likelihood": float(self.log_likelihood.mean()),
            "log_likelihood_se": se(self.log_likelihood),
            "elbo": float(self.elbo.mean()),
            "elbo_se": se(self.elbo),
            "ess_mean": float(self.ess.mean()),
        }

    @classmethod
    def from_chunks(cls, lse: list[Tensor], lse2: list[Tensor], total: Tensor, n: int) -> ISEstimate:
        """The estimate from n weights v per data point, reduced chunk by chunk: `lse`, `lse2` the chunks'
        log sum v and log sum v^2, `total` the sum over the n draws of the ELBO's summand, each `[B]`:
        log p^ = log (1/n) sum v, ELBO = total / n, ESS = (sum v)^2 / sum v^2."""
        log_sum = torch.logsumexp(torch.stack(lse), 0)
        ess = torch.exp(2 * log_sum - torch.logsumexp(torch.stack(lse2), 0))
        return cls(log_sum - math.log(n), total / n, ess)

    def cpu(self) -> ISEstimate:
        """The same estimate with its tensors on the CPU."""
        return ISEstimate(self.log_likelihood.cpu(), self.elbo.cpu(), self.ess.cpu())

    @classmethod
    def cat(cls, parts: Sequence[ISEstimate]) -> ISEstimate:
        """One estimate `[N]` from per-batch ones `[B_i]`, concatenated in order."""
        return cls(*(torch.cat(ts) for ts in zip(*[(p.log_likelihood, p.elbo, p.ess) for p in parts], strict=True)))


R = TypeVar("R")


def map_batches(
    fn: Callable[[Tensor], R], data: Tensor, batch_size: int, device: torch.device, progress: bool, desc: str
) -> list[R]:
    """`[fn(b) for b in batches]`, the batches `data[i : i + batch_size]` of `data` `[N, ...]` moved to `device`
    one at a time, with a tqdm bar labelled `desc` (none when not `progress`)."""
    batches = range(0, data.shape[0], batch_size)
    bar = tqdm(batches, desc=desc, unit="batch", disable=None if progress else True, leave=False)
    return [fn(data[start : start + batch_size].to(device)) for start in bar]


#: On the CPU, decoder outputs per chunk that keep a chunk's activations in cache (a few MB of float32):
#: the elementwise work after the matmuls (bias, activations, the likelihood) then runs from cache rather
#: than DRAM (benchmarks/README.md: ~1.9x faster IS evaluation than 2**24-element chunks). The samples
#: drawn are the same whatever the chunk size (up to round-off in the sums over chunks).
CPU_CHUNK_ELEMENTS = 2**20


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
def evaluate_log_likelihood(
    model,
    data: Tensor,
    samples: int = 5000,
    batch_size: int = 100,
    max_elements: int = 2**24,
    progress: bool = True,
    desc: str = "IS log-likelihood",
) -> ISEstimate:
    """`importance_sampled_log_likelihood` over a whole dataset `[N, *event]` in batches of data points.

    Data are moved to the model's device batch by batch. Returns `[N]` tensors on the CPU.
    """
    device = next(model.parameters()).device
    estimate = lambda x: importance_sampled_log_likelihood(model, x, samples, max_elements).cpu()  # noqa: E731
    return ISEstimate.cat(map_batches(estimate, data, batch_size, device, progress, desc))
