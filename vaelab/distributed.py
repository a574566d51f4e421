"""torch.distributed for vaelab under `torchrun` (one node or many; under SLURM, `srun torchrun ...`): the process
group started from the environment, one device per rank, `DistributedSampler`-style shards, and the few
collectives the trainer needs.

In a single process (no `WORLD_SIZE` > 1 in the environment, or no process group) nothing here communicates:
`world()` is (0, 1), `shard` returns its input and the reductions return theirs. Within `alone()` a rank acts as
such a single process although its process group runs (`vaelab sweep`: each rank trains runs of its own).
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

from vaelab.errors import ConfigError

T = TypeVar("T")
_alone = False  # set within `alone()`


def environment() -> tuple[int, int, int]:
    """(RANK, WORLD_SIZE, LOCAL_RANK) as torchrun sets them; (0, 1, 0) where they are unset."""
    env = os.environ
    return int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0))


def world() -> tuple[int, int]:
    """(rank, world size) of the running process group; (0, 1) when there is none, or within `alone()`."""
    if not _alone and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@contextlib.contextmanager
def alone() -> Iterator[None]:
    """Within it, this rank is one process of its own (`world()` is (0, 1), so nothing communicates: no DDP, no
    collectives, no rank-0-only writes) while the process group stays up for afterwards. For work that is
    independent per rank, such as the grid points of `vaelab sweep`."""
    global _alone
    before, _alone = _alone, True
    try:
        yield
    finally:
        _alone = before


def start(device: torch.device, timeout: timedelta | None = None) -> torch.device:
    """Under torchrun (`WORLD_SIZE` > 1): start the process group from the environment (`env://`: MASTER_ADDR,
    MASTER_PORT, RANK, WORLD_SIZE), unless one is running, and return this rank's device: `cuda:LOCAL_RANK` (made
    current) when `device` is a CUDA device, else `device`. The backend is gloo on the CPU and NCCL for CUDA tensors
    (with gloo beside it for CPU tensors); `timeout` bounds each collective's wait (torch's default, 30 minutes
    for gloo, where None). In a single process: `device`, and nothing is started."""
    _, size, local = environment()
    if size <= 1:
        return device
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK {local} has no GPU: this node has {torch.cuda.device_count()}; start at most that many "
                "processes per node (torchrun --nproc_per_node)"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        wait = {} if timeout is None else {"timeout": timeout}
        if device.type == "cuda":
            dist.init_process_group("cpu:gloo,cuda:nccl", device_id=device, **wait)
        else:
            dist.init_process_group("gloo", **wait)
        atexit.register(stop)
    return device


def stop() -> None:
    """End the process group, if one is running."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(order: Tensor, rank: int, world: int) -> Tensor:
    """Rank `rank`'s share of the indices `order` `[N]` with `DistributedSampler`'s semantics (drop_last False):
    `order` is padded to a multiple of `world` by repeating its start, then rank r takes every world-th index from
    r. Every rank gets ceil(N / world) indices, so every rank takes the same number of steps; an epoch visits
    `world * ceil(N / world) - N` (< world) examples twice. One process: `order` itself."""
    if world == 1:
        return order
    total = math.ceil(order.numel() / world) * world
    if total > order.numel():
        order = order.repeat(math.ceil(total / order.numel()))[:total]
    return order[rank:total:world]


def block(n: int, rank: int, world: int) -> tuple[int, int]:
    """The contiguous range [start, stop) of rank `rank`'s block of `n` items, the blocks differing in size by at
    most one (no padding: for sums that are all-reduced, each item counted once)."""
    per, extra = divmod(n, world)
    lo = rank * per + min(rank, extra)
    return lo, lo + per + (rank < extra)


def all_sum(values: Tensor) -> Tensor:
    """`values` (any shape, on the backend's device) summed over the ranks, every rank getting the sum; a copy.
    One process: `values`."""
    if world()[1] == 1:
        return values
    out = values.clone()
    dist.all_reduce(out)
    return out


def all_mean(values: Tensor) -> Tensor:
    """`values` averaged over the ranks (`all_sum` / world size)."""
    size = world()[1]
    return values if size == 1 else all_sum(values) / size


def barrier() -> None:
    """Wait until every rank gets here (nothing in one process)."""
    if world()[1] > 1:
        dist.barrier()


def broadcast_object(obj: T) -> T:
    """Rank 0's `obj` (picklable) on every rank. One process: `obj`."""
    if world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]  # type: ignore[return-value]


def all_gather_object(obj: T) -> list[T]:
    """Every rank's `obj` (picklable; tensors in it on the CPU), in rank order, on every rank. One process:
    `[obj]`."""
    size = world()[1]
    if size == 1:
        return [obj]
    out: list = [None] * size
    dist.all_gather_object(out, obj)
    return out


def gather_object(obj: T) -> list[T] | None:
    """Every rank's `obj` (picklable; tensors in it on the CPU), in rank order, on rank 0; None on the others.
    One process: `[obj]`."""
    rank, size = world()
    if size == 1:
        return [obj]
    out: list | None = [None] * size if rank == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def on_rank0(fn: Callable[[], T]) -> T | None:
    """Call `fn` on rank 0 alone (the run directory's checks and writes) and let every rank know how it went: an
    exception it raised is raised on every rank (so none waits for a rank that has stopped), marked
    `raised_on_rank0` on the others. Returns `fn`'s result on
    rank 0, None elsewhere. One process: `fn()`."""
    rank, size = world()
    if size == 1:
        return fn()
    result, error = None, None
    if rank == 0:
        try:
            result = fn()
        except Exception as err:  # sent to the other ranks, then raised here too
            error = err
    box: list[object] = [_portable(error)]
    dist.broadcast_object_list(box, src=0)
    if rank == 0 and error is not None:
        raise error
    if box[0] is not None:
        box[0].raised_on_rank0 = True  # type: ignore[attr-defined]  # rank 0 reports it; the CLI stays quiet here
        raise box[0]  # type: ignore[misc]
    return result


def _portable(error: Exception | None) -> Exception | None:
    """A copy of `error` for the other ranks (its type and message), or a RuntimeError with its message where it
    cannot be pickled."""
    if error is None:
        return None
    import pickle

    try:
        return pickle.loads(pickle.dumps(error))
    except Exception:
        return RuntimeError(f"rank 0: {type(error).__name__}: {error}")
