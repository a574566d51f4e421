"""Evaluation over batches of data points, each seeded by its index, shared out over the ranks of a process group
and, for long evaluations (AIS), kept batch by batch on disk so that a stopped evaluation continues.

Batch j holds points `j * batch_size` up to `(j + 1) * batch_size` and draws its noise from seed
`derive_seed(seed, j)`, so its result depends on its points and that seed alone: not on the batches before it,
nor on which rank computed it, nor on whether it was computed in this process or loaded from a partial result.
The per-point values are therefore the same for any number of ranks, one included, and for a resumed
evaluation as for an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import torch
from torch import Tensor, nn

from vaelab import distributed
from vaelab.data.dataset import derive_seed
from vaelab.errors import ConfigError, CorruptRunFile, OutOfTime
from vaelab.progress import progress as progress_bar
from vaelab.train.checkpoint import atomic_write_bytes, atomic_write_text

R = TypeVar("R")


def digest(*tensors: Tensor) -> str:
    """sha256 (hex) of the tensors' dtypes, shapes and bytes: a fingerprint of data or weights."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def model_digest(model: nn.Module) -> str:
    """`digest` of a module's state (parameters and buffers, in name order)."""
    state = model.state_dict()
    return digest(*(state[k] for k in sorted(state)))


def shared_seed(seed: int | None, *, shard: bool, resumable: bool, what: str) -> int:
    """`seed`, or where it is None one drawn from torch's generator (rank 0's, broadcast under `shard`, so every rank
    uses the same). A `resumable` evaluation (partial results on disk) needs it given: `ConfigError` naming `what`."""
    if seed is not None:
        return seed
    if resumable:
        raise ConfigError(f"a resumable {what} (partial results) needs a seed")
    seed = int(torch.randint(2**62, ()))
    return distributed.broadcast_object(seed) if shard else seed


def _batch_index(path: Path) -> int:
    return int(path.name.split(".")[0].removeprefix("batch-"))


def _batch_files(directory: Path) -> list[Path]:
    """The batch files in `directory`: `batch-<j>.pt.gz`, or `batch-<j>.pt` (uncompressed) from earlier versions;
    not the temporary file of a write that was killed (`batch-<j>.pt.gz.tmp`)."""
    found = directory.glob("batch-*.pt*") if directory.is_dir() else ()
    return sorted(p for p in found if p.name.endswith((".pt", ".pt.gz")))


def saved_batches(directory: str | Path, below: int | None = None) -> int:
    """How many batch results `directory` holds (`PartialResults`; 0 where there is no such directory); with
    `below`, only those of batches j < below."""
    return sum(below is None or _batch_index(p) < below for p in _batch_files(Path(directory)))


def kept_batches(points: int, batch_size: int) -> int:
    """How many batches of an evaluation of `points` points are kept by `PartialResults` keyed by points: the
    full ones, batches j < points // batch_size."""
    return points // batch_size


class Saved(NamedTuple):
    """What `read_back` finds: `batches` saved, the `seconds` their computation took as recorded in their files,
    and how many of them (`untimed`, written by an earlier vaelab) recorded none."""

    batches: int
    seconds: float
    untimed: int


def read_back(directory: str | Path, below: int | None = None) -> Saved:
    """The batch results in `directory` (with `below`, those of batches j < below) and their recorded computing
    time: what an evaluation continued from them spends in all is its own time plus `seconds`. An unreadable file
    counts as a batch without time (it is computed again, and the warning is given then)."""
    files = [p for p in _batch_files(Path(directory)) if below is None or _batch_index(p) < below]
    times = [s.get("seconds") if (s := PartialResults._read(p, quiet=True)) is not None else None for p in files]
    timed = [t for t in times if isinstance(t, (int, float))]
    return Saved(len(files), float(sum(timed)), len(files) - len(timed))


@contextlib.contextmanager
def random_state(seed: int, device: torch.device | str | None = None) -> Iterator[None]:
    """Within the block, torch's generators (the CPU's and `device`'s, if CUDA) start from `seed`; they are restored
    after it, so the caller's stream is left as it was."""
    device = torch.device(device or "cpu")
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


class PartialResults:
    """Per-batch results of one evaluation kept in `directory`, so that a stopped evaluation continues where it
    stopped: `manifest.json` holds `key` (every setting that decides the results: options, seed, batch size, a
    digest of the model, and of the data unless `points` are given), and `batch-<j>.pt.gz` batch j's result (a dict
    of tensors and numbers, as `torch.load(weights_only=True)` reads, gzip-compressed), written atomically (a
    temporary file renamed over it) and tagged with the key's digest. Settings that differ from the manifest's are
    refused (`open`), never mixed.

    With `points` (the evaluation's data tensors `[N, ...]`, batch j holding rows `j * batch_size` up to
    `(j + 1) * batch_size`), the data are keyed batch by batch instead: each file carries the digest of its own
    points, checked when it is read, and `key` leaves out the data and their number. An evaluation of the first n
    points then shares the batches of one of the first m with the same settings, whichever is longer; only full
    batches are kept, since a shorter last batch holds other points than the full batch of a longer evaluation.
    `open` records the most points asked for (`WANTED`), so that a shorter evaluation leaves the directory to the
    longer one (`remove_partials`)."""

    def __init__(
        self,
        directory: str | Path,
        key: dict[str, Any],
        points: tuple[Tensor, ...] | None = None,
        batch_size: int | None = None,
    ) -> None:
        if points is not None and batch_size is None:
            raise ValueError("results keyed by their points need the batch size")
        self.directory = Path(directory)
        self.key = json.loads(json.dumps(key))  # as the manifest reads back (tuples as lists)
        self.tag = _tag(self.key)
        self.points, self.batch_size = points, batch_size
        self.resumed = 0  # batches found by `open`
        self.times: list[float] = []  # the recorded seconds of the batches loaded or saved through this object

    def open(self) -> int:
        """Create the directory and its manifest, or check the manifest there against `key` (converting the
        per-evaluation keys of an earlier vaelab: `_convert`); the number of batches already saved. `ConfigError`
        naming the differing settings when the manifest is another's."""
        manifest = self.directory / "manifest.json"
        if manifest.is_file():
            try:
                saved = json.loads(manifest.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                raise CorruptRunFile(
                    f"{manifest} cannot be read ({err}); delete {self.directory} to start the evaluation afresh"
                ) from None
            if not isinstance(saved, dict):
                raise CorruptRunFile(f"{manifest} is not a manifest; delete {self.directory} to start afresh")
            if saved != self.key and self._convert(saved):
                saved = self.key
            if saved != self.key:
                differ = sorted(k for k in {*saved, *self.key} if saved.get(k) != self.key.get(k))
                what = "; ".join(f"{k}: {saved.get(k)!r} there, {self.key.get(k)!r} now" for k in differ)
                raise ConfigError(
                    f"{self.directory} holds the partial results of an evaluation with other settings ({what}); "
                    "rerun with its settings to continue it, or delete that directory to start afresh"
                )
        else:
            self.directory.mkdir(parents=True, exist_ok=True)
            atomic_write_text(manifest, json.dumps(self.key, indent=2, sort_keys=True) + "\n")
        if self.points is not None:
            _want(self.directory, self.points[0].shape[0])
        self.resumed = saved_batches(self.directory)
        return self.resumed

    def _convert(self, saved: dict[str, Any]) -> bool:
        """Rewrite, as this class keys them with `points`, the partial results that an earlier vaelab keyed by all
        the points of its evaluation (`n` and `data` in the manifest; the rest as `key`, which may keep `n`): each
        full batch's file is tagged anew with its points' digest, a short last batch is dropped. False where `saved`
        is not such a manifest; `ConfigError` where its points are not the first n of `points`."""
        if self.points is None or "data" in self.key or not {"n", "data"} <= saved.keys():
            return False
        unkeyed = {k: v for k, v in saved.items() if k != "data" and (k != "n" or "n" in self.key)}
        if unkeyed != self.key:
            return False
        n, size = saved["n"], self.batch_size
        assert size is not None
        if self.points[0].shape[0] < n or digest(*(t[:n] for t in self.points)) != saved["data"]:
            raise ConfigError(
                f"{self.directory} holds partial results that an earlier vaelab keyed by all {n} points of its "
                f"evaluation: evaluate those first {n} points once with these settings to convert them, or delete "
                "that directory to start afresh"
            )
        for path in _batch_files(self.directory):
            j = _batch_index(path)
            stored = self._read(path)
            if path == self.path(j) and stored is not None and stored.get("tag") == self.tag:
                continue  # converted already, by a conversion that was stopped before it rewrote the manifest
            if stored is not None and stored.get("tag") != _tag(saved):
                raise ConfigError(f"{path} is from an evaluation with other settings than its manifest's")
            if stored is not None and (j + 1) * size <= n:
                self.save(j, slice(j * size, (j + 1) * size), stored["result"], stored.get("seconds"))
            if path != self.path(j):
                path.unlink()
        atomic_write_text(self.directory / "manifest.json", json.dumps(self.key, indent=2, sort_keys=True) + "\n")
        _want(self.directory, n)
        return True

    def path(self, j: int) -> Path:
        return self.directory / f"batch-{j:06d}.pt.gz"

    def keeps(self, batch: slice) -> bool:
        """Whether the result of the points `batch` is kept: always, unless keyed by points (then full batches)."""
        return self.points is None or batch.stop - batch.start == self.batch_size

    def _points(self, batch: slice) -> str | None:
        return None if self.points is None else digest(*(t[batch] for t in self.points))

    @staticmethod
    def _read(path: Path, quiet: bool = False) -> dict | None:
        try:
            raw = path.read_bytes()
            saved = torch.load(io.BytesIO(gzip.decompress(raw) if path.suffix == ".gz" else raw), weights_only=True)
            if not isinstance(saved, dict) or "result" not in saved:
                raise ValueError("not a batch result")
            return saved
        except Exception as err:  # cannot happen through `save` (atomic); computing it again loses nothing
            if not quiet:
                print(f"warning: cannot read {path} ({err}); computing that batch again", file=sys.stderr)
            return None

    def load(self, j: int, batch: slice) -> dict | None:
        """Batch j's saved result (the points `batch`), or None where there is none (or it cannot be read: it is
        computed again). `ConfigError` when it is another evaluation's, or (keyed by points) of other points."""
        legacy = self.directory / f"batch-{j:06d}.pt"
        path = self.path(j) if self.path(j).is_file() else legacy
        if not self.keeps(batch) or not path.is_file() or (saved := self._read(path)) is None:
            return None
        if saved.get("tag") != self.tag:
            raise ConfigError(f"{path} is from an evaluation with other settings than {self.directory}/manifest.json")
        if saved.get("points") != self._points(batch):
            raise ConfigError(
                f"{path} holds the result of other points than points {batch.start} to {batch.stop - 1} of this "
                f"evaluation; delete {self.directory} to start afresh"
            )
        if isinstance(saved.get("seconds"), (int, float)):
            self.times.append(float(saved["seconds"]))
        return saved["result"]

    def save(self, j: int, batch: slice, result: dict, seconds: float | None = None) -> None:
        """Write batch j's result (of the points `batch`) atomically, gzip-compressed, with the `seconds` that
        computing it took (`read_back`)."""
        buffer = io.BytesIO()
        torch.save({"tag": self.tag, "points": self._points(batch), "result": result, "seconds": seconds}, buffer)
        atomic_write_bytes(self.path(j), gzip.compress(buffer.getvalue(), compresslevel=6, mtime=0))
        if seconds is not None:
            self.times.append(float(seconds))

    def expected_seconds(self) -> float | None:
        """What the next batch is expected to take: the mean recorded time of the batches loaded or saved so far
        (None before any)."""
        return sum(self.times) / len(self.times) if self.times else None


#: Beside a manifest keyed by points: the most points that an evaluation which opened the directory asked for.
WANTED = "points-wanted.json"


def _wanted(directory: Path) -> int:
    try:
        return int(json.loads((directory / WANTED).read_text())["n"])
    except (OSError, ValueError, KeyError, TypeError):  # none yet (or unreadable: then none is known)
        return 0


def _want(directory: Path, n: int) -> None:
    """Record that an evaluation of `n` points uses `directory` (`WANTED`: the largest such n)."""
    if n > _wanted(directory):
        atomic_write_text(directory / WANTED, json.dumps({"n": n}) + "\n")


def partials_needed(directory: str | Path, points: int, batch_size: int) -> bool:
    """Whether a longer evaluation than one of `points` points in batches of `batch_size` uses the `PartialResults`
    (keyed by points) in `directory`: one that opened it asking for more points (stopped, or still running), or
    whose batches lie beyond these."""
    directory = Path(directory)
    beyond = saved_batches(directory) > saved_batches(directory, below=kept_batches(points, batch_size))
    return beyond or _wanted(directory) > points


def remove_partials(directory: str | Path, points: int, batch_size: int) -> bool:
    """Once the result of an evaluation of `points` points in batches of `batch_size` is written, delete the
    `PartialResults` (keyed by points) in `directory`, unless a longer evaluation uses it (`partials_needed`).
    Whether it was deleted."""
    if partials_needed(directory, points, batch_size):
        return False
    shutil.rmtree(directory, ignore_errors=True)
    return True


def _tag(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _stop_if_late(partials: PartialResults, computes: bool, deadline: float, count: int, world: int) -> None:
    """Raise `OutOfTime` on every rank where any rank would compute a batch (`computes`) that is expected to end
    after `deadline` (every rank must call this, round by round)."""
    expected = partials.expected_seconds()
    late = computes and time.monotonic() + (expected or 0.0) > deadline
    found = distributed.all_gather_object((late, expected)) if world > 1 else [(late, expected)]
    if any(late for late, _ in found):
        saved = saved_batches(partials.directory, below=count)
        raise OutOfTime(str(partials.directory), saved, count - saved, max(t or 0.0 for _, t in found))


def seeded_batches(
    fn: Callable[[slice, int], R],
    n: int,
    batch_size: int,
    seed: int,
    *,
    shard: bool = False,
    partials: PartialResults | None = None,
    everywhere: bool = False,
    progress: bool = True,
    desc: str = "batches",
    deadline: float | None = None,
) -> list[R] | None:
    """`[fn(batch_j, derive_seed(seed, j)) for j]` over the batches `batch_j` (slices) of `n` points, in order
    (module docstring). With `shard`, under a process group (every rank must call this), rank r computes batches
    r, r + W, ... and the results are gathered on rank 0 (the others get None), or on every rank with `everywhere`.
    With `partials`, each batch's result (a dict of CPU tensors and numbers) is saved as it is computed, with its
    time, and a batch already saved is loaded instead; rank 0 opens them (`PartialResults.open`; an error is raised
    on every rank). `deadline` (a `time.monotonic()` reading; needs `partials`): no batch is started that would not
    end by then, by `PartialResults.expected_seconds` (so a fresh evaluation's first batch runs unless the deadline
    has passed); the ranks decide together, round by round, and every one raises `OutOfTime`. One process: the
    list."""
    if deadline is not None and partials is None:
        raise ValueError("a deadline needs partial results: the batches done before it would be lost")
    rank, world = distributed.world() if shard else (0, 1)
    if partials is not None:
        distributed.on_rank0(partials.open) if world > 1 else partials.open()
    count = -(-n // batch_size)
    rounds = -(-count // world)  # rank 0 has a batch in every round, the others in all but perhaps the last
    bar = progress_bar(range(rounds), desc=desc, unit="batch", enabled=progress and rank == 0)
    parts = {}
    for r in bar:
        j = r * world + rank
        batch = slice(j * batch_size, min((j + 1) * batch_size, n)) if j < count else None
        part = partials.load(j, batch) if partials is not None and batch is not None else None
        if deadline is not None:
            assert partials is not None
            _stop_if_late(partials, batch is not None and part is None, deadline, count, world)
        if batch is None:
            continue
        if part is None:
            began = time.monotonic()
            part = fn(batch, derive_seed(seed, j))
            if partials is not None and partials.keeps(batch):
                partials.save(j, batch, part, time.monotonic() - began)  # type: ignore[arg-type]
        parts[j] = part
    if world == 1:
        shares: list | None = [parts]
    else:
        shares = distributed.all_gather_object(parts) if everywhere else distributed.gather_object(parts)
    if shares is None:
        return None
    found = {j: part for share in shares for j, part in share.items()}
    return [found[j] for j in range(count)]
