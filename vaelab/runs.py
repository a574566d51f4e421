"""Run directories: create, train, evaluate and sample, shared by the CLI and by Python users.

A run directory holds `config.yaml` (the resolved config), `metrics.jsonl` (one line per epoch),
`checkpoints/` (atomic, resumable), `best.safetensors` (the best validation weights), `eval-<split>.json`
and PNG grids.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch import nn

from vaelab.build import build_model
from vaelab.config import Config, config_from_dict
from vaelab.data import load_dataset
from vaelab.errors import DataError, RunDirError
from vaelab.evaluation import active_units, evaluate_log_likelihood
from vaelab.train import Trainer, latest_checkpoint
from vaelab.train.checkpoint import load_weights
from vaelab.viz import save_histogram, save_image_grid, save_reconstructions


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def new_run_dir(cfg: Config, run_dir: str | Path | None, overwrite: bool = False) -> Path:
    """The directory for a new run: `run_dir`, or `runs/<name>-<timestamp>`. Refuses to write into an
    existing non-empty directory unless `overwrite`."""
    path = Path(run_dir) if run_dir else Path("runs") / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise RunDirError(
                f"run directory {str(path)!r} already holds a run; continue it with "
                f"'vaelab train --resume {path}', choose another --run-dir, or pass --overwrite"
            )
        import shutil

        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def read_run_config(run_dir: str | Path) -> Config:
    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirError(f"run directory {str(path)!r} does not exist; give the directory 'vaelab train' wrote")
    if not (path / "config.yaml").is_file():
        raise RunDirError(f"{str(path)!r} is not a vaelab run directory (no config.yaml in it)")
    return config_from_dict(yaml.safe_load((path / "config.yaml").read_text()))


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
        lik.validate(dataset.split(split))


@dataclass
class Run:
    """A trained (or training) run loaded from disk."""

    path: Path
    cfg: Config
    model: nn.Module
    dataset: object
    device: torch.device


def build_run(cfg: Config, path: Path, device: str | None = None) -> Run:
    """Seed, load the dataset and build the model (deterministic initialisation from `cfg.seed`)."""
    torch.manual_seed(cfg.seed)
    dev = resolve_device(device or cfg.device)
    dataset = load_dataset(cfg.data.name, path=cfg.data.path, seed=cfg.data.seed)
    train_data = dataset.split("train")[: cfg.data.subset] if cfg.data.subset else dataset.split("train")
    model = build_model(cfg.model, dataset.event_shape, train_data=train_data).to(dev)
    return Run(path, cfg, model, dataset, dev)


def load_run(run_dir: str | Path, checkpoint: str = "best", device: str | None = None) -> Run:
    """Load a run's model with its `best` validation weights (falling back to the latest checkpoint) or
    its `last` checkpoint."""
    cfg = read_run_config(run_dir)
    run = build_run(cfg, Path(run_dir), device)
    best = run.path / "best.safetensors"
    last = latest_checkpoint(run.path / "checkpoints")
    if checkpoint == "best" and best.is_file():
        load_weights(run.model, best)
    elif last is not None:
        load_weights(run.model, last / "model.safetensors")
    else:
        raise RunDirError(f"run {str(run.path)!r} has no saved weights yet; train it first")
    run.model.eval()
    return run


def train(cfg: Config, run_dir: Path, resume: bool = False, device: str | None = None) -> Run:
    """Train (or continue) the run in `run_dir`; returns it with its best weights loaded."""
    if not resume:
        (run_dir / "config.yaml").write_text(cfg.to_yaml())
    run = build_run(cfg, run_dir, device)
    check_data(run.model, run.dataset)
    trainer = Trainer(cfg, run_dir, run.model, run.dataset, run.device)
    if resume:
        trainer.resume()  # with no checkpoint yet, the freshly seeded model starts over as a new run would
    trainer.fit()
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
) -> dict:
    """IS log-likelihood (k = `samples`), ELBO and active units on a split; writes `eval-<split>.json`,
    the per-example values (`eval-<split>-per-example.pt`) and their histogram (`loglik-<split>.png`)."""
    x = _data(run, split, subset)
    start = time.perf_counter()
    torch.manual_seed(run.cfg.seed + 1)
    est = evaluate_log_likelihood(run.model, x, samples, batch_size, max_elements, progress)
    n_active, _ = active_units(run.model, _data(run, split, None))
    result = {
        "split": split,
        "dataset": run.dataset.name,
        "is_samples": samples,
        **est.summary(),
        "active_units": n_active,
        "latent_dim": run.model.latent_dim,
        "seconds": time.perf_counter() - start,
    }
    bpd = -result["log_likelihood"] / (math.prod(run.model.event_shape) * math.log(2))
    result["bits_per_dim"] = bpd
    (run.path / f"eval-{split}.json").write_text(json.dumps(result, indent=2) + "\n")
    torch.save({"log_likelihood": est.log_likelihood, "elbo": est.elbo}, run.path / f"eval-{split}-per-example.pt")
    save_histogram(
        est.log_likelihood,
        run.path / f"loglik-{split}.png",
        "log p(x) per example (nats)",
        f"{run.dataset.name} {split}: IS with k={samples}, {result['n']} examples",
    )
    return result


def sample(run: Run, n: int = 100, out: Path | None = None, seed: int = 0, split: str = "test") -> list[Path]:
    """Write `samples.png` (n draws from the model), `reconstructions.png` (50 seeded random images of
    `split` above their reconstructions) and, for a VampPrior, `pseudo_inputs.png` (the first 100) into
    `out` (default: the run directory)."""
    out = Path(out) if out else run.path
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    samples = run.model.sample(n).cpu()
    data = run.dataset.split(split)
    pick = torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(seed))[:50]
    x = data[pick].to(run.device)
    recon = run.model.reconstruct(x).cpu()
    paths = [
        save_image_grid(samples, out / "samples.png"),
        save_reconstructions(x.cpu(), recon, out / "reconstructions.png"),
    ]
    pseudo_inputs = getattr(run.model.prior, "pseudo_inputs", None)
    if pseudo_inputs is not None:  # VampPrior: what the learned pseudo-inputs look like
        paths.append(save_image_grid(pseudo_inputs.detach()[:100].cpu(), out / "pseudo_inputs.png"))
    return paths
