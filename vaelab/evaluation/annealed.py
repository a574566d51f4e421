"""AIS and BDMC over a whole dataset: batches of points each seeded by its index, shared out over the ranks of a
process group, and kept batch by batch on disk so that a long evaluation can be stopped and continued
(`vaelab.evaluation.batches`).

Batch j (points `j * options.batch_size` on) runs `vaelab.mcmc.ais_replicates` (or `vaelab.mcmc.bdmc`) with the
options' seed replaced by `derive_seed(options.seed, j)`, so its values depend on its points and that seed alone:
the per-point results are the same for any number of ranks, and for a resumed evaluation as for an uninterrupted
one. The results are gathered on rank 0, which alone gets them (the others get None).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution

from vaelab import distributed
from vaelab.errors import ConfigError
from vaelab.evaluation.batches import (
    PartialResults,
    digest,
    model_digest,
    seeded_batches,
    shared_seed,
)
from vaelab.mcmc.ais import AISResult, ReplicatedAIS, ais_replicates
from vaelab.mcmc.bdmc import BDMCResult, bdmc
from vaelab.mcmc.options import AISOptions
from vaelab.nets.modes import in_eval_mode

#: Fields of `AISOptions` that change results by float round-off at most, left out of a partial result's key (a
#: resumed evaluation may change them).
_ROUND_OFF_ONLY = ("chunk_elements",)


def _encode(r: AISResult) -> dict[str, Any]:
    """An `AISResult` as a dict of CPU tensors (for a partial result on disk and the gather)."""
    return {f.name: v.cpu() if isinstance(v := getattr(r, f.name), Tensor) else v for f in dataclasses.fields(r)}


def _decode(d: dict[str, Any]) -> AISResult:
    return AISResult(**d)


def options_key(o: AISOptions) -> dict[str, Any]:
    """The options as JSON values for a partial result's key: a tensor step size by its `digest`; an initial
    distribution cannot be keyed (`ConfigError`)."""
    if isinstance(o.init, Distribution):
        raise ConfigError("a resumable AIS evaluation needs init 'prior' or 'posterior', not a distribution")
    out: dict[str, Any] = {}
    for f in dataclasses.fields(o):
        if f.name not in _ROUND_OFF_ONLY:
            value = getattr(o, f.name)
            out[f.name] = f"sha256:{digest(value)}" if isinstance(value, Tensor) else value
    return out


def _setup(
    model, data: tuple[Tensor, ...], o: AISOptions, shard: bool, partials: str | Path | None, what: str
) -> tuple[AISOptions, int, PartialResults | None]:
    """The options with a seed (drawn from torch's generator on rank 0 when they have none; needed for
    `partials`), the batch size, and the partial results' store keyed by every setting that decides the results
    and, batch by batch, by the batch's points (`PartialResults` with `points`)."""
    seed = shared_seed(o.seed, shard=shard, resumable=partials is not None, what=f"{what.upper()} evaluation")
    o = dataclasses.replace(o, seed=seed)
    n = data[0].shape[0]
    batch_size = o.batch_size or n
    store = None
    if partials is not None:  # keyed batch by batch by their points: a shorter or longer evaluation shares them
        key = {"evaluation": what, **options_key(o), "batch_size": batch_size, "model": model_digest(model)}
        if what == "bdmc":  # points simulated n at a time: another n simulates other points from the first on
            key["n"] = n
        store = PartialResults(partials, key, points=data, batch_size=batch_size)
    return o, batch_size, store


def _device(model, x: Tensor, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    param = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    return param.device if param is not None else x.device


@torch.no_grad()
@in_eval_mode
def evaluate_ais(
    model: Any,
    data: Tensor,
    options: AISOptions,
    *,
    shard: bool = False,
    partials: str | Path | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    deadline: float | None = None,
) -> ReplicatedAIS | None:
    """AIS (`vaelab.mcmc.ais_replicates` with `options`) of every point of `data` `[N, *event]`, in batches of
    `options.batch_size` points (all at once when None), batch j with seed `derive_seed(options.seed, j)` (module
    docstring; drawn once from torch's generator when the options have none). `shard`: under a process group, rank
    r runs batches r, r + W, ... (every rank must call this). `partials`: a directory where each batch's result is
    kept as it is done, so that calling this again with the same settings continues the evaluation
    (`PartialResults`; other settings raise `ConfigError`); remove it when the result is safe. Returns, on rank 0,
    the `ReplicatedAIS` of all N points (CPU tensors; `result` `[C, N * R]`), equal to an unsharded, uninterrupted
    call's; None on the other ranks. `deadline` (a `time.monotonic()` reading; needs `partials`): stop with
    `OutOfTime` rather than start a batch that would end after it (`vaelab.evaluation.batches.seeded_batches`)."""
    o, batch_size, store = _setup(model, (data,), options, shard, partials, "ais")
    dev, bars = _device(model, data, device), progress and (not shard or distributed.world()[0] == 0)

    def one(batch: slice, seed: int) -> dict:
        opts = dataclasses.replace(o, seed=seed, batch_size=None)
        return _encode(ais_replicates(model, data[batch].to(dev), opts, progress=bars).result)

    parts = seeded_batches(
        one, data.shape[0], batch_size, o.seed, shard=shard, partials=store, progress=progress, desc="AIS batches",
        deadline=deadline,
    )  # fmt: skip
    if parts is None:
        return None
    return ReplicatedAIS(AISResult.cat([_decode(p) for p in parts]), o.replicates)


@torch.no_grad()
@in_eval_mode
def evaluate_bdmc(
    model: Any,
    x: Tensor,
    z_star: Tensor,
    options: AISOptions,
    *,
    shard: bool = False,
    partials: str | Path | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    deadline: float | None = None,
) -> BDMCResult | None:
    """BDMC (`vaelab.mcmc.bdmc`) of simulated points `x` `[N, *event]` with their latents `z_star` `[N, D]`, in
    seeded batches as `evaluate_ais` (batch j's forward AIS with seed s_j = `derive_seed(options.seed, j)`, its
    reverse AIS with s_j + 1), sharded over ranks, kept in `partials` and stopped by `deadline` likewise. Returns
    the `BDMCResult` of all N points on rank 0 (CPU tensors), None on the others."""
    o, batch_size, store = _setup(model, (x, z_star), options, shard, partials, "bdmc")
    dev, bars = _device(model, x, device), progress and (not shard or distributed.world()[0] == 0)

    def one(batch: slice, seed: int) -> dict:
        opts = dataclasses.replace(o, seed=seed, batch_size=None)
        r = bdmc(model, x[batch].to(dev), z_star[batch].to(dev), opts, progress=bars)
        return {"forward": _encode(r.forward), "reverse": _encode(r.reverse)}

    parts = seeded_batches(
        one, x.shape[0], batch_size, o.seed, shard=shard, partials=store, progress=progress, desc="BDMC batches",
        deadline=deadline,
    )  # fmt: skip
    if parts is None:
        return None
    return BDMCResult(*(AISResult.cat([_decode(p[k]) for p in parts]) for k in ("forward", "reverse")))
