"""`vaelab.fit`: train a model built in Python with the CLI's trainer (`vaelab.train.Trainer`: checkpoints, resume,
non-finite step detection, progress bars, `metrics.jsonl`), on tensors, a torch `Dataset` or a `DataLoader`.

Under torchrun (`WORLD_SIZE` > 1) `fit` trains as `vaelab train` does there (`vaelab.distributed`): it starts the
process group if none runs, every rank trains the model wrapped in DistributedDataParallel on its shard of each
epoch (the same number of steps everywhere), with its own latent draws and the validation bound all-reduced, and
rank 0 alone checks and writes the run directory (its default name is rank 0's)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from vaelab import distributed
from vaelab.config import ObjectiveConfig, TrainConfig, config_from_dict
from vaelab.errors import ConfigError, RunDirError
from vaelab.likelihoods import Likelihood
from vaelab.objectives import Objective
from vaelab.protocols import DecodedModel

#: Data `fit` takes: a tensor `[N, *event]`, a torch Dataset of tensors or (x, y, ...) tuples, or a DataLoader.
Data = Tensor | TorchDataset | DataLoader


def as_tensor(data: Data, what: str = "data") -> Tensor:
    """`data` as one float tensor `[N, *event]`: a DataLoader is read once (its order and batch size are not used:
    the trainer shuffles each epoch from the seed), a Dataset item by item; of (x, y) items x is kept."""

    def inputs(item: Any) -> Tensor:
        return item[0] if isinstance(item, (tuple, list)) else item

    if isinstance(data, Tensor):
        x = data
    elif isinstance(data, DataLoader):
        x = torch.cat([torch.as_tensor(inputs(batch)) for batch in data])
    elif isinstance(data, TorchDataset):
        x = torch.stack([torch.as_tensor(inputs(data[i])) for i in range(len(data))])
    else:
        raise ConfigError(f"{what} must be a tensor, a torch Dataset or a DataLoader, not {type(data).__name__}")
    return x.float()


class TensorData:
    """The dataset interface the trainer reads (`split(name, epoch)`, `event_shape`, `name`) over tensors
    `[N, *event]`; without `valid`, the training data stand in for it (best weights by the training bound).

    >>> import torch
    >>> ds = TensorData(torch.zeros(10, 1, 28, 28))
    >>> ds.event_shape, ds.split("valid").shape
    ((1, 28, 28), torch.Size([10, 1, 28, 28]))
    """

    def __init__(self, train: Data, valid: Data | None = None, name: str = "tensors") -> None:
        self.name = name
        self._splits = {"train": as_tensor(train, "train")}
        self._splits["valid"] = self._splits["train"] if valid is None else as_tensor(valid, "valid")
        self.event_shape = tuple(self._splits["train"].shape[1:])
        if tuple(self._splits["valid"].shape[1:]) != self.event_shape:
            raise ConfigError(f"valid examples are {tuple(self._splits['valid'].shape[1:])}, train {self.event_shape}")

    def split(self, name: str, epoch: int | None = None) -> Tensor:
        if name not in self._splits:
            raise ConfigError(f"TensorData has splits train and valid, not {name!r}")
        return self._splits[name]


#: `fit`'s keyword options beyond its own arguments: keys of `TrainConfig` and these of `ObjectiveConfig`.
OBJECTIVE_OPTIONS = ("beta", "warmup_epochs", "entropy_annealing_epochs")


def fit_config(
    objective: str | dict | Objective,
    epochs: int,
    batch_size: int,
    lr: float,
    optimizer: str,
    seed: int,
    progress: bool,
    **train_options: Any,
):
    """The `Config` `fit` trains with (checked as a config file is: ranges, choices, unknown keys)."""
    train_keys = set(TrainConfig.__dataclass_fields__)
    unknown = [k for k in train_options if k not in train_keys and k not in OBJECTIVE_OPTIONS]
    if unknown:
        valid = ", ".join(sorted(train_keys - {"epochs", "lr", "optimizer", "progress"}) + list(OBJECTIVE_OPTIONS))
        raise ConfigError(f"fit got an unknown option {unknown[0]!r}; valid options: {valid}")
    section: dict[str, Any] = {k: v for k, v in train_options.items() if k in OBJECTIVE_OPTIONS}
    if isinstance(objective, (str, dict)):
        spec = {"type": objective} if isinstance(objective, str) else dict(objective)
        section.update(type=spec.pop("type", ObjectiveConfig.type), options=spec)
    elif isinstance(objective, Objective):
        section["type"] = objective.name  # declared by Objective ("objective" unless a subclass names itself)
    else:
        raise ConfigError(f"objective must be a name (elbo, iwae, ...) or an Objective, not {objective!r}")
    train = {k: v for k, v in train_options.items() if k in train_keys}
    train.update(epochs=epochs, lr=lr, optimizer=optimizer, progress=progress)
    data = {"batch_size": batch_size, "eval_batch_size": max(batch_size, 500)}
    return config_from_dict({"name": "fit", "seed": seed, "data": data, "objective": section, "train": train})


def _device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return torch.device("cpu") if p is None else p.device


def fit(
    model: nn.Module,
    objective: str | dict | Objective,
    train: Data,
    valid: Data | None = None,
    *,
    epochs: int,
    batch_size: int = 100,
    lr: float = 5e-4,
    run_dir: str | Path | None = None,
    optimizer: str = "adam",
    seed: int = 0,
    progress: bool = True,
    resume: bool = False,
    factory: Callable[..., nn.Module] | None = None,
    **train_options: Any,
) -> nn.Module:
    """Train `model` (on its own device) by maximising `objective` on `train` `[N, *event]`, selecting the best
    weights on `valid` (default: the training data), with the CLI's trainer; returns `model` with its best weights
    loaded and `model.run_dir` set.

    - `objective`: a name ("elbo", "iwae", ...), a section {"type": "iwae", "samples": 5}, or an `Objective`.
    - `train`, `valid`: tensors, torch Datasets (of x or (x, y): x is taken) or DataLoaders, read into memory once.
    - `run_dir`: where checkpoints, `best.safetensors`, `metrics.jsonl` and `model.json` go (default
      `runs/fit-<timestamp>`); it must be new or empty unless `resume` (continue from its latest checkpoint).
    - `seed`: the data order of each epoch and (seeding torch's global RNG now) the latent draws.
    - `factory`: how `vaelab.load` rebuilds the model in a fresh process (`vaelab.recording`): an importable
      function (or `functools.partial` of one with JSON arguments) returning a model like this one; not needed
      for a model made by a `@vaelab.model_factory` function.
    - `train_options`: other `train` config keys (early_stopping, grad_clip, weight_decay, lr_schedule,
      checkpoint_every, validate_every, max_nonfinite_steps, ...) and beta, warmup_epochs, entropy_annealing_epochs.

    Under torchrun (module docstring) call it on every rank with the same arguments: `batch_size` is then the batch
    of one rank (the effective batch is world size x `batch_size`, `lr` is used as it is), and a model on CUDA is
    moved to this rank's GPU, `cuda:LOCAL_RANK`.

    >>> import torch, vaelab
    >>> from torch import nn
    >>> x = vaelab.load_dataset("mnist_static").split("train")[:200]
    >>> model = vaelab.VAE(encoder=nn.Flatten(), posterior="diagonal_gaussian", prior="standard_normal",
    ...                    decoder=nn.Linear(2, 784), likelihood="bernoulli", latent_dim=2, event_shape=(1, 28, 28))
    >>> import tempfile; run = tempfile.mkdtemp()
    >>> model = vaelab.fit(model, "elbo", x, epochs=1, run_dir=run, progress=False)
    >>> str(model.run_dir) == run
    True
    """
    from vaelab.recording import write_record  # after the model is known to train
    from vaelab.train.checkpoint import latest_checkpoint, load_weights
    from vaelab.train.trainer import Trainer, fit_with_provenance

    cfg = fit_config(objective, epochs, batch_size, lr, optimizer, seed, progress, **train_options)
    device = _device(model)
    if distributed.environment()[1] > 1 and distributed.world()[1] == 1:  # under torchrun: as `vaelab train` does
        device = distributed.start(device)  # the process group (unless one runs), and on CUDA cuda:LOCAL_RANK
        model.to(device)
    path = Path(run_dir) if run_dir else Path("runs") / f"fit-{time.strftime('%Y%m%d-%H%M%S')}"
    path = Path(distributed.broadcast_object(str(path)))  # under torchrun: rank 0's timestamp, one run directory

    def check_run_dir() -> None:
        if path.exists() and not path.is_dir():
            raise RunDirError(f"run directory {str(path)!r} is a file")
        has_run = path.is_dir() and latest_checkpoint(path / "checkpoints") is not None
        if path.is_dir() and any(path.iterdir()) and not (resume and has_run):
            hint = "pass resume=True to continue it, or " if has_run else ""
            raise RunDirError(f"run directory {str(path)!r} is not empty; {hint}choose a new run_dir")

    distributed.on_rank0(check_run_dir)  # an error there is raised on every rank
    data = TensorData(train, valid)
    if isinstance(model, DecodedModel) and isinstance(model.likelihood, Likelihood):  # vaelab's own: checks its data
        for split in ("train", "valid"):
            model.likelihood.validate(data.split(split))
    own = None if isinstance(objective, (str, dict)) else objective
    trainer = Trainer(cfg, path, model, data, device, resuming=resume, objective=own)

    def make_run_dir() -> None:
        path.mkdir(parents=True, exist_ok=True)
        write_record(path, model, cfg, factory)

    distributed.on_rank0(make_run_dir)
    if not (resume and trainer.resume()):
        torch.manual_seed(seed)
    fit_with_provenance(trainer)
    if (path / "best.safetensors").is_file():
        load_weights(model, path / "best.safetensors")
    model.eval()
    model.run_dir = path
    return model
