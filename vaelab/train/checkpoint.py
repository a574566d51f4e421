"""Atomic checkpoints: `checkpoints/epoch-NNNNNN/{model.safetensors, state.pt}` plus a `latest` pointer.

A checkpoint is written into a temporary directory, flushed to disk, and renamed into place; only then
is the `latest` pointer replaced (os.replace is atomic). A run killed at any moment therefore always has
a complete checkpoint to resume from. `state.pt` holds the optimizer, the RNG states and the trainer's
counters; it is read back with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}


def save_weights(model: nn.Module, path: Path) -> None:
    """Model state dict to safetensors, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    save_file(_cpu_state(model), str(tmp))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_weights(model: nn.Module, path: Path) -> None:
    model.load_state_dict(load_file(str(path), device=str(next(model.parameters()).device)))


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
    """Write checkpoint `epoch` (the number of completed epochs) under `directory`; keep the newest `keep`."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"epoch-{epoch:06d}"
    tmp = directory / f".epoch-{epoch:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(_cpu_state(model), str(tmp / "model.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "rng": rng_state(), "trainer": trainer_state}, tmp / "state.pt")
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)
    _fsync_dir(directory)
    atomic_write_text(directory / "latest", final.name + "\n")
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
    """Restore model (and optimizer, RNG) from checkpoint `path`; return the trainer state dict."""
    load_weights(model, path / "model.safetensors")
    state = torch.load(path / "state.pt", weights_only=True, map_location="cpu")
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"])
    return state["trainer"]
