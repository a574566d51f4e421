"""Classifiers with a latent variable: posterior predictive, accuracy and two expected calibration errors.

* Posterior predictive (SIWAE app. B.1): p(y | x) ~ (1/S) sum_s softmax(decoder(z_s))_y, z_s ~ q(z | x),
  S = 10^4, drawn in chunks and batched over data points; for a deterministic classifier, softmax(logits).
* Accuracy: the fraction of examples whose argmax_y p(y | x) is the true class.
* ECE of Guo et al. (2017, eq. 3, the standard one): M equal-width bins (0, 1/M], ..., ((M-1)/M, 1] of the
  confidence p_max = max_y p(y | x); ECE = sum_m |B_m|/n |acc(B_m) - conf(B_m)|.
* ECE as SIWAE app. B.1 defines it: rank the examples by the probability of the TRUE class p(y_true | x),
  cut them into M equal-mass bins (as numpy.array_split; ties keep data order), and average over the
  bins |fraction correct (argmax = y_true) - mean p(y_true | x)|. Unlike Guo's, this is not zero for a
  calibrated model: p = (0.6, 0.4) for every x with y ~ p gives 0.4 (see tests/test_vib.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vaelab.data.supervised import Supervised
from vaelab.evaluation.loglik import _chunk_size, map_batches
from vaelab.nets.modes import in_eval_mode
from vaelab.protocols import LatentModel


@dataclass
class Bins:
    """Per-bin statistics `[M]`: mean confidence, fraction correct and size (empty bins: NaN, NaN, 0)."""

    confidence: Tensor
    accuracy: Tensor
    count: Tensor

    def weighted_gap(self) -> float:
        """sum_m |B_m|/n |acc_m - conf_m| (Guo et al. 2017, eq. 3)."""
        keep = self.count > 0
        weights = self.count[keep] / self.count.sum()
        return float((weights * (self.accuracy[keep] - self.confidence[keep]).abs()).sum())

    def mean_gap(self) -> float:
        """(1/M') sum_m |acc_m - conf_m| over the M' non-empty bins (SIWAE app. B.1)."""
        keep = self.count > 0
        return float((self.accuracy[keep] - self.confidence[keep]).abs().mean())


def _bin_means(index: Tensor, confidence: Tensor, correct: Tensor, bins: int) -> Bins:
    """Mean `confidence` and `correct` `[N]` per bin, for bin indices `index` `[N]` in {0, ..., bins-1}."""
    count = torch.zeros(bins, dtype=confidence.dtype).index_add_(0, index, torch.ones_like(confidence))
    conf = torch.zeros(bins, dtype=confidence.dtype).index_add_(0, index, confidence) / count
    acc = torch.zeros(bins, dtype=confidence.dtype).index_add_(0, index, correct.to(confidence.dtype)) / count
    return Bins(conf, acc, count)


def _check(probs: Tensor, targets: Tensor) -> None:
    if probs.dim() != 2 or targets.shape != probs.shape[:1]:
        raise ValueError(f"need probs [N, C] and targets [N], got {tuple(probs.shape)} and {tuple(targets.shape)}")


def max_confidence_bins(probs: Tensor, targets: Tensor, bins: int = 10) -> Bins:
    """Equal-width bins ((m-1)/M, m/M] of p_max = max_y p(y|x) (Guo et al. 2017); `probs` `[N, C]`."""
    _check(probs, targets)
    confidence, predicted = probs.max(1)
    edges = torch.arange(1, bins, dtype=probs.dtype) / bins  # inner edges 1/M, ..., (M-1)/M
    index = torch.bucketize(confidence, edges, right=False)  # edges[i-1] < c <= edges[i]
    return _bin_means(index, confidence, predicted == targets, bins)


def true_class_bins(probs: Tensor, targets: Tensor, bins: int = 10) -> Bins:
    """Equal-mass bins of the examples ranked by p(y_true | x) (SIWAE app. B.1); `probs` `[N, C]`."""
    _check(probs, targets)
    p_true = probs.gather(1, targets[:, None])[:, 0]
    order = torch.sort(p_true, stable=True).indices
    n = probs.shape[0]
    sizes = torch.full((bins,), n // bins)
    sizes[: n % bins] += 1  # as numpy.array_split: the first n mod M bins hold one more
    index = torch.empty(n, dtype=torch.int64)
    index[order] = torch.repeat_interleave(torch.arange(bins), sizes)
    return _bin_means(index, p_true, probs.argmax(1) == targets, bins)


def accuracy(probs: Tensor, targets: Tensor) -> float:
    """Fraction of examples with argmax_y p(y | x) = y_true (ties: the lowest class index)."""
    _check(probs, targets)
    return float((probs.argmax(1) == targets).double().mean())


def expected_calibration_error(probs: Tensor, targets: Tensor, bins: int = 10) -> float:
    """Guo et al. (2017) ECE: equal-width bins of the max confidence, bin gaps weighted by bin size."""
    return max_confidence_bins(probs, targets, bins).weighted_gap()


def true_class_calibration_error(probs: Tensor, targets: Tensor, bins: int = 10) -> float:
    """SIWAE app. B.1 ECE: equal-mass bins ranked by p(y_true | x), unweighted mean of the bin gaps."""
    return true_class_bins(probs, targets, bins).mean_gap()


@torch.no_grad()
def posterior_predictive(model, x: Tensor, samples: int = 10_000, max_elements: int = 2**24) -> Tensor:
    """E_q(z|x)[p(y | z)] `[B, C]` for inputs `x` `[B, *event]` by `samples` draws per point, in chunks of at most
    `max_elements` decoder outputs; a model without a posterior (deterministic) gives its softmax(logits)."""
    if not isinstance(model, LatentModel):
        return model.likelihood.mean(model.logits(x))
    q = model.posterior(x)
    chunk = _chunk_size(model, x.shape[0], samples, max_elements, x.device)
    total = 0.0
    for start in range(0, samples, chunk):
        z = q.sample((min(chunk, samples - start),))  # [c, B, D]; plain draws, so mixtures work too
        total = total + model.likelihood.mean(model.decode(z)).sum(0)
    return total / samples


@dataclass
class Predictions:
    """Predictive probabilities `probs` `[N, C]` and true classes `targets` `[N]` of a split."""

    probs: Tensor
    targets: Tensor

    def summary(self, bins: int = 10) -> dict[str, float]:
        p_true = self.probs.gather(1, self.targets[:, None])[:, 0]
        return {
            "n": self.targets.numel(),
            "accuracy": accuracy(self.probs, self.targets),
            "ece": expected_calibration_error(self.probs, self.targets, bins),
            "ece_true_class": true_class_calibration_error(self.probs, self.targets, bins),
            "predictive_log_prob": float(p_true.clamp_min(torch.finfo(p_true.dtype).tiny).log().mean()),
        }


@torch.no_grad()
@in_eval_mode
def predict(
    model,
    data: Supervised,
    samples: int = 10_000,
    batch_size: int = 100,
    max_elements: int = 2**24,
    progress: bool = True,
) -> Predictions:
    """`posterior_predictive` over a labelled split in batches of data points; results on the CPU."""
    device = next(model.parameters()).device
    predictive = lambda x: posterior_predictive(model, x, samples, max_elements).cpu()  # noqa: E731
    parts = map_batches(predictive, data.inputs, batch_size, device, progress, "posterior predictive")
    return Predictions(torch.cat(parts), data.targets.cpu())
