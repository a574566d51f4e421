"""Clustering accuracy of unsupervised categories against labels (CP-VAE, Lavda et al., sec. 5.2: argmax q(c | x)
as a classifier, 94.6% on MNIST with K = 10).

With predicted categories `pred` in 0..K-1 and labels in 0..L-1, the contingency table N[k, l] = #{i : pred_i = k,
label_i = l} gives
  * majority accuracy: each category mapped to its most frequent label, sum_k max_l N[k, l] / n (any K; it grows
    with K, reaching 1 when every point has its own category);
  * Hungarian accuracy: the best one-to-one map of categories to labels, max_perm sum_k N[k, perm(k)] / n
    (`scipy.optimize.linear_sum_assignment`), for K equal to the number of classes L.

Both are functions of N alone, so a table summed over batches (and over ranks) gives them exactly: `CategoryTally`
sums N and q(c) on the device batch by batch, as the trainer's per-epoch CP-VAE diagnostics do
(`vaelab.train.diagnostics`).
"""

from __future__ import annotations

import torch
from torch import Tensor


def contingency(pred: Tensor, labels: Tensor, categories: int, classes: int) -> Tensor:
    """N `[K, L]` (int64): how many points of each label each category holds."""
    if pred.shape != labels.shape or pred.dim() != 1:
        raise ValueError(f"pred and labels must both be [n], got {tuple(pred.shape)} and {tuple(labels.shape)}")
    flat = pred.long() * classes + labels.long()
    return torch.bincount(flat, minlength=categories * classes).reshape(categories, classes)


def majority_accuracy(pred: Tensor, labels: Tensor, categories: int | None = None, classes: int | None = None) -> float:
    """Accuracy when each category predicts its majority label."""
    k = categories or int(pred.max()) + 1
    return majority_accuracy_of(contingency(pred, labels, k, classes or int(labels.max()) + 1))


def majority_accuracy_of(table: Tensor) -> float:
    """sum_k max_l N[k, l] / n for a contingency table N `[K, L]` (counts, any dtype)."""
    return float(table.max(1).values.sum()) / float(table.sum())


def hungarian_accuracy(pred: Tensor, labels: Tensor, classes: int | None = None) -> float:
    """Accuracy under the best one-to-one map of K = L categories to the L classes."""
    n_classes = classes or int(labels.max()) + 1
    if int(pred.max()) >= n_classes:
        raise ValueError(f"Hungarian matching needs categories in 0..{n_classes - 1}, got category {int(pred.max())}")
    return hungarian_accuracy_of(contingency(pred, labels, n_classes, n_classes))


def hungarian_accuracy_of(table: Tensor) -> float:
    """max_perm sum_k N[k, perm(k)] / n for a square contingency table N `[L, L]` (counts, any dtype)."""
    from scipy.optimize import linear_sum_assignment

    table = table.detach().cpu().double()
    rows, cols = linear_sum_assignment(table.numpy(), maximize=True)
    return float(table[torch.as_tensor(rows), torch.as_tensor(cols)].sum()) / float(table.sum())


def perplexity(probs: Tensor) -> float:
    """exp H(p) = exp(-sum_k p_k log p_k) of a distribution `probs` `[K]` (0 log 0 = 0): from 1 (one category) to K
    (uniform)."""
    p = probs.double()
    return float(torch.exp(-(p * p.clamp_min(1e-300).log()).sum()))


def clustering_accuracy(pred: Tensor, labels: Tensor, categories: int, classes: int | None = None) -> dict:
    """Majority accuracy, and Hungarian accuracy when `categories` equals the number of classes; with the number
    of categories that hold at least one point."""
    classes = classes or int(labels.max()) + 1
    result = {
        "categories": categories,
        "classes": classes,
        "categories_used": int(torch.bincount(pred.long(), minlength=categories).gt(0).sum()),
        "majority_accuracy": majority_accuracy(pred, labels, categories, classes),
    }
    if categories == classes:
        result["hungarian_accuracy"] = hungarian_accuracy(pred, labels, classes)
    return result


class CategoryTally:
    """Sums over batches, on the device, of what the category diagnostics need: q(c) summed over points `[K]`
    (float64, or `dtype`) and the contingency table of argmax q(c | x) against the labels `[K, L]` (L = 1 without
    labels). `add` takes no host sync; `summary` reads them back once, after `reduce` (e.g. an all-reduce over
    ranks: every rank then reports the same)."""

    def __init__(self, categories: int, classes: int | None, device, dtype: torch.dtype = torch.float64) -> None:
        self.categories, self.classes = categories, classes
        self.q_sum = torch.zeros(categories, dtype=dtype, device=device)
        self.table = torch.zeros(categories * (classes or 1), dtype=dtype, device=device)

    def add(self, probs: Tensor, labels: Tensor | None = None) -> None:
        """One batch: q(c | x) `[B, K]` and, with classes, the labels `[B]` (int64 in 0..L-1)."""
        self.q_sum += probs.sum(0).to(self.q_sum.dtype)
        flat = probs.argmax(1)
        if self.classes:
            flat = flat * self.classes + labels.to(flat.device)
        self.table.index_add_(0, flat, torch.ones_like(flat, dtype=self.table.dtype))

    def summary(self, reduce=lambda t: t) -> dict[str, float]:
        """`q_c_perplexity` (exp H of q(c) = (1/n) sum_i q(c | x_i), eq. 14), `categories_used` (categories that are
        the argmax for some point) and, with labels, `majority_accuracy` and, when K = L, `hungarian_accuracy` (as
        `clustering_accuracy`)."""
        q_sum, table = reduce(self.q_sum).double().cpu(), reduce(self.table).double().cpu()
        table = table.reshape(self.categories, self.classes or 1)
        result = {
            "q_c_perplexity": perplexity(q_sum / q_sum.sum()),
            "categories_used": int(table.sum(1).gt(0).sum()),
        }
        if self.classes:
            result["majority_accuracy"] = majority_accuracy_of(table)
            if self.categories == self.classes:
                result["hungarian_accuracy"] = hungarian_accuracy_of(table)
        return result
