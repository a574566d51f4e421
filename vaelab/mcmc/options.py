"""AIS settings as one value, `AISOptions`, taken by `vaelab.mcmc.ais`, `reverse_ais`, `ais_replicates` and `bdmc`
(and `vaelab.ais`, `vaelab.bdmc`); named presets for the published evaluation protocols; and the one place where
the other spellings of a setting (the command line's `vaelab evaluate --ais key=value`, the `gaps.ais_*` YAML keys,
the AIWAE objective's option names, the keyword arguments `ais` took before) map onto its fields: `ALIASES` and
`resolve`.

Presets (both run HMC with a step size adapted toward a target acceptance, averaged over each point's chains):

* `aiwae`: Ding & Freedman (AIWAE) sec. 5.2 and the authors' NLL script (xqding/AIWAE script/AIWAE_NLL.py):
  16 chains started at q(z|x), 10,000 inverse temperatures evenly spaced in [0, 1], 10 leapfrog steps, one
  step size for all chains and points of a batch (initially 0.1) adapted toward acceptance 0.6. The paper does not
  name the initial distribution (it cites Wu et al., who start at the prior); the script starts at q. Its rule
  multiplies the step by 1.002 or 0.998 by the sign of (acceptance - 0.6); here log eps moves by
  0.01 (acceptance - 0.6) (`StepSizeAdaptation`), about as slowly.
* `aiwae_prior`: the same from the prior (Wu et al.'s start; independent of the encoder).
* `cremer`: Cremer, Li & Duvenaud (2018) sec. 5.2 / 6.5: 100 chains, 500 intermediate distributions, 10
  leapfrog steps, initial distribution the prior. The paper gives neither the schedule nor the target
  acceptance: linear and 0.65 (Wu et al.'s value) here.

>>> from vaelab.mcmc.options import AISOptions, resolve
>>> resolve(PRESETS["cremer"], {"ais_temperatures": 100, "leapfrog_steps": 5}).temps
100
>>> AISOptions(schedule=(0.0, 0.5, 1.0)).temps
3
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import yaml
from torch import Tensor
from torch.distributions import Distribution

from vaelab.errors import ConfigError
from vaelab.mcmc.adaptation import StepSizeAdaptation
from vaelab.mcmc.schedules import SCHEDULES, custom, make_schedule


@dataclass(frozen=True)
class AISOptions:
    """The settings of one AIS run (forward, from `init` to p(x, z); Neal 2001, with the geometric path of AIWAE
    eq. 7, f_t = f_0^(1 - beta_t) p(x, z)^beta_t, and one HMC transition per intermediate distribution).

    - `chains`: C chains per data point (the estimate is log (1/C) sum_c w_c).
    - `temps`: the number T of inverse temperatures beta_0 = 0 < ... < beta_{T-1} = 1 (T - 1 HMC transitions).
    - `schedule`: where the betas sit: a name in `vaelab.mcmc.schedules.SCHEDULES` ("linear", "sigmoidal",
      "geometric") or the betas themselves (a sequence or tensor, then `temps` is its length).
    - `leapfrog`: leapfrog steps per HMC transition.
    - `init`: the initial distribution f_0: "prior" (p(z); encoder-independent, as Cremer et al. 2018),
      "posterior" (the model's q(z | x), as AIWAE) or a `Distribution` with batch `[B]`, event `[D]`.
    - `step_size`: the initial step size: a float, a tensor broadcastable to `[C, B, 1]`, or a fixed schedule
      `[T-1, C|1, B|1, 1]` (one row per temperature, with `adapt=None`).
    - `target_acceptance`, `adapt` ("data": the chains of each point share a step size, as Wu et al. 2017;
      "chain"; "all"; None: fixed), `adapt_rate`, `min_step_size`, `max_step_size`: step-size adaptation
      (`vaelab.mcmc.adaptation.StepSizeAdaptation`).
    - `jitter`: each transition's step size times U(1 - jitter, 1 + jitter) (Neal 2011, sec. 4).
    - `pilot_chains`: > 0 tunes the step sizes on that many independent chains first and runs the `chains` with
      the pilot's per-temperature step sizes fixed (exact AIS: no chain's kernel depends on its own past).
    - `batch_size`: data points annealed together (None: all at once, or the caller's).
    - `replicates`: R independent runs per point (`vaelab.mcmc.ais.ais_replicates`, annealed together): the
      estimate is their mean and its Monte Carlo error their spread (the delta method within one run understates
      it).
    - `seed`: None draws from torch's global generator; an int makes the run reproducible on its own, leaving the
      global generator as it was.
    - `chunk_elements`: the most decoder outputs (chains x points x the decoder's output width, counted as at
      least 1,024 per latent) one gradient evaluation computes at once: the chains are split into chunks of that
      many (at least one chain), each chunk's forward and backward pass staying in cache. None: on the CPU
      `vaelab.threads.CPU_CHUNK_ELEMENTS` (2**20), elsewhere no chunks; 0: no chunks. Chains are independent and
      no draw changes, so the results are those without chunks up to float round-off.

    >>> import torch, vaelab
    >>> options = vaelab.AISOptions(chains=4, temps=50, leapfrog=5, seed=0)
    >>> options.betas().shape, options.gradient_evaluations(points=10)  # 10 points x 4 chains x 49 x (5 + 1)
    (torch.Size([50]), 11760)
    >>> from vaelab.models import LinearGaussian
    >>> model = LinearGaussian.random(3, 2, dtype=torch.float32)
    >>> out = vaelab.ais(model, torch.randn(4, 3), options, progress=False)  # or a preset: "cremer", chains=10
    >>> out["per_example"]["log_likelihood"].shape
    torch.Size([4])
    """

    chains: int = 16
    temps: int = 1000
    leapfrog: int = 10
    schedule: str | tuple[float, ...] = "linear"
    init: str | Distribution = "prior"
    step_size: float | Tensor = 0.1
    target_acceptance: float = 0.65
    adapt: str | None = "data"
    adapt_rate: float = 0.1
    min_step_size: float = 1e-4
    max_step_size: float = 1.0
    jitter: float = 0.2
    pilot_chains: int = 0
    batch_size: int | None = None
    replicates: int = 1
    seed: int | None = None
    chunk_elements: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.schedule, str):
            betas = custom(self.schedule)
            object.__setattr__(self, "schedule", tuple(betas.tolist()))
            object.__setattr__(self, "temps", len(self.schedule))
        step = self.step_size
        step_ok = bool((step > 0).all()) if isinstance(step, Tensor) else step > 0
        schedules = ", ".join(sorted(SCHEDULES))
        chunk = self.chunk_elements
        checks = [
            ("chains", _is_int(self.chains) and self.chains >= 1, "must be an integer >= 1"),
            ("temps", _is_int(self.temps) and self.temps >= 2, "(the number of inverse temperatures) must be >= 2"),
            ("leapfrog", _is_int(self.leapfrog) and self.leapfrog >= 1, "(steps per HMC transition) must be >= 1"),
            ("schedule", not isinstance(self.schedule, str) or self.schedule in SCHEDULES,
             f"must be one of {schedules}"),
            ("init", isinstance(self.init, Distribution) or self.init in ("prior", "posterior"),
             "must be prior or posterior (or a Distribution)"),
            ("step_size", step_ok, "must be > 0"),
            ("target_acceptance", 0 < self.target_acceptance < 1, "must be in (0, 1)"),
            ("adapt", self.adapt in (None, "chain", "data", "all"), "must be data, chain, all or none"),
            ("adapt_rate", self.adapt_rate >= 0, "must be >= 0"),
            ("min_step_size", 0 < self.min_step_size <= self.max_step_size, "must be in (0, max_step_size]"),
            ("jitter", 0 <= self.jitter < 1, "must be in [0, 1)"),
            ("pilot_chains", _is_int(self.pilot_chains) and self.pilot_chains >= 0, "must be an integer >= 0"),
            ("batch_size", self.batch_size is None or self.batch_size >= 1, "must be >= 1"),
            ("replicates", _is_int(self.replicates) and self.replicates >= 1, "(runs per point) must be >= 1"),
            ("seed", self.seed is None or _is_int(self.seed), "must be an integer or none"),
            ("chunk_elements", chunk is None or (_is_int(chunk) and chunk >= 0),
             "must be an integer >= 0 (0: no chunks) or none (automatic)"),
        ]  # fmt: skip
        for name, ok, message in checks:
            if not ok:
                raise ConfigError(f"AIS option {name} {message}, got {getattr(self, name)!r}")
        if self.pilot_chains and self.adapt is None:
            raise ConfigError(
                "AIS option pilot_chains tunes step sizes: it needs step-size adaptation (adapt not none)"
            )

    def betas(self) -> Tensor:
        """The inverse temperatures `[T]` (float64)."""
        if isinstance(self.schedule, str):
            return make_schedule(self.schedule, self.temps)
        return torch.tensor(self.schedule, dtype=torch.float64)

    def adaptation(self) -> StepSizeAdaptation | None:
        """The step-size adaptation these options ask for (None when `adapt` is None)."""
        if self.adapt is None:
            return None
        return StepSizeAdaptation(
            self.target_acceptance, self.adapt_rate, self.min_step_size, self.max_step_size, self.adapt
        )

    def ais_kwargs(self, batch_size: int | None = None) -> dict[str, Any]:
        """The options as keyword settings for `vaelab.mcmc.ais(model, x, **kwargs)`, in the spelling `ais` took
        before it took an `AISOptions` (kept for callers written then); `batch_size` is used when the options set
        none. Prefer passing the options themselves: `ais(model, x, options)`."""
        return {
            "chains": self.chains,
            "schedule": self.betas(),
            "leapfrog_steps": self.leapfrog,
            "init": self.init,
            "step_size": self.step_size,
            "target_acceptance": self.target_acceptance,
            "adapt": self.adapt,
            "adapt_rate": self.adapt_rate,
            "jitter": self.jitter,
            "pilot_chains": self.pilot_chains,
            "batch_size": self.batch_size or batch_size,
        }

    def gradient_evaluations(self, points: int) -> int:
        """grad_z log f evaluations for `points` data points: per chain and transition, `leapfrog` in the
        trajectory plus one at its start (log f changes with beta); the pilot chains' too; every replicate's."""
        return self.replicates * points * (self.chains + self.pilot_chains) * (self.temps - 1) * (self.leapfrog + 1)

    @contextlib.contextmanager
    def random_state(self, device: torch.device | str | None = None) -> Iterator[None]:
        """Within the block, torch's generators start from `seed` (and are restored after it); no-op without one."""
        if self.seed is None:
            yield
            return
        device = torch.device(device or "cpu")
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            yield


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


PRESETS: dict[str, AISOptions] = {
    "aiwae": AISOptions(
        chains=16,
        temps=10000,
        leapfrog=10,
        schedule="linear",
        init="posterior",
        step_size=0.1,
        target_acceptance=0.6,
        adapt="all",
        adapt_rate=0.01,
    ),
    "aiwae_prior": AISOptions(
        chains=16, temps=10000, leapfrog=10, schedule="linear", init="prior", target_acceptance=0.6
    ),
    "cremer": AISOptions(chains=100, temps=500, leapfrog=10, schedule="linear", init="prior", target_acceptance=0.65),
}

#: Every other spelling of an `AISOptions` field, and the field it means: the names `ais` took as keyword arguments,
#: the AIWAE objective's option names, the `gaps.ais_*` YAML keys, and short forms accepted on the command line.
ALIASES: dict[str, str] = {
    "temperatures": "temps",
    "ais_temperatures": "temps",
    "leapfrog_steps": "leapfrog",
    "steps": "leapfrog",
    "ais_leapfrog": "leapfrog",
    "ais_chains": "chains",
    "target": "target_acceptance",
    "min_step": "min_step_size",
    "max_step": "max_step_size",
}

FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(AISOptions))


def field_name(key: str) -> str:
    """The `AISOptions` field a setting's name means (`ALIASES`), or `ConfigError` naming the closest."""
    name = ALIASES.get(key, key)
    if name not in FIELDS and key != "step_size_range":
        hint = difflib.get_close_matches(key, [*FIELDS, *ALIASES], n=1)
        did = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(f"unknown AIS option {key!r}{did}; valid options: {', '.join(FIELDS)}")
    return name


def resolve(options: AISOptions | str | None = None, settings: Mapping[str, Any] | None = None) -> AISOptions:
    """`options` (an `AISOptions`, a preset name, or None for `AISOptions()`) with `settings` applied: each key a
    field or one of its `ALIASES`. Two forms kept from the keyword arguments `ais` took: `schedule` an int T
    (T linearly spaced betas) and `step_size_range=(min, max)`. Values set to None are left out, except `adapt`,
    `batch_size`, `seed` and `chunk_elements`, for which None is a setting. The one place that maps settings onto
    `AISOptions`."""
    if isinstance(options, str):
        if options not in PRESETS:
            hint = difflib.get_close_matches(options, PRESETS, n=1)
            did = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"unknown AIS preset {options!r}{did}; choose one of: {', '.join(PRESETS)}")
        options = PRESETS[options]
    elif options is None:
        options = AISOptions()
    elif not isinstance(options, AISOptions):
        raise ConfigError(f"AIS options must be an AISOptions or a preset name, got {type(options).__name__}")
    changes: dict[str, Any] = {}
    for key, value in (settings or {}).items():
        name = field_name(key)
        if key == "step_size_range":
            changes["min_step_size"], changes["max_step_size"] = (float(v) for v in value)
        elif name == "schedule" and _is_int(value):
            changes["schedule"], changes["temps"] = "linear", value
        elif value is not None or name in ("adapt", "batch_size", "seed", "chunk_elements"):
            changes[name] = value
    return dataclasses.replace(options, **changes) if changes else options


def _coerce(name: str, raw: str, annotation: Any) -> Any:
    value = yaml.safe_load(raw) if raw.strip() else None
    kinds = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    kind = kinds[0]
    if value is None or (isinstance(value, str) and value.lower() == "none"):
        if type(None) in typing.get_args(annotation):
            return None
        raise ConfigError(f"AIS option {name} needs a value, e.g. {name}=...")
    if kind is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            pass
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    if kind is int and isinstance(value, (float, str)):  # temps=1e4
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if number.is_integer():
            return int(number)
    raise ConfigError(f"AIS option {name} must be {kind.__name__}, got {raw!r}")


def parse_ais_options(tokens: Sequence[str], default: str = "aiwae", **updates: Any) -> AISOptions:
    """AIS options from command-line tokens: an optional preset name (`PRESETS`; else `default`) then
    `key=value` overrides of `AISOptions` fields (or their `ALIASES`), then `updates` (e.g. init="prior"; None
    values are left out). `["cremer", "chains=10"]` is Cremer et al.'s protocol with 10 chains. Mistakes raise
    `ConfigError`."""
    tokens = list(tokens)
    preset = default
    if tokens and "=" not in tokens[0]:
        preset = tokens.pop(0)
    base = resolve(preset)
    hints = typing.get_type_hints(AISOptions)
    changes: dict[str, Any] = {}
    for token in tokens:
        if "=" not in token:
            raise ConfigError(f"AIS option {token!r} is not key=value (a preset name may only come first)")
        key, raw = (part.strip() for part in token.split("=", 1))
        name = field_name(key)
        if name not in hints:
            raise ConfigError(f"AIS option {key!r} cannot be given on the command line; valid: {', '.join(FIELDS)}")
        changes[name] = _coerce(name, raw, hints[name])
    changes.update({k: v for k, v in updates.items() if v is not None})
    return resolve(base, changes)
