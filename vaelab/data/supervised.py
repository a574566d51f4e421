"""Supervised data: (inputs, targets) pairs that flow through the trainer and objectives as one batch.

A classifier with a latent variable (the VIB of Alemi et al. 2017, SIWAE sec. 4.2) is a latent variable
model whose "data" is a pair: q(z | x) reads the inputs, p(y | z) scores the targets. The objectives only
pass their data argument on to `model.posterior(data)` and `model.log_likelihood(data, z)`, so a
:class:`Supervised` batch goes through every objective, the trainer and the IS evaluator unchanged. It
supports what they do with a data tensor: `len`, `.shape[0]`, slicing, index tensors and `.to(device)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vaelab.errors import DataError
from vaelab.protocols import DataKind, Observed


@dataclass(frozen=True, eq=False)
class Supervised:
    """`inputs` `[N, *event]` (float) with integer class `targets` `[N]` (int64)."""

    inputs: Tensor
    targets: Tensor

    def __post_init__(self) -> None:
        if self.targets.dim() != 1 or self.inputs.dim() < 1 or self.inputs.shape[0] != self.targets.shape[0]:
            raise DataError(
                f"supervised data need inputs [N, ...] and targets [N], got {tuple(self.inputs.shape)} and "
                f"{tuple(self.targets.shape)}; give one target per input"
            )

    def __len__(self) -> int:
        return self.targets.shape[0]

    @property
    def shape(self) -> torch.Size:
        """The inputs' shape `[N, *event]`, so code that reads `data.shape[0]` as the batch size works."""
        return self.inputs.shape

    @property
    def device(self) -> torch.device:
        return self.inputs.device

    def __getitem__(self, index: slice | Tensor | list) -> Supervised:
        """The examples at `index` (a slice, an integer index tensor or list, or a boolean mask)."""
        if isinstance(index, int):
            raise TypeError("index a Supervised batch with a slice or an index tensor, which keep the batch dimension")
        return Supervised(self.inputs[index], self.targets[index])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Supervised:
        return Supervised(
            self.inputs.to(device, non_blocking=non_blocking), self.targets.to(device, non_blocking=non_blocking)
        )


def inputs_of(data: Tensor | Supervised) -> Tensor:
    """The inputs of a supervised batch; a plain tensor is its own input (prediction needs no labels)."""
    return data.inputs if isinstance(data, Supervised) else data


class SupervisedDataset:
    """A labelled :class:`~vaelab.data.Dataset` whose `split(name, epoch)` returns :class:`Supervised` pairs.

    Every other attribute (`name`, `event_shape`, `labels`, `sizes`, ...) is the wrapped dataset's.
    """

    def __init__(self, dataset) -> None:
        for split in dataset.sizes:
            if dataset.labels(split) is None:
                raise DataError(
                    f"dataset {dataset.name!r} has no labels for split {split!r}, but the model is a classifier "
                    "(its likelihood models labels); use a labelled dataset such as mnist or mnist_column"
                )
        self.dataset = dataset

    def split(self, name: str, epoch: int = 0) -> Supervised:
        return Supervised(self.dataset.split(name, epoch=epoch), self.dataset.labels(name))

    def __getattr__(self, attr: str):
        return getattr(self.__dict__["dataset"], attr)

    def __repr__(self) -> str:
        return f"SupervisedDataset({self.dataset!r})"


def predicts_labels(model) -> bool:
    """Whether `model`'s likelihood is over class labels (it then trains on :class:`Supervised` data)."""
    return (
        isinstance(model, Observed)
        and isinstance(model.likelihood, DataKind)
        and model.likelihood.data_kind == "labels"
    )
