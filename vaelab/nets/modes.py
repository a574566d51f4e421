"""Module modes for computations that must not depend on them: `eval_mode` (a context) and `in_eval_mode` (a
decorator), which put every submodule in eval mode and restore each one's own mode after."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from torch import nn


@contextlib.contextmanager
def eval_mode(*models: Any) -> Iterator[None]:
    """Within the block, every `nn.Module` among `models` is in eval mode (batch norm normalises by its running
    statistics and leaves them as they are; dropout is off); each submodule's own mode is restored after. Objects
    that are not modules are left alone. Every estimator runs in it: an estimate must not depend on which points
    share a batch, nor change the model."""
    modes = [(m, m.training) for model in models if isinstance(model, nn.Module) for m in model.modules()]
    for m, _ in modes:
        m.training = False
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


F = TypeVar("F", bound=Callable[..., Any])


def in_eval_mode(fn: F) -> F:
    """`fn(model, ...)` run with `model` in `eval_mode` (a decorator for the estimators)."""

    @functools.wraps(fn)
    def run(model: Any, *args: Any, **kwargs: Any) -> Any:
        with eval_mode(model):
            return fn(model, *args, **kwargs)

    return run  # type: ignore[return-value]
