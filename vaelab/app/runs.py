"""Run directories: create, train, evaluate and sample; the application layer under the commands.

A run is loaded (`Run`, `build_run`, `load_run`) by `vaelab.recording`, which `vaelab.load` shares. `open_run` also
opens a run that `vaelab.fit` wrote for a model built in Python (`model.json`, `fit.yaml`): its model rebuilt as
`vaelab.load` does, its data given apart (`FitData`: a dataset name or a tensor file), since `fit` trains on tensors.

A run directory holds `config.yaml` (the resolved config), `metrics.jsonl` (one line per epoch),
`checkpoints/` (atomic, resumable), `best.safetensors` (the best validation weights), `eval-<split>.json`
and PNG grids.

Safety of run directories (`train`): nothing is written before the config, the model, the dataset and the data
checks pass; a new run directory that fails before its first checkpoint is removed again (only what this call
created); `overwrite` replaces only a run (`is_run_dir`) and moves it aside to `<dir>.replaced-<timestamp>`
(kept, never deleted); a resume changes only `config.RESUMABLE_KEYS` and rewrites `config.yaml` after its
checkpoint has loaded.

Under torchrun (`vaelab.distributed`), `train` runs on every rank, but only rank 0 checks, creates and writes the
run directory (`distributed.on_rank0`: an error there is raised on every rank); every rank builds the model and
trains it (the run directory must be on a filesystem every node sees, for `--resume`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from vaelab import distributed
from vaelab.config import Config, apply_overrides, check_resume_changes, config_from_dict
from vaelab.data import load_dataset
from vaelab.data.dataset import derive_seed
from vaelab.data.supervised import Supervised, predicts_labels
from vaelab.errors import ConfigError, DataError, RunDirError, UserError
from vaelab.evaluation import active_units, annealed, evaluate_log_likelihood, predict, stratified_summary
from vaelab.evaluation.batches import Saved, digest, kept_batches, partials_needed, read_back, remove_partials
from vaelab.evaluation.cpvae import evaluate_cpvae, log_likelihood_over_c, over_c_summary
from vaelab.evaluation.paired import against_data_density
from vaelab.likelihoods import Likelihood
from vaelab.mcmc import simulate
from vaelab.mcmc.options import AISOptions
from vaelab.measure import as_estimable
from vaelab.models.cpvae import is_cpvae, reads_category
from vaelab.protocols import DecodedModel, GenerativeModel, HasPseudoInputs, LatentModel, Reconstructs
from vaelab.recording import RECORD, Run, build_run, load_run, load_with_weights, read_run_config, resolve_device
from vaelab.stats import mean_se
from vaelab.train.checkpoint import atomic_write_text, latest_checkpoint, load_weights
from vaelab.train.trainer import Trainer, finite_weights, fit_with_provenance, read_jsonl
from vaelab.viz import (
    save_histogram,
    save_image_grid,
    save_latent_figure,
    save_reconstructions,
    save_reliability_diagram,
)
from vaelab.viz.generations import category_images, histograms_1d
from vaelab.viz.posterior_pictures import save_posterior_pictures
from vaelab.viz.training import best_validation, epoch_rows

RUN_FILES = ("metrics.jsonl", "checkpoints", "best.safetensors", "provenance.json")  # written only by a run


def is_run_dir(path: str | Path) -> bool:
    """Whether `path` is a run directory: `config.yaml` and at least one of the run's own `RUN_FILES`, or
    `config.yaml` alone (a run stopped in its first epoch). The rule for what `overwrite` may replace."""
    path = Path(path)
    if not (path.is_dir() and (path / "config.yaml").is_file()):
        return False
    return any((path / name).exists() for name in RUN_FILES) or [p.name for p in path.iterdir()] == ["config.yaml"]


def run_dir_path(cfg: Config, run_dir: str | Path | None = None) -> Path:
    """`run_dir`, or the default `runs/<name>-<timestamp>`."""
    return Path(run_dir) if run_dir else Path("runs") / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_new_run_dir(path: Path, overwrite: bool = False) -> None:
    """Raise `RunDirError` unless a new run may be written into `path`: a new or empty directory, or with
    `overwrite` a run (`is_run_dir`) that is not the current directory or one above it. Changes nothing."""
    if path.exists() and not path.is_dir():
        raise RunDirError(f"run directory {str(path)!r} is a file, not a directory; choose another --run-dir")
    if overwrite and path.exists() and path.resolve() in (Path.cwd().resolve(), *Path.cwd().resolve().parents):
        raise RunDirError(f"--overwrite will not replace {str(path)!r}, the current directory or one above it")
    if not path.exists() or not any(path.iterdir()):
        return
    if not is_run_dir(path):
        raise RunDirError(
            f"{str(path)!r} is not empty and is not a vaelab run (config.yaml with {', '.join(RUN_FILES)}); "
            "--overwrite replaces only runs: choose a new or empty --run-dir"
        )
    if not overwrite:
        raise RunDirError(
            f"run directory {str(path)!r} already holds a run; continue it with "
            f"'vaelab train --resume {path}', choose another --run-dir, or pass --overwrite"
        )


def check_writable(path: Path, create: bool = False) -> None:
    """Raise `RunDirError` unless files can be created in the directory `path` (tried, not guessed); with
    `create`, make it first if it is missing."""
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{str(path)!r} is a file, not a directory")
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".vaelab-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise RunDirError(f"cannot write into {str(path)!r}: {err.strerror or err}") from None


@dataclass
class _NewRunDir:
    """What `_make_run_dir` did, so that a start that fails can undo exactly that."""

    path: Path
    made: Path | None  # the topmost directory created (None: `path` existed, empty)
    aside: Path | None  # where the run it replaces was moved

    def undo(self) -> None:
        """Remove what was created, and move the replaced run back."""
        if self.made is not None:
            shutil.rmtree(self.made, ignore_errors=True)
        else:
            for child in self.path.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        print(f"removed the new run directory {self.path}: it failed before its first checkpoint", file=sys.stderr)
        if self.aside is not None:
            os.rename(self.aside, self.path)
            print(f"moved the previous run back from {self.aside}", file=sys.stderr)


def _move_aside(path: Path) -> Path:
    """Rename the run in `path` to a new sibling `<name>.replaced-<timestamp>[-i]` (atomic; never merges)."""
    src, stamp = path.resolve(), time.strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        target = src.with_name(f"{src.name}.replaced-{stamp}{f'-{i}' if i else ''}")
        if not target.exists():
            os.rename(src, target)
            print(f"moved the previous run in {path} to {target}", file=sys.stderr)
            return target
    raise RunDirError(f"cannot find a free name beside {str(path)!r} to move the old run to")


def _make_run_dir(path: Path, overwrite: bool = False) -> _NewRunDir:
    check_new_run_dir(path, overwrite)
    made = next((p for p in reversed([path, *path.parents]) if not p.exists()), None)
    try:
        aside = _move_aside(path) if path.exists() and any(path.iterdir()) else None
    except OSError as err:
        raise RunDirError(f"cannot move the run in {str(path)!r} aside: {err.strerror or err}") from None
    made = path if aside is not None else made
    try:
        path.mkdir(parents=True, exist_ok=True)
        check_writable(path)
    except (OSError, RunDirError) as err:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        if aside is not None:
            os.rename(aside, path)
        if isinstance(err, RunDirError):
            raise
        raise RunDirError(f"cannot create the run directory {str(path)!r}: {err.strerror or err}") from None
    return _NewRunDir(path, made, aside)


def new_run_dir(cfg: Config, run_dir: str | Path | None, overwrite: bool = False) -> Path:
    """Create the directory for a new run (`run_dir_path`) now, refusing as `check_new_run_dir` says; with
    `overwrite` an existing run there is moved aside first. (`train` does this itself after its checks.)"""
    path = run_dir_path(cfg, run_dir)
    _make_run_dir(path, overwrite)
    return path


def resume_config(run_dir: str | Path, overrides: list[str] | None = None) -> Config:
    """A run's config with `--set` overrides applied, refused (`ConfigError`) unless `check_resume_changes`
    allows them. Writes nothing: `train(..., resume=True)` saves it once the checkpoint has loaded."""
    saved = read_run_config(run_dir)
    cfg = config_from_dict(apply_overrides(saved.to_dict(), overrides or []))
    check_resume_changes(saved, cfg)
    return cfg


def check_data(model: nn.Module, dataset, splits=("train", "valid", "test")) -> None:
    """Raise `DataError` if the dataset does not suit the model's likelihood."""
    lik = model.likelihood
    if lik.data_kind in ("binary", "gray") and dataset.value_kind != lik.data_kind:
        fix = {
            "binary": "use a binary dataset or likelihood {type: discretized_logistic}",
            "gray": "use a grayscale dataset (freyfaces) or likelihood {type: bernoulli} with binary data",
        }[lik.data_kind]
        raise DataError(
            f"dataset {dataset.name!r} holds {dataset.value_kind} values but the "
            f"{type(lik).__name__} likelihood models {lik.data_kind} data; {fix}"
        )
    for split in splits:
        data = dataset.split(split)
        lik.validate(data.targets if isinstance(data, Supervised) else data)


def train(
    cfg: Config, run_dir: str | Path, resume: bool = False, device: str | None = None, overwrite: bool = False
) -> Run:
    """Train a new run in `run_dir` (or continue it, `resume`); returns it with its best weights loaded.

    The config, the model, the dataset and its fit to the model are checked before anything is written. A new run
    directory (`check_new_run_dir`; with `overwrite` an old run there is moved aside first) that fails before its
    first checkpoint is removed again and the old run moved back. A resume may change only what
    `config.check_resume_changes` allows; the changed config is saved after the checkpoint has loaded. Under
    torchrun only rank 0 touches the run directory (module docstring)."""
    run_dir = Path(run_dir)
    rank, _ = distributed.world()
    saved = read_run_config(run_dir) if resume else None
    if resume:
        check_resume_changes(saved, cfg)
        distributed.on_rank0(lambda: check_writable(run_dir))
    else:
        distributed.on_rank0(lambda: check_new_run_dir(run_dir, overwrite))
    run = build_run(cfg, run_dir, device)
    check_data(run.model, run.dataset)
    trainer = Trainer(cfg, run_dir, run.model, run.dataset, run.device, resuming=resume)
    created = None
    if resume:
        trainer.resume()  # with no checkpoint yet, the freshly seeded model starts over as a new run would
        if rank == 0 and cfg.to_dict() != saved.to_dict():
            atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
    else:

        def make() -> _NewRunDir:
            made = _make_run_dir(run_dir, overwrite)
            atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
            return made

        created = distributed.on_rank0(make)
    if rank == 0:
        print(f"run directory: {run_dir}", file=sys.stderr)
    try:
        fit_with_provenance(trainer)  # recording this session in the run's provenance file
    except Exception:
        if created is not None and latest_checkpoint(run_dir / "checkpoints") is None:
            created.undo()  # nothing worth keeping, and it would block the corrected command
        raise
    best = run_dir / "best.safetensors"
    if best.is_file():
        load_weights(run.model, best)
    run.model.eval()
    return run


FIT_SETTINGS = "fit.yaml"
NEEDS_DATA = (
    "give the data to evaluate it on: --data DATASET (a vaelab dataset, with --split) or --data FILE.pt "
    "(a tensor [N, *event] saved by torch.save)"
)


def is_fit_run(path: str | Path) -> bool:
    """Whether `path` holds a run that `vaelab.fit` wrote (`model.json`, no `config.yaml`)."""
    path = Path(path)
    return (path / RECORD).is_file() and not (path / "config.yaml").is_file()


def run_settings(run_dir: str | Path) -> Config:
    """The settings of a run: its `config.yaml`, or for a `vaelab.fit` run its `fit.yaml` (the defaults without
    one); `RunDirError` for a directory that is neither (`read_run_config`'s errors)."""
    path = Path(run_dir)
    if not is_fit_run(path):
        return read_run_config(path)
    settings = path / FIT_SETTINGS
    return config_from_dict(yaml.safe_load(settings.read_text()) if settings.is_file() else {})


class FitData:
    """The data a `vaelab.fit` run is evaluated on, as the dataset interface `evaluate` reads (`name`,
    `split(name)`): a vaelab dataset by name (its splits), or a tensor file `[N, *event]` (one split, named by the
    file's stem); without a source, every split is a `DataError` saying how to give one (BDMC needs none). Each
    split is checked against the model: its event shape and, for a vaelab likelihood, its values."""

    def __init__(self, source: str | None, model: nn.Module, name: str = "fit") -> None:
        self.model, self.name, self.file = model, name, None
        self.dataset, self.split_names = None, None
        if source is None:
            return
        path = Path(source)
        if path.suffix in (".pt", ".pth") or path.is_file():
            if not path.is_file():
                raise DataError(f"--data {source}: no such file")
            try:
                x = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:  # noqa: BLE001 - any unreadable file is the same error to the user
                raise DataError(f"--data {source} cannot be read by torch.load: {err}") from None
            if not torch.is_tensor(x) or x.dim() < 2:
                raise DataError(f"--data {source} must hold one tensor [N, *event] (torch.save(x, path))")
            self.file, self.name, self.split_names = x.float(), path.name, (path.stem,)
        else:
            self.dataset = load_dataset(source)
            self.name = self.dataset.name

    @property
    def has_data(self) -> bool:
        """Whether a source was given (without one, `split` raises `DataError`)."""
        return self.file is not None or self.dataset is not None

    def split(self, name: str, epoch: int | None = None) -> torch.Tensor:
        """The split `name`, checked against the model."""
        if self.file is not None:
            if name != self.split_names[0]:
                raise DataError(
                    f"--data {self.name} is one split, {self.split_names[0]!r} (the file's stem), not {name!r}"
                )
            x = self.file
        elif self.dataset is not None:
            x = self.dataset.split(name)
        else:
            raise DataError(f"this run was trained by vaelab.fit on tensors; {NEEDS_DATA}")
        if tuple(x.shape[1:]) != tuple(self.model.event_shape):
            raise DataError(
                f"{self.name} {name} holds examples of shape {tuple(x.shape[1:])}, the model "
                f"{tuple(self.model.event_shape)}"
            )
        if isinstance(self.model, DecodedModel) and isinstance(self.model.likelihood, Likelihood):
            self.model.likelihood.validate(x)
        return x


def open_run(run_dir: str | Path, checkpoint: str = "best", device: str | None = None, data: str | None = None) -> Run:
    """A trained run to evaluate: a `vaelab train` run as `load_run` loads it (`data` must be None: it has its
    config's dataset), or a `vaelab.fit` run with the model `vaelab.load` rebuilds from `model.json`, its
    `fit.yaml` settings and `data` (`FitData`). A fit run whose model cannot be rebuilt in another process is a
    one-line `RunDirError` saying what to do."""
    path = Path(run_dir)
    if not is_fit_run(path):
        if data is not None:
            raise UserError(
                f"--data is for runs that vaelab.fit wrote; {str(path)!r} is evaluated on its config's dataset "
                "(change it with --split, or evaluate another run)"
            )
        return load_run(path, checkpoint, device)
    cfg = run_settings(path)
    record = json.loads((path / RECORD).read_text())
    if record.get("rebuild") is None:
        raise RunDirError(
            f"the model in {str(path)!r} cannot be rebuilt from the command line: "
            f"{record.get('why', 'nothing was recorded')}; train it with a factory another process can import "
            "(vaelab.fit(..., factory=f) or a @vaelab.model_factory function), or evaluate it in Python: "
            "vaelab.evaluate(vaelab.load(run_dir, template=model), x)"
        )
    dev = resolve_device(device or cfg.device)
    model, weights = load_with_weights(path, checkpoint=checkpoint)
    model = model.to(dev)
    dataset = FitData(data, model)
    if dataset.split_names is not None:  # a tensor file: its one split is the default
        cfg = replace(cfg, eval=replace(cfg.eval, split=dataset.split_names[0]))
    return Run(path, cfg, model, dataset, dev, weights)


def weights_used(run: Run) -> dict[str, Any] | None:
    """Which weights a result came from, for its JSON: `file` (relative to the run directory) and `epoch` (the best
    validation epoch of `best.safetensors`, a checkpoint's epoch, the last epoch for `last.safetensors`; None when
    the metrics do not say). None when the run was not loaded from a file."""
    if run.weights is None:
        return None
    file = run.weights.relative_to(run.path).as_posix()  # `weights_file` names it inside the run directory
    metrics = run.path / "metrics.jsonl"
    rows = epoch_rows(read_jsonl(metrics)) if metrics.is_file() else []
    if run.weights.name == "best.safetensors":
        best = best_validation(rows)
        epoch = best[0] if best else None
    elif run.weights.parent.name.startswith("epoch-"):
        epoch = int(run.weights.parent.name.removeprefix("epoch-"))
    else:
        epoch = rows[-1]["epoch"] if rows else None
    return {"file": file, "epoch": epoch}


def rank_device(cfg: Config, device: str | None = None, timeout: timedelta | None = None) -> str | None:
    """Under torchrun (`WORLD_SIZE` > 1): start the process group (`vaelab.distributed.start`, collectives waiting
    at most `timeout`) and return this rank's device (`device`, else the config's; on CUDA `cuda:LOCAL_RANK`). In
    one process: `device`, unchanged."""
    if distributed.environment()[1] <= 1:
        return device
    return str(distributed.start(resolve_device(device or cfg.device), timeout))


def shards_evaluation(run: Run, data) -> bool:
    """Whether `evaluate` shares the IS estimate out over the ranks for `run` on `data`: an unsupervised
    `LatentModel` whose likelihood does not read CP-VAE's category (the others are evaluated on rank 0 alone)."""
    return isinstance(run.model, LatentModel) and not isinstance(data, Supervised) and not reads_category(run.model)


def _data(run: Run, split: str, subset: int | None) -> torch.Tensor:
    x = run.dataset.split(split)
    return x[:subset] if subset else x


def data_digest(x: torch.Tensor | Supervised) -> str:
    """sha256 of the evaluated points (`vaelab.evaluation.batches.digest` of the inputs `[N, *event]`; of a labelled
    split, its inputs), written into `eval-<split>.json` and `eval-<split>-ais.json` as `data_digest`: `vaelab
    compare` pairs two runs' per-example values only when it is the same."""
    return digest(x.inputs if isinstance(x, Supervised) else x)


def evaluate(
    run: Run,
    split: str = "test",
    samples: int = 5000,
    subset: int | None = None,
    batch_size: int = 100,
    max_elements: int = 2**24,
    progress: bool = True,
    predictive_samples: int = 10_000,
    batch_seeds: bool = False,
) -> dict:
    """IS log-likelihood (k = `samples`), ELBO and active units on a split; writes `eval-<split>.json` (means with
    their spread over data and Monte Carlo errors, ESS, non-finite counts: `ISEstimate.summary`), the per-example
    values (`eval-<split>-per-example.pt`: log p^, ELBO, Monte Carlo se, ESS) and their histogram
    (`loglik-<split>.png`).
    For a mixture posterior also the stratified SIWAE evidence from the same number of draws (`siwae_*`). For a
    VIB classifier (labelled data) the IS estimate is of its evidence log p(y) = log E_r[p(y | z)] (x enters
    only through the proposal q(z | x)), and `classify` adds accuracy and calibration of the posterior
    predictive; a deterministic classifier (no posterior) gets only those.

    `batch_seeds`: seed each batch of points by its index (`evaluate_log_likelihood`'s `batch_seed`), so the
    per-point IS values are the same for any number of processes; the default, one stream through the batches, is
    how the shipped results were evaluated. Under torchrun every rank calls this: the IS estimate is shared out
    over the ranks with batch seeds (`shards_evaluation`; other runs are evaluated by rank 0 alone), rank 0 finishes
    the evaluation and writes it, and the other ranks return {}."""
    rank, world = distributed.world()
    x = _data(run, split, subset)
    if world > 1 and not shards_evaluation(run, x):
        if rank != 0:
            return {}
        world = 1  # rank 0 alone, as one process would (nothing below communicates then)
    if world > 1:
        distributed.on_rank0(lambda: check_writable(run.path))  # before the work, not after it
    else:
        check_writable(run.path)
    batch_seeds = batch_seeds or world > 1
    start = time.perf_counter()
    torch.manual_seed(run.cfg.seed + 1)
    result = {"split": split, "dataset": run.dataset.name, "data_digest": data_digest(x)}
    if isinstance(run.model, LatentModel):
        over_c = reads_category(run.model)  # CP-VAE's p(x | z, c): IS stratified over c (vaelab.evaluation.cpvae)
        # a model from elsewhere (a vaelab.fit run's, e.g. a pythae VAE): through posterior and log_joint alone
        model = run.model if over_c or isinstance(x, Supervised) else as_estimable(run.model, x)
        if over_c:
            est = log_likelihood_over_c(run.model, x, samples, batch_size, max_elements, progress)
        else:
            seed = run.cfg.seed + 1 if batch_seeds else None
            est = evaluate_log_likelihood(
                model, x, samples, batch_size, max_elements, progress, batch_seed=seed, shard=world > 1
            )
        if rank != 0:  # every rank's share was gathered; rank 0 finishes the evaluation and writes it
            return {}
        if batch_seeds:  # the draws below do not depend on which rank estimated which batch
            torch.manual_seed(derive_seed(run.cfg.seed + 1, "after IS"))
        n_active, _ = active_units(model, _data(run, split, None))
        result.update(
            {"is_samples": samples, **est.summary(), "active_units": n_active, "latent_dim": run.model.latent_dim}
        )
        bpd = -result["log_likelihood"] / (math.prod(run.model.event_shape) * math.log(2))
        result["bits_per_dim"] = bpd
        density = getattr(run.dataset, "log_density", None)  # a generated dataset's exact log p_data(x)
        if density is not None and not isinstance(x, Supervised):
            result.update(against_data_density(density(x.double()).cpu(), est.log_likelihood.double().cpu()))
        if over_c:
            result.update(over_c_summary(run.model, samples))
        else:
            result.update(stratified_summary(model, x, samples, batch_size, max_elements, progress))  # mixtures
        path = run.path / f"eval-{split}-per-example.pt"
        per_example = {"log_likelihood": est.log_likelihood, "elbo": est.elbo, "mc_se": est.mc_se, "ess": est.ess}
        torch.save(per_example, path)
        save_histogram(
            est.log_likelihood,
            run.path / f"loglik-{split}.png",
            f"{'log p(y) = log E_r[p(y|z)]' if isinstance(x, Supervised) else 'log p(x)'} per example (nats)",
            f"{run.dataset.name} {split}: IS with k={samples}, {result['n']} examples",
        )
    if isinstance(x, Supervised):
        result.update(classify(run, x, split, predictive_samples, batch_size, max_elements, progress))
    if is_cpvae(run.model):  # the joint bound (NVLB, exact over c), category use, clustering accuracy if labelled
        labels = run.dataset.labels(split)
        tau = _gumbel_temperature(run)
        result["cpvae"] = evaluate_cpvae(run.model, x, labels, batch_size, progress=progress, temperature=tau)
    result["seconds"], result["weights"] = time.perf_counter() - start, weights_used(run)
    (run.path / f"eval-{split}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _gumbel_temperature(run: Run) -> float | None:
    """The Gumbel-Softmax temperature at which a CP-VAE run's weights were selected (best.safetensors: the epoch of
    metrics.jsonl with the lowest validation loss), for `nvlb_relaxed`; None unless the run trained with the gumbel
    estimator and recorded its temperatures."""
    if run.cfg.objective.type != "cpvae" or run.cfg.objective.options.get("estimator", "exact") != "gumbel":
        return None
    rows = [m for m in read_jsonl(run.path / "metrics.jsonl") if "temperature" in m and m.get("valid_loss") is not None]
    best = min(rows, key=lambda m: m["valid_loss"], default=None)  # the first best, as the trainer keeps it
    return float(best["temperature"]) if best else None


def _timing(seconds: float, resumed: Saved) -> dict:
    """A continued evaluation's times: `seconds` this call's, `seconds_total` with the recorded time of the
    `batches_resumed` it read back, of which `batches_untimed` recorded none (`vaelab.evaluation.batches.read_back`)."""
    return {
        "seconds": seconds,
        "seconds_total": seconds + resumed.seconds,
        "batches_resumed": resumed.batches,
        "batches_untimed": resumed.untimed,
    }


def evaluate_ais(
    run: Run,
    options: AISOptions,
    split: str = "test",
    subset: int | None = None,
    batch_size: int = 100,
    progress: bool = True,
    deadline: float | None = None,
) -> dict:
    """log p(x) by AIS (`vaelab.mcmc.ais` with `options`, e.g. a `vaelab.mcmc.options.PRESETS` entry) on a split,
    `batch_size` points annealed together unless `options.batch_size` is set, `options.replicates` independent runs
    per point (`ais_replicates`). Writes `eval-<split>-ais.json` (the mean over points of the per-point estimates,
    each the mean over replicates of log (1/C) sum_c w_c; its spread over data and its Monte Carlo se, from the
    replicates when R > 1, else the delta method: `ReplicatedAIS.summary`; ESS, acceptance, time) and the per-example
    estimates, their replicate se and the log-weights `[R, C, B]` (`eval-<split>-ais-per-example.pt`) beside the IS
    result `eval-<split>.json`, whose estimate is copied in when it covers the same examples.

    Batch j of points runs with seed `derive_seed(seed, j)`, `seed` the options' or else the config's seed + 2
    (`seed_used` in the JSON; `vaelab.evaluation.annealed`), so the per-point values are the same however the
    batches are shared out and whether or not the evaluation was stopped. Each batch's result is kept in
    `eval-<split>-ais-partial/` as it is done (atomically): the same call after a stop continues from them (other
    settings are refused with a `ConfigError`), and the directory is removed once the result is written; with
    `deadline` (a `time.monotonic()` reading) it stops with `OutOfTime` rather than start a batch that would end
    after it, judged from the batches' recorded times. Under
    torchrun every rank calls this: the batches are shared out over the ranks, rank 0 writes the result, and the
    other ranks return {}."""
    distributed.on_rank0(lambda: check_writable(run.path))  # rank 0 alone under torchrun, its error on every rank
    x = _data(run, split, subset)
    if not torch.is_tensor(x):
        raise DataError("AIS estimates log p(x) of an unsupervised model; this run's data are labelled")
    options = replace(options, batch_size=options.batch_size or batch_size)
    seed = run.cfg.seed + 2 if options.seed is None else options.seed
    partials = run.path / f"eval-{split}-ais-partial"
    resumed = read_back(partials, below=kept_batches(x.shape[0], options.batch_size))
    start = time.perf_counter()
    replicated = annealed.evaluate_ais(
        run.model,
        x,
        replace(options, seed=seed),
        shard=distributed.world()[1] > 1,
        partials=partials,
        device=run.device,
        progress=progress,
        deadline=deadline,
    )
    if replicated is None:  # another rank's share was gathered on rank 0, which writes the result
        return {}
    est = replicated.result  # every replicate's chains
    seconds = time.perf_counter() - start
    result = {"split": split, "dataset": run.dataset.name, "data_digest": data_digest(x), "method": "ais"}
    result.update({**asdict(options), "seed_used": seed})
    result.update(replicated.summary())
    result.update(
        {
            "bits_per_dim": -result["log_likelihood"] / (math.prod(run.model.event_shape) * math.log(2)),
            "per_chain_bound": float(est.per_chain_bound.mean()),  # mean_c log w_c: the single-chain bound
            "log_weight_se_mean": float(est.log_weight_se.mean()),  # Monte Carlo se of one point's estimate
            "ess_min": float(est.ess.min()),
            "acceptance_last": float(est.acceptance[-1]),
            "step_size_last": float(est.mean_step_size[-1]),
            "gradient_evaluations": options.gradient_evaluations(result["n"]),
            **_timing(seconds, resumed),
            "weights": weights_used(run),
        }
    )
    is_path = run.path / f"eval-{split}.json"
    is_result = json.loads(is_path.read_text()) if is_path.is_file() else {}
    if is_result.get("n") == result["n"] and "log_likelihood" in is_result:  # same split, same first n examples
        result["is_log_likelihood"], result["is_samples"] = is_result["log_likelihood"], is_result.get("is_samples")
    result["partials_kept"] = partials_needed(partials, x.shape[0], options.batch_size)  # by a longer evaluation
    (run.path / f"eval-{split}-ais.json").write_text(json.dumps(result, indent=2) + "\n")
    per_example = {
        "log_likelihood": replicated.log_likelihood.cpu(),
        "replicate_se": replicated.replicate_se.cpu(),
        "log_weights": replicated.log_weights.cpu(),
    }
    torch.save(per_example, run.path / f"eval-{split}-ais-per-example.pt")
    # the result is written: the batches are no longer needed, unless a longer evaluation's are among them
    result["partials_kept"] = not remove_partials(partials, x.shape[0], options.batch_size)
    return result


def evaluate_bdmc(
    run: Run, options: AISOptions, n: int = 100, progress: bool = True, deadline: float | None = None
) -> dict:
    """BDMC (`vaelab.mcmc.bdmc`): n points simulated from the model (z* ~ p(z), x ~ p(x | z*)), forward AIS with
    `options` (a stochastic lower bound of log p(x)) and reverse AIS from z* (an upper bound). Their gap, upper
    minus lower, bounds the error of forward AIS with these settings on data like the simulated ones (not
    necessarily on the real data). Writes `eval-bdmc.json`: the bounds' means over points, the gap (mean and se
    over points), the single-chain gap, the options, time; and the per-point `lower`, `upper`, `gap`
    (`eval-bdmc-per-example.pt`). Batches of 100 points (or `options.batch_size`), each
    seeded by its index from the options' seed or else the config's seed + 3, shared out under torchrun and kept
    in `eval-bdmc-partial/` until the result is written, and stopped by `deadline`, as `evaluate_ais`; rank 0
    simulates the points."""
    distributed.on_rank0(lambda: check_writable(run.path))  # rank 0 alone under torchrun, its error on every rank
    if n < 1:
        raise DataError(f"BDMC needs at least one simulated point, got --subset {n}")
    if options.replicates != 1:
        raise ConfigError("BDMC runs one forward and one reverse AIS per point: drop replicates= (the gap bounds it)")
    seed = run.cfg.seed + 3 if options.seed is None else options.seed
    options = replace(options, batch_size=options.batch_size or 100)
    torch.manual_seed(run.cfg.seed + 3)
    start = time.perf_counter()
    x, z_star = distributed.broadcast_object(tuple(t.cpu() for t in simulate(run.model, n)))  # rank 0's points
    partials = run.path / "eval-bdmc-partial"
    resumed = read_back(partials, below=kept_batches(n, options.batch_size))
    world = distributed.world()[1]
    r = annealed.evaluate_bdmc(
        run.model,
        x,
        z_star,
        replace(options, seed=seed),
        shard=world > 1,
        partials=partials,
        device=run.device,
        progress=progress,
        deadline=deadline,
    )
    if r is None:
        return {}
    gap = r.gap
    result = {"method": "bdmc", "data": "simulated from the model", "dataset": run.dataset.name, **asdict(options)}
    result["seed_used"] = seed
    result.update(r.summary())
    result.update(
        {
            "gap_se": mean_se(gap)[1],
            "gap_max": float(gap.max()),
            "acceptance_mean": float(r.forward.acceptance.mean()),
            "gradient_evaluations": 2 * options.gradient_evaluations(n),
            **_timing(time.perf_counter() - start, resumed),
            "weights": weights_used(run),
        }
    )
    result["partials_kept"] = partials_needed(partials, n, options.batch_size)
    (run.path / "eval-bdmc.json").write_text(json.dumps(result, indent=2) + "\n")
    per_example = {"lower": r.lower, "upper": r.upper, "gap": gap}
    torch.save(per_example, run.path / "eval-bdmc-per-example.pt")
    result["partials_kept"] = not remove_partials(partials, n, options.batch_size)
    return result


def classify(
    run: Run,
    data: Supervised,
    split: str = "test",
    samples: int = 10_000,
    batch_size: int = 100,
    max_elements: int = 2**24,
    progress: bool = True,
) -> dict:
    """Accuracy and both ECEs of the posterior predictive p(y | x) from `samples` draws of q(z | x) per input
    (SIWAE app. B.1); writes the probabilities (`predictions-<split>.pt`) and `reliability-<split>.png`."""
    pred = predict(run.model, data, samples, batch_size, max_elements, progress)
    torch.save({"probs": pred.probs, "targets": pred.targets}, run.path / f"predictions-{split}.pt")
    summary = pred.summary()
    draws = f"{samples} draws of q(z|x)" if isinstance(run.model, LatentModel) else "deterministic"
    title = f"{run.dataset.name} {split}: accuracy {summary['accuracy']:.4f} ({summary['n']} examples, {draws})"
    save_reliability_diagram(pred.probs, pred.targets, run.path / f"reliability-{split}.png", title)
    return {"predictive_samples": samples if isinstance(run.model, LatentModel) else 0, **summary}


def sample(
    run: Run,
    n: int = 100,
    out: Path | None = None,
    seed: int = 0,
    split: str = "test",
    cluster: int | None = None,
    categories: str = "posterior",
) -> list[Path]:
    """Write `samples.png` (n draws from the model), `reconstructions.png` (50 seeded random images of
    `split` above their reconstructions; for a `vaelab.fit` run only when given data, `open_run`) and, for a
    VampPrior, `pseudo_inputs.png` (the first 100) into `out` (default: the run directory). For a classifier:
    `latent-<split>-<i>.png` (SIWAE Fig. 3) for 4 seeded random inputs of `split` when it has a 2-D latent, else
    nothing. A CP-VAE draws c from q(c) (`categories`
    "posterior") or uniformly ("uniform") and adds `clusters.png` (a row per category), or with `cluster` k writes
    `samples-cluster<k>.png`; scalar data get `samples-histogram.png` instead (`vaelab.viz.generations`), 2-D data a
    scatter plot of data and samples (`samples.png`). Image VAEs also get `modes-<split>.png` for a mixture posterior
    (SIWAE Fig. C.6) and `posterior-<split>.png` for a 2-D latent (`vaelab.viz.posterior_pictures`)."""
    if not finite_weights(run.model):
        raise RunDirError(
            f"the weights of {run.path} hold NaN or Inf values (the run diverged): nothing to draw; retrain it with a "
            "lower train.lr or a train.grad_clip"
        )
    out = Path(out) if out else run.path
    check_writable(out, create=True)
    torch.manual_seed(seed)
    if predicts_labels(run.model):
        return latent_pictures(run, out, seed, split)
    if not isinstance(run.model, GenerativeModel):
        raise UserError(f"the model of {run.path} cannot draw samples: it has no prior and p(x | z) apart")
    if tuple(run.model.event_shape) == (1,):  # scalar data (CP-VAE's toy): histograms, not image grids
        return [histograms_1d(run, n, out, seed, cluster)]
    if tuple(run.model.event_shape) == (2,):  # 2-D points (SIWAE's toy): data and samples as scatter plots
        from vaelab.viz.posterior2d import save_point_clouds

        clouds = {f"{split} data": run.dataset.split(split)[:n], "model samples": run.model.sample(n, mean=False)}
        return [save_point_clouds(clouds, out / "samples.png", f"{run.dataset.name}: x ~ p(x)")]
    name, extra = "samples.png", []
    if cluster is not None or is_cpvae(run.model):
        samples, name, extra = category_images(run, n, out, seed, cluster, categories)
    else:
        samples = run.model.sample(n).cpu()
    paths = [save_image_grid(samples, out / name)]
    if has_data(run):  # a vaelab.fit run given no --data draws its samples only
        data = run.dataset.split(split)
        pick = torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(seed))[:50]
        x = data[pick].to(run.device)
        if isinstance(run.model, Reconstructs):
            paths.append(save_reconstructions(x.cpu(), run.model.reconstruct(x).cpu(), out / "reconstructions.png"))
    paths += extra
    prior = run.model.prior
    if isinstance(prior, HasPseudoInputs) and prior.pseudo_inputs is not None:  # VampPrior: the learned inputs
        paths.append(save_image_grid(prior.pseudo_inputs.detach()[:100].cpu(), out / "pseudo_inputs.png"))
    if has_data(run):
        paths += save_posterior_pictures(run.model, x, out, split)  # mixture modes (SIWAE Fig. C.6); a 2-D q
    return paths


def has_data(run: Run) -> bool:
    """Whether the run has data to read: a `vaelab train` run always; a `vaelab.fit` run when given `--data`."""
    return not isinstance(run.dataset, FitData) or run.dataset.has_data


def latent_pictures(run: Run, out: Path, seed: int = 0, split: str = "test", count: int = 4) -> list[Path]:
    """SIWAE Fig. 3 for `count` seeded random inputs of `split`: draws of q(z|x) over the decoder's classes."""
    if not isinstance(run.model, LatentModel) or run.model.latent_dim != 2:
        return []
    data = run.dataset.split(split)
    pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:count].tolist()
    return [
        save_latent_figure(run.model, data.inputs[i], out / f"latent-{split}-{i}.png", int(data.targets[i]))
        for i in pick
    ]
