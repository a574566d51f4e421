"""Atomic, checksummed checkpoints: `checkpoints/epoch-NNNNNN/{model.safetensors, state.pt}` plus a `latest`
pointer, and the best weights `best.safetensors`.

A checkpoint is written into a temporary directory, flushed to disk, and renamed into place; only then
is the `latest` pointer replaced (os.replace is atomic). A run killed at any moment therefore always has
a complete checkpoint to resume from. `state.pt` holds the optimizer, the RNG states and the trainer's
counters; it is read back with `torch.load(weights_only=True)`.

Every weights and state file `F` is written with its sha256 beside it, in `F.sha256` (the format of `sha256sum`,
so `sha256sum -c best.safetensors.sha256` checks it by hand), and checked whenever it is read: flipped bits, a
truncated file or a damaged header are a one-line `CorruptRunFile`, never wrong numbers. The digest file travels
with its file (`vaelab ledger add` copies both). A file written before vaelab recorded digests has none and is
read unchecked. A write that fails (a full disk) removes its temporary files and leaves the previous checkpoint
and best weights as they were.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import Tensor, nn

from vaelab.errors import CorruptRunFile, RunDirError

DIGEST_SUFFIX = ".sha256"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_bytes(path: Path, data: bytes) -> None:
    """Write and flush `data` to `path`: the one place run files reach the disk."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _replace(path: Path, data: bytes) -> None:
    """Write `path` atomically (a temporary file renamed over it); on failure the old `path` is untouched."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        _write_bytes(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    _replace(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `path` atomically (a temporary file beside it, flushed, then renamed over it)."""
    _replace(path, data)


def digest_path(path: Path) -> Path:
    """Where the sha256 of `path` is kept: `path` + `.sha256`, beside it."""
    return path.with_name(path.name + DIGEST_SUFFIX)


def _listed_digests(path: Path) -> list[str]:
    """The digests `path`'s digest file lists (none if it has no digest file)."""
    side = digest_path(path)
    return [line.split()[0] for line in side.read_text().splitlines() if line.strip()] if side.is_file() else []


def write_checked(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically, with its sha256 in `digest_path(path)`. At every moment the file on disk
    matches a digest its digest file lists: the new digest is listed beside the old before the file is replaced,
    and the old one dropped after."""
    digest, side = hashlib.sha256(data).hexdigest(), digest_path(path)
    old = _listed_digests(path) if path.exists() else []
    _replace(side, "".join(f"{d}  {path.name}\n" for d in dict.fromkeys([digest, *old])).encode())
    _replace(path, data)
    if old:
        _replace(side, f"{digest}  {path.name}\n".encode())


def read_checked(path: Path) -> bytes:
    """The bytes of `path`, checked against its sha256 file if it has one (`CorruptRunFile` on a mismatch)."""
    try:
        data = path.read_bytes()
        listed = _listed_digests(path)
    except OSError as err:
        raise CorruptRunFile(f"{path} cannot be read: {err.strerror or err}") from None
    if listed and hashlib.sha256(data).hexdigest() not in listed:
        raise CorruptRunFile(f"{path} is corrupt: its sha256 does not match {digest_path(path).name}")
    return data


def _reason(err: Exception) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def read_weights(path: Path) -> dict[str, Tensor]:
    """The tensors of a safetensors file, checked (`read_checked`); `CorruptRunFile` if it cannot be parsed."""
    data = read_checked(path)
    try:
        return load_safetensors(data)
    except Exception as err:  # a truncated file or a damaged header (safetensors' own error type)
        raise CorruptRunFile(f"{path} is corrupt (truncated or damaged: {_reason(err)})") from None


def _cpu_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}


def _write_failed(what: Path, err: OSError, kept: str) -> RunDirError:
    return RunDirError(f"cannot write {what}: {err.strerror or err}; {kept}")


def save_weights(model: nn.Module, path: Path) -> None:
    """Model state dict to safetensors, atomically, with its sha256 (`write_checked`)."""
    try:
        write_checked(path, save_safetensors(_cpu_state(model)))
    except OSError as err:
        kept = f"the previous {path.name} is as it was; free space, then vaelab train --resume {path.parent}"
        raise _write_failed(path, err, kept) from None


def load_weights(model: nn.Module, path: Path) -> None:
    """Load checked weights (`read_weights`) into `model`; `RunDirError` naming the first tensor that is missing,
    extra or of another shape than the model's (a config edited after training)."""
    weights, own = read_weights(path), model.state_dict()
    missing = [k for k in own if k not in weights]
    extra = [k for k in weights if k not in own]
    shapes = [k for k in own if k in weights and weights[k].shape != own[k].shape]
    if missing or extra or shapes:
        if shapes:
            k = shapes[0]
            first = f"{k} is {list(weights[k].shape)} there but {list(own[k].shape)} in the model"
        else:
            first = f"{'the model has no' if extra else 'it lacks'} {(extra or missing)[0]}"
        raise RunDirError(
            f"the weights in {path} do not fit the model its config.yaml describes ({first}): restore the config the "
            "run was trained with, or the file is damaged"
        )
    model.load_state_dict(weights)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    directory: Path, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer, trainer_state: dict, keep: int = 2
) -> Path:
    """Write checkpoint `epoch` (the number of completed epochs) under `directory`; keep the newest `keep`. A write
    that fails (`RunDirError`) leaves the checkpoints there were."""
    final = directory / f"epoch-{epoch:06d}"
    tmp = directory / f".epoch-{epoch:06d}.tmp"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        write_checked(tmp / "model.safetensors", save_safetensors(_cpu_state(model)))
        state = io.BytesIO()
        torch.save({"optimizer": optimizer.state_dict(), "rng": rng_state(), "trainer": trainer_state}, state)
        write_checked(tmp / "state.pt", state.getvalue())
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
        _fsync_dir(directory)
        atomic_write_text(directory / "latest", final.name + "\n")
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        previous = latest_checkpoint(directory) if directory.is_dir() else None
        kept = f"the checkpoint before, {previous}, is intact" if previous else "no earlier checkpoint was written"
        raise _write_failed(final, err, f"{kept}; free space, then vaelab train --resume {directory.parent}") from None
    for old in sorted(directory.glob("epoch-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoints(directory: Path) -> list[Path]:
    """The complete checkpoints under `directory`, newest first: the one the `latest` pointer names, then the
    others by epoch (a resume falls back along this list when a checkpoint cannot be read)."""
    complete = [d for d in sorted(directory.glob("epoch-*"), reverse=True) if (d / "state.pt").is_file()]
    pointer = directory / "latest"
    if pointer.is_file():
        target = directory / pointer.read_text().strip()
        if target in complete:
            complete.remove(target)
            complete.insert(0, target)
    return complete


def latest_checkpoint(directory: Path) -> Path | None:
    """The checkpoint the `latest` pointer names (falling back to the newest complete one), or None."""
    found = checkpoints(directory)
    return found[0] if found else None


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Restore model (and optimizer, RNG) from checkpoint `path`, every file checked; return the trainer state dict.
    `CorruptRunFile` if a file fails its sha256 or cannot be parsed."""
    load_weights(model, path / "model.safetensors")
    data = read_checked(path / "state.pt")
    try:
        state = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as err:  # a truncated or damaged archive (zipfile, pickle and torch errors alike)
        raise CorruptRunFile(f"{path / 'state.pt'} is corrupt (truncated or damaged: {_reason(err)})") from None
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"])
    return state["trainer"]
