"""AIS settings as one value: the options `vaelab.mcmc.ais` takes, named presets for the published evaluation
protocols, and `key=value` overrides (the syntax of `vaelab evaluate --ais`).

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
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from torch import Tensor

from vaelab.errors import ConfigError
from vaelab.mcmc.schedules import SCHEDULES, make_schedule


@dataclass(frozen=True)
class AISOptions:
    """The settings of one AIS run (forward, from `init` to p(x, z)); see `vaelab.mcmc.ais.ais` for each.

    `temps` is the number T of inverse temperatures beta_0 = 0 < ... < beta_{T-1} = 1 (T - 1 HMC transitions of
    `leapfrog` steps each); `batch_size` the data points annealed together (None: all at once, or the caller's).
    `replicates` R independent runs per point (`vaelab.mcmc.ais.ais_replicates`, annealed together): the estimate is
    their mean and its Monte Carlo error their spread; the delta method within one run (R = 1) understates it.
    """

    chains: int = 16
    temps: int = 1000
    leapfrog: int = 10
    schedule: str = "linear"
    init: str = "prior"
    step_size: float = 0.1
    target_acceptance: float = 0.65
    adapt: str | None = "data"
    adapt_rate: float = 0.1
    jitter: float = 0.2
    pilot_chains: int = 0
    batch_size: int | None = None
    replicates: int = 1

    def __post_init__(self) -> None:
        checks = [
            ("chains", self.chains >= 1, "must be >= 1"),
            ("temps", self.temps >= 2, "(the number of inverse temperatures) must be >= 2"),
            ("leapfrog", self.leapfrog >= 1, "(steps per HMC transition) must be >= 1"),
            ("schedule", self.schedule in SCHEDULES, f"must be one of {', '.join(sorted(SCHEDULES))}"),
            ("init", self.init in ("prior", "posterior"), "must be prior or posterior"),
            ("step_size", self.step_size > 0, "must be > 0"),
            ("target_acceptance", 0 < self.target_acceptance < 1, "must be in (0, 1)"),
            ("adapt", self.adapt in (None, "chain", "data", "all"), "must be data, chain, all or none"),
            ("adapt_rate", self.adapt_rate >= 0, "must be >= 0"),
            ("jitter", 0 <= self.jitter < 1, "must be in [0, 1)"),
            ("pilot_chains", self.pilot_chains >= 0, "must be >= 0"),
            ("batch_size", self.batch_size is None or self.batch_size >= 1, "must be >= 1"),
            ("replicates", self.replicates >= 1, "(independent runs per point) must be >= 1"),
        ]
        for name, ok, message in checks:
            if not ok:
                raise ConfigError(f"AIS option {name} {message}, got {getattr(self, name)!r}")

    def betas(self) -> Tensor:
        """The inverse temperatures `[T]` (float64)."""
        return make_schedule(self.schedule, self.temps)

    def ais_kwargs(self, batch_size: int | None = None) -> dict[str, Any]:
        """Keyword arguments for `vaelab.mcmc.ais(model, x, **kwargs)` (`replicates` is `ais_replicates`'s own
        argument); `batch_size` is used when the options set none."""
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

#: Other spellings accepted in overrides (the names the AIWAE objective and `ais()` use).
ALIASES = {"temperatures": "temps", "leapfrog_steps": "leapfrog", "target": "target_acceptance", "steps": "leapfrog"}


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
    `key=value` overrides of `AISOptions` fields (or their `ALIASES`), then `updates` (e.g. init="prior").
    `["cremer", "chains=10"]` is Cremer et al.'s protocol with 10 chains. Mistakes raise `ConfigError`."""
    tokens = list(tokens)
    preset = default
    if tokens and "=" not in tokens[0]:
        preset = tokens.pop(0)
    if preset not in PRESETS:
        hint = difflib.get_close_matches(preset, PRESETS, n=1)
        did = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(f"unknown AIS preset {preset!r}{did}; choose one of: {', '.join(PRESETS)}, or give key=value")
    hints = typing.get_type_hints(AISOptions)
    fields = [f.name for f in dataclasses.fields(AISOptions)]
    changes: dict[str, Any] = {}
    for token in tokens:
        if "=" not in token:
            raise ConfigError(f"AIS option {token!r} is not key=value (a preset name may only come first)")
        key, raw = token.split("=", 1)
        key = ALIASES.get(key.strip(), key.strip())
        if key not in fields:
            hint = difflib.get_close_matches(key, fields + list(ALIASES), n=1)
            did = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"unknown AIS option {key!r}{did}; valid options: {', '.join(fields)}")
        changes[key] = _coerce(key, raw, hints[key])
    changes.update({k: v for k, v in updates.items() if v is not None})
    return dataclasses.replace(PRESETS[preset], **changes)
