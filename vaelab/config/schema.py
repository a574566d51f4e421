"""Run configuration: nested dataclasses read from YAML, with `--set a.b=value` overrides.

Unknown keys are errors (with a suggestion), never silently ignored. Every numeric key has its range and every
key with a fixed set of values its choices in the schema below (`bounded`, `one_of`), checked when a config is
read. Component sections (`encoder`, `posterior`, `prior`, `likelihood`, ...) hold `type` plus that component's
own options, which the registry checks against the builder's signature when the model is built.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vaelab.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """The values a numeric config key (or each entry of a list key) may take: `ge <= v`, `gt < v`, `v <= le`,
    `v < lt`; None is allowed where the key's type allows it (`int | None`)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def holds(self, v: float) -> bool:
        return math.isfinite(v) and not (
            (self.ge is not None and v < self.ge)
            or (self.gt is not None and v <= self.gt)
            or (self.le is not None and v > self.le)
            or (self.lt is not None and v >= self.lt)
        )

    def __str__(self) -> str:
        parts = [
            f"{op} {b:g}"
            for op, b in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
            if b is not None
        ]
        return " and ".join(parts) or "finite"


def bounded(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, **bounds: float) -> Any:
    """A config field whose value (each entry, for a list) must lie in `Range(**bounds)`, e.g.
    `latent_dim: int = bounded(40, ge=1)`; `_build` checks it."""
    return field(default=default, default_factory=factory, metadata={"range": Range(**bounds)})


def one_of(default: str, *choices: str) -> Any:
    """A config field whose value must be `default` or one of `choices`; `_build` checks it."""
    return field(default=default, metadata={"choices": (default, *choices)})


@dataclass
class DataConfig:
    name: str = "mnist_static"
    path: str | None = None  # explicit file or directory for the dataset
    seed: int = bounded(0, ge=0)  # seeds the dataset's own splits and binarizations
    subset: int | None = bounded(None, ge=1)  # use only the first N training examples (quick runs)
    valid_subset: int | None = bounded(None, ge=1)  # use only the first N validation examples
    batch_size: int = bounded(100, ge=1)
    eval_batch_size: int = bounded(500, ge=1)


@dataclass
class ModelConfig:
    type: str = "vae"  # a MODELS registry entry: vae, hvae, ...
    latent_dim: int = bounded(40, ge=1)
    encoder: dict = field(default_factory=lambda: {"type": "gated_mlp", "hidden": [300, 300]})
    decoder: dict = field(default_factory=lambda: {"type": "gated_mlp", "hidden": [300, 300]})
    posterior: dict = field(default_factory=lambda: {"type": "diagonal_gaussian"})
    prior: dict = field(default_factory=lambda: {"type": "standard_normal"})
    likelihood: dict = field(default_factory=lambda: {"type": "bernoulli"})
    options: dict = field(default_factory=dict)  # the model type's own options (e.g. hvae: latent_dim2)
    weight_init: str = one_of("default", "he_normal")  # vaelab.nets.init: PyTorch's, or He-normal (VampPrior code)


@dataclass
class ObjectiveConfig:
    type: str = "elbo"
    options: dict = field(default_factory=dict)  # e.g. {samples: 5} for iwae
    beta: float = bounded(1.0, ge=0)  # final weight of the KL term
    warmup_epochs: int = bounded(0, ge=0)  # KL warm-up: beta ramps 0 -> beta over this many epochs (VampPrior: 100)
    entropy_annealing_epochs: int = bounded(0, ge=0)  # Cremer et al. 5.3.1: lambda ramps 0 -> 1 over this many epochs


@dataclass
class TrainConfig:
    epochs: int = bounded(100, ge=1)
    lr: float = bounded(5e-4, ge=0)  # 0 leaves the weights as they are
    optimizer: str = one_of("adam", "adam_normgrad")  # adam_normgrad: Adam on per-tensor normalised gradients
    adam_betas: list = bounded(factory=lambda: [0.9, 0.999], ge=0, lt=1)  # each in [0, 1)
    adam_eps: float = bounded(1e-8, ge=0)
    weight_decay: float = bounded(0.0, ge=0)
    lr_schedule: dict = field(default_factory=lambda: {"type": "constant"})
    grad_clip: float | None = bounded(None, gt=0)  # max gradient norm
    early_stopping: int | None = bounded(50, ge=1)  # look-ahead in epochs without validation improvement; null = off
    validate_every: int = bounded(1, ge=1)  # epochs
    checkpoint_every: int = bounded(1, ge=1)  # epochs
    max_nonfinite_steps: int = bounded(20, ge=0)  # consecutive skipped steps before the run stops
    tensorboard: bool = False
    progress: bool = True
    init_from: str | None = None  # a run directory whose generative model (prior, decoder, likelihood) starts this one
    freeze: list = field(default_factory=list)  # model parts not trained, e.g. [prior, decoder, likelihood]


@dataclass
class EvalConfig:
    split: str = "test"
    is_samples: int = bounded(5000, ge=1)
    subset: int | None = bounded(None, ge=1)  # evaluate only the first N examples of the split
    batch_size: int = bounded(100, ge=1)
    max_elements: int = bounded(2**24, ge=1)  # memory bound per IS chunk (decoder outputs)
    grid: int = bounded(10, ge=1)  # side of the sample / reconstruction grids
    predictive_samples: int = bounded(10000, ge=1)  # classifiers: draws of q(z|x) per input for p(y|x) (SIWAE B.1)
    after_training: bool = True  # `vaelab train` evaluates and draws the pictures at its end (--no-eval: false)


@dataclass
class GapsConfig:
    """`vaelab gaps RUN`: per-data-point optimal q* and the inference gaps (Cremer et al. 2018, appendix 6.4)."""

    split: str = "train"  # where the gaps are measured (the paper: training data)
    subset: int = bounded(1000, ge=1)  # the first N examples of the split (paper: 1,000 for MNIST / Fashion-MNIST)
    families: list = field(default_factory=lambda: ["ffg", "flow"])  # local q* families; the trained one is added
    init: str = one_of("prior", "encoder")  # q* starts at the prior N(0, I) (paper) or at the encoder's q(z|x)
    samples: int = bounded(100, ge=1)  # Monte Carlo samples of each optimisation step's ELBO
    lr: float = bounded(1e-3, gt=0)  # Adam
    check_every: int = bounded(100, ge=1)  # steps per window average of the ELBO
    patience: int = bounded(10, ge=1)  # checks without improvement before a point stops
    max_steps: int | None = bounded(None, ge=1)  # cap on the steps per point (null: only the stopping rule)
    batch_size: int = bounded(100, ge=1)  # data points optimised together (one tensor each)
    eval_samples: int = bounded(5000, ge=1)  # samples for L[q], L[q*] and the IWAE bound of log p(x)
    ais_chains: int = bounded(100, ge=1)  # AIS (sec. 3.3: 100 chains, 500 temperatures, 10 leapfrog, from the prior)
    ais_temperatures: int = bounded(500, ge=0)  # 0: no AIS (log p(x) from the IWAE bounds only)
    ais_leapfrog: int = bounded(10, ge=1)
    ais_init: str = one_of("q_star", "prior")  # AIS from the best fitted Gaussian q* (FFG or FullCov), or the prior
    flow: dict = field(default_factory=dict)  # local flow options (default: the trained flow's, else Table 8's)


@dataclass
class Config:
    name: str = "vae"
    seed: int = bounded(0, ge=0)
    device: str = "auto"  # auto, cpu, cuda, cuda:1, ... (checked: vaelab.recording.resolve_device)
    threads: int | None = bounded(None, ge=1)  # torch's CPU threads (--threads wins; null: $OMP_NUM_THREADS, else 1)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    gaps: GapsConfig = field(default_factory=GapsConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _suggest(key: str, choices) -> str:
    hint = difflib.get_close_matches(key, list(choices), n=1)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


def _check_type(value: Any, annotation: Any, where: str) -> Any:
    """Coerce YAML scalars to the field's type (ints for floats; numbers YAML 1.1 reads as strings, "5e-4") or
    raise `ConfigError`."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        annotation = next(a for a in args if a is not type(None))
    if annotation in (int, float):
        value = yaml_number(value)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is int and isinstance(value, float) and value.is_integer():
        return int(value)  # 1e6 (YAML: a float, or a string) for an integer key
    expected = {"int": int, "float": float, "str": str, "bool": bool, "dict": dict, "list": list}.get(
        getattr(annotation, "__name__", "")
    )
    if expected is not None and (not isinstance(value, expected) or (expected is int and isinstance(value, bool))):
        article = "an" if expected.__name__[0] in "aeiou" else "a"
        raise ConfigError(f"{where} must be {article} {expected.__name__}, got {value!r}")
    return value


def yaml_number(value: Any) -> Any:
    """`value`, or the float it spells if it is a string such as "1e6" or "5e-4" (YAML 1.1 reads those as strings)."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def _check_value(value: Any, f: dataclasses.Field, where: str) -> None:
    """Raise `ConfigError` if `value` is outside the field's `bounded` range or `one_of` choices."""
    limits, choices = f.metadata.get("range"), f.metadata.get("choices")
    if limits is not None and value is not None:
        for v in value if isinstance(value, list) else [value]:
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not limits.holds(v):
                each = " (each entry)" if isinstance(value, list) else ""
                raise ConfigError(f"{where}{each} must be {limits}, got {v!r}")
    if choices is not None and value not in choices:
        raise ConfigError(f"{where} must be one of {', '.join(choices)}, got {value!r}{_suggest(str(value), choices)}")


def _build(cls, data: dict, where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'the config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in fields:
            raise ConfigError(f"unknown config key {path!r}{_suggest(key, fields)}; valid keys: {', '.join(fields)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, path)
        else:
            kwargs[key] = _check_type(value, hint, path)
            _check_value(kwargs[key], fields[key], path)
    return cls(**kwargs)


def config_from_dict(data: dict | None) -> Config:
    cfg = _build(Config, data or {}, "")
    for key in ("encoder", "decoder", "posterior", "prior", "likelihood"):
        section = getattr(cfg.model, key)
        if "type" not in section:
            raise ConfigError(f"model.{key} needs a 'type' key")
    return cfg


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.lr=1e-3' -> (['train', 'lr'], 0.001). Values are read as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value (e.g. train.epochs=5), got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {key}: cannot read value {raw!r}: {e}") from None
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `--set` overrides to a raw config dict (validated afterwards by `config_from_dict`)."""
    data = copy.deepcopy(data)
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text}: {k!r} is not a section")
        node[keys[-1]] = value
    return data


# What `vaelab train --resume RUN --set ...` may change: how long and how the run trains and is evaluated, never
# the architecture, the objective, the optimiser or the data (a checkpoint holds weights for exactly those).
RESUMABLE_KEYS = (
    "device",
    "train.epochs",
    "train.early_stopping",
    "train.progress",
    "train.checkpoint_every",
    "train.tensorboard",
    "train.max_nonfinite_steps",
    "threads",
    "eval.*",
    "gaps.*",
)


def changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two config dicts (leaves; a key missing on one side counts)."""
    out = []
    for key in [*old, *(k for k in new if k not in old)]:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed_keys(a, b, f"{prefix}{key}.")
        elif a != b or (key in old) != (key in new):
            out.append(f"{prefix}{key}")
    return out


def resumable(key: str) -> bool:
    """Whether `key` (dotted) may change when a run is resumed (`RESUMABLE_KEYS`)."""
    return any(key == k or (k.endswith(".*") and key.startswith(k[:-1])) for k in RESUMABLE_KEYS)


def check_resume_changes(saved: Config, cfg: Config) -> None:
    """Raise `ConfigError` naming the first change from a run's `saved` config that a resume may not make."""
    for key in changed_keys(saved.to_dict(), cfg.to_dict()):
        if not resumable(key):
            allowed = ", ".join(RESUMABLE_KEYS)
            raise ConfigError(
                f"--resume cannot change {key}: the checkpoint was trained with another value; resumable keys: "
                f"{allowed} (start a new run with --run-dir for anything else)"
            )


def apply_budget(data: dict, budget: str | None, source: str) -> dict:
    """Apply a named budget: a config's `budgets: {quick: {train.epochs: 5, ...}, full: {...}}` section maps
    budget names to dotted-key overrides (quick runs for a laptop CPU, the paper's budget for a GPU)."""
    budgets = data.pop("budgets", None) or {}
    if budget is None:
        return data
    if budget not in budgets:
        names = ", ".join(budgets) or "none"
        raise ConfigError(f"{source} has no budget {budget!r}; its budgets: {names}")
    return apply_overrides(
        data, [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}" for k, v in budgets[budget].items()]
    )


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, budget: str | None = None
) -> Config:
    """Read a YAML config (None: the built-in default), apply a named budget, then overrides."""
    if path is None:
        from importlib.resources import files

        text = (files("vaelab") / "configs" / "default.yaml").read_text()
        source = "the built-in default config"
    else:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist; give the path of a YAML file (see configs/)")
        text, source = p.read_text(), str(p)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{source} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a mapping of sections (data, model, objective, train, eval)")
    data = apply_budget(data, budget, source)
    return config_from_dict(apply_overrides(data, overrides or []))
