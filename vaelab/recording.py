"""How `vaelab.fit` records a model built in Python, and `vaelab.load`, which rebuilds it in a fresh process.

No pickle: `model.json` in the run directory names an importable callable, `module:qualname`, and the JSON
arguments that rebuild the model, found in this order:

1. `fit(..., factory=f)`: `f` itself (called with no arguments) or a `functools.partial(f, *args, **kwargs)`;
2. the model was made by a function decorated with `@vaelab.model_factory` (which notes its arguments);
3. the model's class, when it is importable and takes no required arguments.

A model that none of these rebuilds (a class defined in `__main__` or a notebook, or a `VAE` assembled from
parts) is recorded as such: `load` then needs a `template` (the same model, built again by the user), into which
it loads the weights. The weights are the trainer's checksummed `best.safetensors` (`vaelab.train.checkpoint`).

A run that `vaelab train` wrote is described by its `config.yaml` instead: `load_run` rebuilds it from the config
(`build_run`: dataset, seed, model) and loads its weights. It is library code, so `vaelab.load` reads such a run
without the command line; creating, training and evaluating run directories is the application's
(`vaelab.app.runs`).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import yaml
from torch import nn

from vaelab.config import Config, config_from_dict
from vaelab.errors import ConfigError, CorruptRunFile, RunDirError

RECORD = "model.json"
FORMAT = "vaelab.model/1"
F = TypeVar("F", bound=Callable[..., nn.Module])


def reference(obj: Any) -> str | None:
    """`module:qualname` for a function or class another process can import (the same object), else None."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", "")
    if not module or module == "__main__" or "<" in qualname:
        return None
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return None
    return f"{module}:{qualname}" if found is obj or getattr(found, "__wrapped__", None) is obj else None


def resolve(ref: str) -> Callable[..., Any]:
    """The object `module:qualname` names."""
    module, qualname = ref.split(":")
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


def _json_args(args: tuple, kwargs: dict) -> dict | None:
    try:
        json.dumps([args, kwargs])
    except (TypeError, ValueError):
        return None
    return {"args": list(args), "kwargs": dict(kwargs)}


def model_factory(fn: F) -> F:
    """Decorate a function that builds a model from JSON-able arguments, so that `vaelab.fit` records the call and
    `vaelab.load` repeats it in a fresh process. The function must be importable (defined in a module).

    >>> import vaelab
    >>> from torch import nn
    >>> @vaelab.model_factory
    ... def small(width: int = 3) -> nn.Module:
    ...     return nn.Linear(width, 1)
    >>> small(width=4).vaelab_factory["kwargs"]
    {'width': 4}
    """

    @functools.wraps(fn)
    def build(*args: Any, **kwargs: Any) -> nn.Module:
        model = fn(*args, **kwargs)
        call = _json_args(args, kwargs)
        if call is not None and isinstance(model, nn.Module):
            model.vaelab_factory = {"factory": reference(build) or reference(fn), **call}
        return model

    return build  # type: ignore[return-value]


def construction(model: nn.Module, factory: Callable[..., nn.Module] | None = None) -> dict:
    """The `model.json` record of how to rebuild `model` (module docstring): `rebuild` is {"factory", "args",
    "kwargs"}, or None with `why`."""
    record: dict[str, Any] = {"format": FORMAT, "class": f"{type(model).__module__}:{type(model).__qualname__}"}
    rebuild, why = None, ""
    if factory is not None:
        func, args, kwargs = factory, (), {}
        if isinstance(factory, functools.partial):
            func, args, kwargs = factory.func, factory.args, factory.keywords
        ref, call = reference(func), _json_args(args, kwargs)
        if ref is None or call is None:
            raise RunDirError(
                f"fit(factory=...) needs an importable function (defined in a module, not in __main__ or a notebook) "
                f"with JSON arguments; {getattr(func, '__qualname__', func)!r} is not"
            )
        rebuild = {"factory": ref, **call}
    elif getattr(model, "vaelab_factory", None) and model.vaelab_factory.get("factory"):
        rebuild = dict(model.vaelab_factory)
    else:
        cls, ref = type(model), reference(type(model))
        required = [
            p.name
            for p in inspect.signature(cls).parameters.values()
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        if ref is None:
            why = f"its class {record['class']} is defined where a fresh process cannot import it"
        elif required:
            why = f"its class {record['class']} needs arguments ({', '.join(required)}) that were not recorded"
        else:
            rebuild = {"factory": ref, "args": [], "kwargs": {}}
    record["rebuild"] = rebuild
    if why:
        record["why"] = why
    return record


def write_record(run_dir: Path, model: nn.Module, cfg=None, factory: Callable[..., nn.Module] | None = None) -> None:
    """Write `model.json` (and the training settings `cfg`, if given, as `fit.yaml`) into `run_dir`."""
    from vaelab.train.checkpoint import atomic_write_text

    atomic_write_text(run_dir / RECORD, json.dumps(construction(model, factory), indent=2) + "\n")
    if cfg is not None:
        atomic_write_text(run_dir / "fit.yaml", cfg.to_yaml())


#: A finished run's final weights, kept when its checkpoints are not (`vaelab ledger add --last`).
LAST_WEIGHTS = "last.safetensors"


def weights_file(run_dir: Path, checkpoint: str = "best") -> Path:
    """The weights that `checkpoint` names in `run_dir`. "best": `best.safetensors` (the best validation weights),
    else the latest checkpoint's. "last": the latest checkpoint's, else `last.safetensors` (a finished run's final
    weights, shipped without its checkpoints). RunDirError when there are none."""
    from vaelab.train.checkpoint import latest_checkpoint

    best, latest = run_dir / "best.safetensors", latest_checkpoint(run_dir / "checkpoints")
    if checkpoint == "best" and best.is_file():
        return best
    if latest is not None:
        return latest / "model.safetensors"
    if checkpoint == "last" and (run_dir / LAST_WEIGHTS).is_file():
        return run_dir / LAST_WEIGHTS
    if checkpoint == "last" and best.is_file():
        raise RunDirError(f"run {str(run_dir)!r} kept no last weights (no checkpoints, no {LAST_WEIGHTS}); "
                          "use --checkpoint best")  # fmt: skip
    if (run_dir / LAST_WEIGHTS).is_file():  # checkpoint == "best": a run shipped with its final weights alone
        raise RunDirError(f"run {str(run_dir)!r} kept no best weights (no {best.name}, no checkpoints), only its "
                          f"final ones ({LAST_WEIGHTS}); use --checkpoint last")  # fmt: skip
    raise RunDirError(f"run {str(run_dir)!r} has no saved weights yet; train it first")


def load(run_dir: str | Path, template: nn.Module | None = None, checkpoint: str = "best") -> nn.Module:
    """The trained model of a run directory, in eval mode: a CLI run (`config.yaml`: `load_run`) or a
    `vaelab.fit` run, rebuilt as its `model.json` says, or `template` (a model built as the trained one was) with the
    run's weights loaded into it. `checkpoint`: "best" (validation) weights or the "last" checkpoint's.

    >>> import vaelab
    >>> model = vaelab.load("runs/my-run")  # doctest: +SKIP
    >>> model = vaelab.load("runs/my-run", template=make_my_model())  # doctest: +SKIP
    """
    return load_with_weights(run_dir, template, checkpoint)[0]


def load_with_weights(
    run_dir: str | Path, template: nn.Module | None = None, checkpoint: str = "best"
) -> tuple[nn.Module, Path]:
    """`load`, and the weights file it read (resolved once, so that a checkpoint written meanwhile by a training
    run cannot make the two disagree)."""
    from vaelab.train.checkpoint import load_weights

    path = Path(run_dir)
    if (path / "config.yaml").is_file() and template is None:
        run = load_run(path, checkpoint)
        assert run.weights is not None
        return run.model, run.weights
    if not (path / RECORD).is_file() and template is None:
        raise RunDirError(f"{str(path)!r} is not a vaelab run directory (no config.yaml or {RECORD} in it)")
    model = template
    if model is None:
        record = json.loads((path / RECORD).read_text())
        rebuild = record.get("rebuild")
        if rebuild is None:
            raise RunDirError(
                f"the model in {str(path)!r} cannot be rebuilt here: {record.get('why', 'nothing was recorded')}. "
                "Build the same model again and pass it: vaelab.load(run_dir, template=model) loads the weights into "
                "it; or train with a factory another process can import (fit(..., factory=f) or @vaelab.model_factory)"
            )
        try:
            model = resolve(rebuild["factory"])(*rebuild["args"], **rebuild["kwargs"])
        except (ImportError, AttributeError) as err:
            raise RunDirError(
                f"cannot import {rebuild['factory']} to rebuild the model in {str(path)!r}: {err}"
            ) from None
    weights = weights_file(path, checkpoint)
    try:
        load_weights(model, weights)
    except RunDirError as err:
        fix = "the template must be the model that was trained" if template is not None else "the factory changed"
        raise RunDirError(f"{err} ({fix})") from None
    model.eval()
    model.run_dir = path
    return model, weights


# --- runs described by a config (the command line's `vaelab train`, and `vaelab.load` of such a run) ---------


def available_devices() -> list[str]:
    """The devices of this machine that torch can use: cpu, then cuda:0 ... and mps where present."""
    found = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0)]
    mps = getattr(torch.backends, "mps", None)
    return found + (["mps"] if mps is not None and mps.is_available() else [])


def resolve_device(name: str) -> torch.device:
    """The device `name` (auto: cuda if there is one, else cpu), or `ConfigError` naming this machine's devices."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        dev = None
    found = available_devices()
    if dev is not None and (dev.type == "cpu" or f"{dev.type}:{dev.index or 0}" in found or dev.type in found):
        return dev
    why = " (this torch build has no CUDA)" if name.startswith("cuda") and not torch.backends.cuda.is_built() else ""
    raise ConfigError(f"device {name!r} is not available{why}; this machine has: {', '.join(found)} (or auto)")


def read_run_config(run_dir: str | Path) -> Config:
    """The `config.yaml` of the run in `run_dir` (`RunDirError` if there is none)."""
    path = Path(run_dir)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{str(path)!r} is a file, not a run directory; give the directory 'vaelab train' wrote")
    if not path.is_dir():
        raise RunDirError(f"run directory {str(path)!r} does not exist; give the directory 'vaelab train' wrote")
    if not (path / "config.yaml").is_file():
        raise RunDirError(f"{str(path)!r} is not a vaelab run directory (no config.yaml in it)")
    return config_from_dict(yaml.safe_load((path / "config.yaml").read_text()))


@dataclass
class Run:
    """A trained (or training) run loaded from disk."""

    path: Path
    cfg: Config
    model: nn.Module
    dataset: object
    device: torch.device
    weights: Path | None = None  # the file the model's weights were loaded from (`load_run`)


def build_run(cfg: Config, path: Path, device: str | None = None) -> Run:
    """Seed, load the dataset and build the model (deterministic initialisation from `cfg.seed`); use the config's
    `threads` unless the command line set them (`vaelab.threads`)."""
    from vaelab.config.build import build_model
    from vaelab.data import load_dataset
    from vaelab.data.supervised import SupervisedDataset, predicts_labels
    from vaelab.threads import use_config_threads

    use_config_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    dev = resolve_device(device or cfg.device)
    dataset = load_dataset(cfg.data.name, path=cfg.data.path, seed=cfg.data.seed)
    train_data = dataset.split("train")[: cfg.data.subset] if cfg.data.subset else dataset.split("train")
    model = build_model(cfg.model, dataset.event_shape, train_data=train_data).to(dev)
    if predicts_labels(model):  # a classifier: its data are (inputs, label) pairs
        dataset = SupervisedDataset(dataset)
    return Run(path, cfg, model, dataset, dev)


def load_run(run_dir: str | Path, checkpoint: str = "best", device: str | None = None) -> Run:
    """Load a run's model with its `best` validation weights (falling back to the latest checkpoint) or
    its `last` checkpoint. Weights that fail their sha256 or cannot be read are a `CorruptRunFile` saying what to
    use instead."""
    from vaelab.train.checkpoint import latest_checkpoint, load_weights

    cfg = read_run_config(run_dir)
    run = build_run(cfg, Path(run_dir), device)
    weights = weights_file(run.path, checkpoint)
    if weights.name == "best.safetensors":
        has_last = latest_checkpoint(run.path / "checkpoints") or (run.path / LAST_WEIGHTS).is_file()
        instead = "use --checkpoint last (the last weights)" if has_last else "restore it from a copy of the run"
    elif weights.name == LAST_WEIGHTS:
        instead = "use --checkpoint best, or restore it from a copy of the run"
    else:
        instead = f"use --checkpoint best, or rewrite it with vaelab train --resume {run.path}"
    try:
        load_weights(run.model, weights)
    except CorruptRunFile as err:
        raise CorruptRunFile(f"{err}; {instead}") from None
    run.model.eval()
    run.weights = weights
    return run
