"""Name -> builder registries, so configs can name components and later issues can add them.

A builder is any callable; its keyword arguments are the options a config may set. Unknown options and
unknown names raise `ConfigError` with the valid choices, so a typo in a YAML file is a one-line error.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar

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
        options = dict(options or {})
        check_options(builder, options, f"{self.kind} {name!r}", reserved=context)
        params = inspect.signature(builder).parameters
        takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        context = {k: v for k, v in context.items() if takes_all or k in params}
        return builder(**context, **options)


def check_options(fn: Callable[..., Any], options: dict[str, Any], what: str, reserved: dict | None = None) -> None:
    """Raise `ConfigError` if `options` holds a key that `fn` does not take (or one the library sets)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    allowed = [n for n in params if n not in (reserved or {})]
    for key in options:
        if key in (reserved or {}):
            raise ConfigError(f"option {key!r} of {what} is set by vaelab itself; remove it from the config")
        if key not in allowed:
            hint = difflib.get_close_matches(key, allowed, n=1)
            did = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"unknown option {key!r} for {what}{did}; valid options: {', '.join(allowed)}")


NETWORKS: Registry = Registry("network")
POSTERIORS: Registry = Registry("posterior family")
PRIORS: Registry = Registry("prior")
LIKELIHOODS: Registry = Registry("likelihood")
OBJECTIVES: Registry = Registry("objective")
MODELS: Registry = Registry("model")
LR_SCHEDULES: Registry = Registry("learning-rate schedule")
