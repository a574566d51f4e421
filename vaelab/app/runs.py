"""Run directories: create, train, evaluate and sample; the application layer under the commands.

A run is loaded (`Run`, `build_run`, `load_run`) by `vaelab.recording`, which `vaelab.load` shares.

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
from pathlib import Path

import torch
from torch import nn

from vaelab import distributed
from vaelab.config import Config, apply_overrides, check_resume_changes, config_from_dict
from vaelab.data.supervised import Supervised, predicts_labels
from vaelab.errors import ConfigError, DataError, RunDirError
from vaelab.evaluation import active_units, evaluate_log_likelihood, predict, stratified_summary
from vaelab.evaluation.cpvae import evaluate_cpvae, log_likelihood_over_c, over_c_summary
from vaelab.mcmc import ais_replicates, bdmc, simulate
from vaelab.mcmc.options import AISOptions
from vaelab.models.cpvae import is_cpvae, reads_category
from vaelab.protocols import LatentModel
from vaelab.recording import Run, build_run, read_run_config
from vaelab.train.checkpoint import atomic_write_text, latest_checkpoint, load_weights
from vaelab.train.trainer import Trainer, finite_weights, fit_with_provenance
from vaelab.viz import (
    save_histogram,
    save_image_grid,
    save_latent_figure,
    save_reconstructions,
    save_reliability_diagram,
)
from vaelab.viz.generations import category_images, histograms_1d
from vaelab.viz.posterior_pictures import save_posterior_pictures

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


def _data(run: Run, split: str, subset: int | None) -> torch.Tensor:
    x = run.dataset.split(split)
    return x[:subset] if subset else x


def evaluate(
    run: Run,
    split: str = "test",
    samples: int = 5000,
    subset: int | None = None,
    batch_size: int = 100,
    max_elements: int = 2**24,
    progress: bool = True,
    predictive_samples: int = 10_000,
) -> dict:
    """IS log-likelihood (k = `samples`), ELBO and active units on a split; writes `eval-<split>.json` (means with
    their spread over data and Monte Carlo errors, ESS, non-finite counts: `ISEstimate.summary`), the per-example
    values (`eval-<split>-per-example.pt`: log p^, ELBO, Monte Carlo se, ESS) and their histogram
    (`loglik-<split>.png`).
    For a mixture posterior also the stratified SIWAE evidence from the same number of draws (`siwae_*`). For a
    VIB classifier (labelled data) the IS estimate is of its evidence log p(y) = log E_r[p(y | z)] (x enters
    only through the proposal q(z | x)), and `classify` adds accuracy and calibration of the posterior
    predictive; a deterministic classifier (no posterior) gets only those."""
    check_writable(run.path)  # before the work, not after it
    x = _data(run, split, subset)
    start = time.perf_counter()
    torch.manual_seed(run.cfg.seed + 1)
    result = {"split": split, "dataset": run.dataset.name}
    if isinstance(run.model, LatentModel):
        over_c = reads_category(run.model)  # CP-VAE's p(x | z, c): IS stratified over c (vaelab.evaluation.cpvae)
        estimate = log_likelihood_over_c if over_c else evaluate_log_likelihood
        est = estimate(run.model, x, samples, batch_size, max_elements, progress)
        n_active, _ = active_units(run.model, _data(run, split, None))
        result.update(
            {"is_samples": samples, **est.summary(), "active_units": n_active, "latent_dim": run.model.latent_dim}
        )
        bpd = -result["log_likelihood"] / (math.prod(run.model.event_shape) * math.log(2))
        result["bits_per_dim"] = bpd
        if over_c:
            result.update(over_c_summary(run.model, samples))
        else:
            result.update(stratified_summary(run.model, x, samples, batch_size, max_elements, progress))  # mixtures
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
        result["cpvae"] = evaluate_cpvae(run.model, x, labels, batch_size, progress=progress)
    result["seconds"] = time.perf_counter() - start
    (run.path / f"eval-{split}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def evaluate_ais(
    run: Run,
    options: AISOptions,
    split: str = "test",
    subset: int | None = None,
    batch_size: int = 100,
    progress: bool = True,
) -> dict:
    """log p(x) by AIS (`vaelab.mcmc.ais` with `options`, e.g. a `vaelab.mcmc.options.PRESETS` entry) on a split,
    `batch_size` points annealed together unless `options.batch_size` is set, `options.replicates` independent runs
    per point (`ais_replicates`). Writes `eval-<split>-ais.json` (the mean over points of the per-point estimates,
    each the mean over replicates of log (1/C) sum_c w_c; its spread over data and its Monte Carlo se, from the
    replicates when R > 1, else the delta method: `ReplicatedAIS.summary`; ESS, acceptance, time) and the per-example
    estimates, their replicate se and the log-weights `[R, C, B]` (`eval-<split>-ais-per-example.pt`) beside the IS
    result `eval-<split>.json`, whose estimate is copied in when it covers the same examples."""
    check_writable(run.path)
    x = _data(run, split, subset)
    if not torch.is_tensor(x):
        raise DataError("AIS estimates log p(x) of an unsupervised model; this run's data are labelled")
    options = replace(options, batch_size=options.batch_size or batch_size)
    torch.manual_seed(run.cfg.seed + 2)
    start = time.perf_counter()
    replicated = ais_replicates(run.model, x.to(run.device), options, progress=progress)
    est = replicated.result  # every replicate's chains
    seconds = time.perf_counter() - start
    result = {"split": split, "dataset": run.dataset.name, "method": "ais", **asdict(options)}
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
            "seconds": seconds,
        }
    )
    is_path = run.path / f"eval-{split}.json"
    is_result = json.loads(is_path.read_text()) if is_path.is_file() else {}
    if is_result.get("n") == result["n"] and "log_likelihood" in is_result:  # same split, same first n examples
        result["is_log_likelihood"], result["is_samples"] = is_result["log_likelihood"], is_result.get("is_samples")
    (run.path / f"eval-{split}-ais.json").write_text(json.dumps(result, indent=2) + "\n")
    per_example = {
        "log_likelihood": replicated.log_likelihood.cpu(),
        "replicate_se": replicated.replicate_se.cpu(),
        "log_weights": replicated.log_weights.cpu(),
    }
    torch.save(per_example, run.path / f"eval-{split}-ais-per-example.pt")
    return result


def evaluate_bdmc(run: Run, options: AISOptions, n: int = 100, progress: bool = True) -> dict:
    """BDMC (`vaelab.mcmc.bdmc`): n points simulated from the model (z* ~ p(z), x ~ p(x | z*)), forward AIS with
    `options` (a stochastic lower bound of log p(x)) and reverse AIS from z* (an upper bound). Their gap, upper
    minus lower, bounds the error of forward AIS with these settings on data like the simulated ones (not
    necessarily on the real data). Writes `eval-bdmc.json`: the bounds' means over points, the gap (mean and se
    over points), the single-chain gap, the options, time."""
    check_writable(run.path)
    if n < 1:
        raise DataError(f"BDMC needs at least one simulated point, got --subset {n}")
    if options.replicates != 1:
        raise ConfigError("BDMC runs one forward and one reverse AIS per point: drop replicates= (the gap bounds it)")
    torch.manual_seed(run.cfg.seed + 3)
    start = time.perf_counter()
    x, z_star = simulate(run.model, n)
    r = bdmc(run.model, x, z_star, replace(options, batch_size=options.batch_size or 100), progress=progress)
    gap = r.gap
    result = {"method": "bdmc", "data": "simulated from the model", "dataset": run.dataset.name, **asdict(options)}
    result.update(r.summary())
    result.update(
        {
            "gap_se": float(gap.std() / math.sqrt(n)) if n > 1 else math.nan,
            "gap_max": float(gap.max()),
            "acceptance_mean": float(r.forward.acceptance.mean()),
            "gradient_evaluations": 2 * options.gradient_evaluations(n),
            "seconds": time.perf_counter() - start,
        }
    )
    (run.path / "eval-bdmc.json").write_text(json.dumps(result, indent=2) + "\n")
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
    `split` above their reconstructions) and, for a VampPrior, `pseudo_inputs.png` (the first 100) into
    `out` (default: the run directory). For a classifier: `latent-<split>-<i>.png` (SIWAE Fig. 3) for 4 seeded
    random inputs of `split` when it has a 2-D latent, else nothing. A CP-VAE draws c from q(c) (`categories`
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
    data = run.dataset.split(split)
    pick = torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(seed))[:50]
    x = data[pick].to(run.device)
    recon = run.model.reconstruct(x).cpu()
    paths = [
        save_image_grid(samples, out / name),
        save_reconstructions(x.cpu(), recon, out / "reconstructions.png"),
        *extra,
    ]
    pseudo_inputs = getattr(run.model.prior, "pseudo_inputs", None)
    if pseudo_inputs is not None:  # VampPrior: what the learned pseudo-inputs look like
        paths.append(save_image_grid(pseudo_inputs.detach()[:100].cpu(), out / "pseudo_inputs.png"))
    paths += save_posterior_pictures(run.model, x, out, split)  # mixture modes (SIWAE Fig. C.6); a 2-D latent's q
    return paths


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
