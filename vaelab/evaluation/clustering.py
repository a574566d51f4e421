"""Clustering accuracy of unsupervised categories against labels (CP-VAE, Lavda et al., sec. 5.2: argmax q(c | x)
as a classifier, 94.6% on MNIST with K = 10).

With predicted categories `pred` in 0..K-1 and labels in 0..L-1, the contingency table N[k, l] = #{i : pred_i = k,
label_i = l} gives
  * majority accuracy: each category mapped to its most frequent label, sum_k max_l N[k, l] / n (any K; it grows
    with K, reaching 1 when every point has its own category);
  * Hungarian accuracy: the best one-to-one map of categories to labels, max_perm sum_k N[k, perm(k)] / n
    (`scipy.optimize.linear_sum_assignment`), for K equal to the number of classes L.
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
    table = contingency(pred, labels, k, classes or int(labels.max()) + 1)
    return float(table.max(1).values.sum()) / pred.numel()


def hungarian_accuracy(pred: Tensor, labels: Tensor, classes: int | None = None) -> float:
    """Accuracy under the best one-to-one map of K = L categories to the L classes."""
    from scipy.optimize import linear_sum_assignment

    n_classes = classes or int(labels.max()) + 1
    if int(pred.max()) >= n_classes:
        raise ValueError(f"Hungarian matching needs categories in 0..{n_classes - 1}, got category {int(pred.max())}")
    table = contingency(pred, labels, n_classes, n_classes)
    rows, cols = linear_sum_assignment(table.numpy(), maximize=True)
    return float(table[torch.as_tensor(rows), torch.as_tensor(cols)].sum()) / pred.numel()


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
