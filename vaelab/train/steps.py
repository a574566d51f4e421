"""The training step's hot path without a host synchronisation per step (the same code on the CPU and on CUDA).

- `checked_step`: after `loss.backward()`, the non-finite check (loss and gradients, all-reduced over the ranks)
  stays on the device as a flag, and `step_unless` hands it to the optimiser: torch's fused Adam takes it as
  `found_inf` (the interface `torch.amp.GradScaler` uses: the kernel skips the whole update where the flag is 1 and
  leaves the step count as it was), so a non-finite step is skipped without the host looking at it.
- `StepTally`: the epoch's sums (loss of the steps taken, their number, the run of consecutive skipped steps and its
  longest) kept on the device and read back in one transfer every N steps or at the epoch's end.
- `DeviceData`: a split moved to the device once where it fits and batched there by index; else each batch is
  gathered into pinned host memory and copied with `non_blocking`. On the CPU: the split itself (same batches).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from vaelab import distributed
from vaelab.data.supervised import Supervised
from vaelab.train.optimizers import grad_sum

#: The share of the device memory free at placement time that a split may take to be moved there whole.
DEVICE_DATA_SHARE = 0.5

Batchable = Tensor | Supervised


def tally_dtype(device: torch.device) -> torch.dtype:
    """float64 for the sums (as Python floats add), float32 where the device has no float64 (Apple's MPS)."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def takes_found_inf(optimizer: torch.optim.Optimizer) -> bool:
    """Whether `optimizer` skips its step on the device given a `found_inf` flag: torch's Adam (or a subclass, such
    as `AdamNormGrad`) with the fused kernel in every group."""
    return isinstance(optimizer, torch.optim.Adam) and all(g.get("fused") for g in optimizer.param_groups)


def step_unless(optimizer: torch.optim.Optimizer, skip: Tensor) -> None:
    """`optimizer.step()` unless `skip` (a bool scalar on the parameters' device). A fused Adam reads the flag on the
    device (`found_inf`, as under `GradScaler`: no update, no step counted; nothing read back); any other optimiser
    reads it back first (one host sync)."""
    if takes_found_inf(optimizer):
        optimizer.found_inf = skip.to(torch.float32)  # type: ignore[attr-defined]
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf  # type: ignore[attr-defined]
    elif not bool(skip):
        optimizer.step()


def checked_step(
    optimizer: torch.optim.Optimizer, loss: Tensor, params: list[nn.Parameter], grad_clip: float | None, world: int
) -> tuple[Tensor, Tensor]:
    """The optimiser step after `loss.backward()` (the gradients already averaged over the ranks): clip the global
    gradient norm to `grad_clip` if set, all-reduce the pair [loss, check] (`check`: the norm, or the sum of all
    gradient entries: non-finite iff some entry is) and step unless an entry of the pair is non-finite on any rank,
    so every rank skips the same steps. Returns (the loss averaged over ranks, `[]` in `tally_dtype`; whether the step
    was taken, bool `[]`), both on the loss's device; nothing is read back."""
    check = nn.utils.clip_grad_norm_(params, grad_clip) if grad_clip else grad_sum(params)
    pair = distributed.all_sum(torch.stack([loss.detach(), check.to(loss)]))  # [2]: summed over ranks
    taken = pair.isfinite().all()
    step_unless(optimizer, ~taken)
    return pair[0].to(tally_dtype(loss.device)) / world, taken


class Tally(NamedTuple):
    """A `StepTally` read back: the summed loss of the steps taken, how many were taken and skipped, the run of
    consecutive skipped steps at the end and the longest run."""

    loss: float
    taken: int
    skipped: int
    streak: int
    longest: int


class StepTally:
    """Sums over the steps of an epoch, kept on `device` (a step adds to them without a host sync).

    A step with loss l and flag t (taken) adds t * l to `loss` and t to `taken`; the run of skipped steps becomes
    (streak + 1) * (1 - t), `longest` its maximum (starting from `streak`, carried over from the last epoch)."""

    def __init__(self, device: torch.device, streak: int = 0) -> None:
        dtype = tally_dtype(device)
        self.dtype, self.steps = dtype, 0
        self._loss = torch.zeros((), dtype=dtype, device=device)
        self._taken = torch.zeros((), dtype=torch.int64, device=device)
        self._streak = torch.full((), streak, dtype=torch.int64, device=device)
        self._longest = self._streak.clone()

    def add(self, loss: Tensor, taken: Tensor) -> None:
        """Count one step: `loss` `[]` (read only where `taken`, bool `[]`)."""
        self.steps += 1
        self._loss += torch.where(taken, loss, 0)
        self._taken += taken
        self._streak = torch.where(taken, 0, self._streak + 1)
        torch.maximum(self._longest, self._streak, out=self._longest)

    def read(self) -> Tally:
        """The sums so far, in one transfer to the host (one sync)."""
        sums = torch.stack([self._loss, *(t.to(self.dtype) for t in (self._taken, self._streak, self._longest))])
        loss, taken, streak, longest = sums.tolist()
        return Tally(loss, int(taken), self.steps - int(taken), int(streak), int(longest))


def _tensors(data: Batchable) -> list[Tensor]:
    return [data.inputs, data.targets] if isinstance(data, Supervised) else [data]


def _key(data: Batchable) -> list[tuple]:
    return [(t.data_ptr(), t.shape, t.stride(), t.dtype, t._version) for t in _tensors(data)]


def _like(data: Batchable, tensors: list[Tensor]) -> Batchable:
    return Supervised(*tensors) if isinstance(data, Supervised) else tensors[0]


def _fits(nbytes: int, device: torch.device) -> bool:
    """Whether `nbytes` fit in `DEVICE_DATA_SHARE` of `device`'s free memory (counting torch's cached blocks)."""
    if device.type != "cuda":
        return True  # no way to ask: try, and fall back on an out-of-memory error
    free, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return nbytes <= DEVICE_DATA_SHARE * (free + cached)


class DeviceData:
    """A split `[N, *event]` (a tensor or `Supervised` pairs) ready to be batched on `device`.

    Moved to the device once when it fits (`DEVICE_DATA_SHARE` of the free memory), then batched there by index
    (`batch`, `index_device` is the device); else kept on the host and each batch gathered into pinned memory (on
    CUDA) and copied with `non_blocking`, so the copy overlaps the step before. On the CPU the split is used as it is:
    `batch(idx)` is `data[idx]`, `rows(lo, hi)` is `data[lo:hi]`."""

    def __init__(self, data: Batchable, device: torch.device) -> None:
        self.source, self.device, self.data = data, torch.device(device), data
        self._key = _key(data)  # the source is held, so its storage cannot be reused by another tensor
        self.on_device = self.device.type == "cpu" or self._move()
        self.index_device = self.device if self.on_device else torch.device("cpu")
        self._pin = self.device.type == "cuda" and not self.on_device

    def _move(self) -> bool:
        tensors = _tensors(self.source)
        if not _fits(sum(t.nbytes for t in tensors), self.device):
            return False
        try:
            self.data = _like(self.source, [t.to(self.device) for t in tensors])
        except torch.OutOfMemoryError:
            return False
        return True

    def matches(self, data: Batchable) -> bool:
        """Whether `data` is the split this was made from, unchanged since (the same storage, shape, strides and
        in-place version: a dataset that draws a new binarization each epoch gives a new tensor)."""
        return type(data) is type(self.source) and _key(data) == self._key

    @property
    def shape(self) -> torch.Size:
        return self.source.shape

    def batch(self, index: Tensor) -> Batchable:
        """The examples at `index` (int64 `[B]` on `index_device`), on `device`."""
        if self.on_device:
            return _like(self.data, [t.index_select(0, index) for t in _tensors(self.data)])
        return self._copy([_pinned(t, index) if self._pin else t.index_select(0, index) for t in _tensors(self.data)])

    def rows(self, lo: int, hi: int) -> Batchable:
        """The examples `lo:hi`, on `device`."""
        if self.on_device:
            return self.data[lo:hi]
        return self._copy([_pinned(t, slice(lo, hi)) if self._pin else t[lo:hi] for t in _tensors(self.data)])

    def _copy(self, tensors: list[Tensor]) -> Batchable:
        return _like(self.source, [t.to(self.device, non_blocking=self._pin) for t in tensors])


def _pinned(t: Tensor, index: Tensor | slice) -> Tensor:
    """`t[index]` gathered into a fresh pinned host tensor (torch's caching host allocator keeps it until a
    `non_blocking` copy from it has finished)."""
    if isinstance(index, slice):
        rows = t[index]
        return torch.empty(rows.shape, dtype=t.dtype, pin_memory=True).copy_(rows)
    out = torch.empty((index.numel(), *t.shape[1:]), dtype=t.dtype, pin_memory=True)
    return torch.index_select(t, 0, index, out=out)
