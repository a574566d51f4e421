"""Diagnostics the trainer adds to each validation epoch's `metrics.jsonl` line, for the models they apply to.

The trainer asks `validation_diagnostics` for the ones that apply to its model (each of `FACTORIES` returns one or
None), feeds each the validation batches it bounds (`add`: no host sync) and, after the pass, reads `summary` once,
with the sums all-reduced over the ranks (each rank takes its block of the split), so every rank logs the same.

* CP-VAE (`vaelab.models.cpvae.is_cpvae`): `category_use`, how q(c | x) uses the K categories over the validation
  set, from one pass of the encoder (no z drawn): `q_c_perplexity` = exp H(q(c)), q(c) = (1/n) sum_i q(c | x_i) (the
  aggregated posterior, eq. 14), `categories_used` (the categories that are argmax q(c | x_i) for some i) and, when
  the data have labels, the clustering accuracies of argmax q(c | x) that `vaelab evaluate` reports (its
  `cpvae.clustering`: `majority_accuracy`, and `hungarian_accuracy` when K equals the number of classes). A run whose
  q(c | x) collapses onto a few categories shows it here, epoch by epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor, nn

from vaelab.evaluation.clustering import CategoryTally
from vaelab.models.cpvae import conditional_pair, is_cpvae


class Diagnostic(Protocol):
    """Sums over the validation batches, summarised once per validation."""

    def add(self, model: nn.Module, x: Tensor, labels: Tensor | None) -> None:
        """One batch x `[B, *event]` (on the device) with its labels `[B]` (None: the data have none)."""

    def summary(self, reduce: Callable[[Tensor], Tensor]) -> dict[str, float]:
        """The metrics-line columns, from the sums `reduce`d over the ranks (one host sync)."""


class CategoryUse:
    """A CP-VAE's use of its categories over the validation set (module docstring), summed in a `CategoryTally`."""

    def __init__(self, model: nn.Module, classes: int | None, device: torch.device, dtype: torch.dtype) -> None:
        family, _ = conditional_pair(model, "category diagnostics")
        self.tally = CategoryTally(family.categories, classes, device, dtype)

    def add(self, model: nn.Module, x: Tensor, labels: Tensor | None) -> None:
        self.tally.add(model.posterior(x).log_weights.exp(), labels)

    def summary(self, reduce: Callable[[Tensor], Tensor]) -> dict[str, float]:
        return self.tally.summary(reduce)


def category_use(model: nn.Module, classes: int | None, device: torch.device, dtype: torch.dtype) -> Diagnostic | None:
    """`CategoryUse` for a CP-VAE (`classes`: the number of label values, None without labels), else None."""
    return CategoryUse(model, classes, device, dtype) if is_cpvae(model) else None


#: Each takes (model, classes or None, device, dtype of the sums) and returns a `Diagnostic`, or None where it does not
#: apply.
FACTORIES: tuple[Callable[..., Diagnostic | None], ...] = (category_use,)


def validation_diagnostics(
    model: nn.Module, classes: int | None, device: torch.device, dtype: torch.dtype = torch.float64
) -> list[Diagnostic]:
    """The diagnostics of `FACTORIES` that apply to `model`, fresh (zero sums)."""
    made = (factory(model, classes, device, dtype) for factory in FACTORIES)
    return [d for d in made if d is not None]
