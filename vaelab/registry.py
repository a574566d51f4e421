"""Name -> builder registries, so configs can name components and later issues can add them.

A builder is any callable; its keyword arguments are the options a config may set. Unknown options and
unknown names raise `ConfigError` with the valid choices, so a typo in a YAML file is a one-line error.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from vaelab.config import yaml_number
from vaelab.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of builders of one kind (posterior families, priors, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def deco(builder: Callable[..., T]) -> Callable[..., T]:
            if name in self._builders:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._builders[name] = builder
            return builder

        return deco

    def names(self) -> list[str]:
        return sorted(self._builders)

    def __contains__(self, name: str) -> bool:
        return name in self._builders

    def get(self, name: str) -> Callable[..., T]:
        if name not in self._builders:
            hint = difflib.get_close_matches(name, self._builders, n=1)
            did = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"unknown {self.kind} {name!r}{did}; choose one of: {', '.join(self.names())}")
        return self._builders[name]

    def build(self, name: str, options: dict[str, Any] | None = None, **context: Any) -> T:
        """Call builder `name` with the user's `options` plus those `context` values it accepts (the
        library supplies e.g. `latent_dim`, `event_shape`). Unknown options raise `ConfigError`."""
        builder = self.get(name)
        options = check_options(builder, dict(options or {}), f"{self.kind} {name!r}", reserved=context)
        params = inspect.signature(builder).parameters
        takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        context = {k: v for k, v in context.items() if takes_all or k in params}
        return builder(**context, **options)


def check_options(
    fn: Callable[..., Any], options: dict[str, Any], what: str, reserved: dict | None = None
) -> dict[str, Any]:
    """`options` with strings that spell numbers ("1e6": YAML 1.1 reads it as a string) read as the numbers that
    `fn`'s annotations or defaults ask for (whole floats as ints); `ConfigError` if a key is one `fn` does not take
    (or one the library sets), or a value that must be a number (an integer) is none."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return options
    allowed = [n for n in params if n not in (reserved or {})]
    out = dict(options)
    for key, value in options.items():
        if key in (reserved or {}):
            raise ConfigError(f"option {key!r} of {what} is set by vaelab itself; remove it from the config")
        if key not in allowed:
            hint = difflib.get_close_matches(key, allowed, n=1)
            did = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"unknown option {key!r} for {what}{did}; valid options: {', '.join(allowed)}")
        kind = _numeric_kind(params[key])
        if kind is not None and isinstance(value, (str, float)):
            number = yaml_number(value)
            if isinstance(number, str):
                raise ConfigError(f"option {key!r} of {what} must be a number, got {value!r}")
            if kind is int and not number.is_integer():
                raise ConfigError(f"option {key!r} of {what} must be a whole number, got {value!r}")
            out[key] = int(number) if kind is int else number
    return out


def _numeric_kind(param: inspect.Parameter) -> type | None:
    """`int` or `float` if the parameter takes a number and no string (by its annotation, else its default)."""
    note = param.annotation
    if note is inspect.Parameter.empty:
        default = param.default
        return type(default) if type(default) in (int, float) else None
    text = note if isinstance(note, str) else getattr(note, "__name__", str(note))
    kinds = {part.strip() for part in text.replace("Optional[", "").replace("]", "").split("|")}
    if kinds & {"str", "Any", "typing.Any"}:
        return None
    return float if "float" in kinds else int if "int" in kinds else None


NETWORKS: Registry = Registry("network")
POSTERIORS: Registry = Registry("posterior family")
PRIORS: Registry = Registry("prior")
LIKELIHOODS: Registry = Registry("likelihood")
OBJECTIVES: Registry = Registry("objective")
MODELS: Registry = Registry("model")
LR_SCHEDULES: Registry = Registry("learning-rate schedule")
