"""Annealing schedules: inverse temperatures 0 = beta_0 < beta_1 < ... < beta_{T-1} = 1 (a `[T]` float64 tensor).

The intermediate densities of AIS are f_t = f_0^(1 - beta_t) f_T^(beta_t) (AIWAE, Ding & Freedman, eq. 7); the
schedule says where the T betas sit between the two ends.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from vaelab.errors import ConfigError


def _check_count(T: int, name: str) -> None:
    if isinstance(T, bool) or not isinstance(T, int) or T < 2:
        raise ConfigError(f"{name} schedule needs an integer number of temperatures T >= 2, got {T!r}")


def linear(T: int) -> Tensor:
    """beta_t = t / (T - 1), t = 0..T-1, evenly spaced (AIWAE sec. 5.1 and Algorithm 1)."""
    _check_count(T, "linear")
    return torch.arange(T, dtype=torch.float64) / (T - 1)


def sigmoidal(T: int, delta: float = 4.0) -> Tensor:
    """The rescaled sigmoid of Grosse et al. (2015) / Wu et al. (2017):

        s_t = sigmoid(delta * (2 t / (T - 1) - 1)),   beta_t = (s_t - s_0) / (s_{T-1} - s_0),

    dense near both ends, where log f_t changes fastest. `delta` > 0 sets how strongly (-> linear as delta -> 0).
    """
    _check_count(T, "sigmoidal")
    if not delta > 0 or not math.isfinite(delta):
        raise ConfigError(f"sigmoidal schedule needs delta > 0, got {delta!r}")
    s = torch.sigmoid(delta * torch.linspace(-1.0, 1.0, T, dtype=torch.float64))
    betas = (s - s[0]) / (s[-1] - s[0])
    betas[0], betas[-1] = 0.0, 1.0  # exact ends despite round-off
    return betas


def geometric(T: int, start: float = 1e-3) -> Tensor:
    """beta_0 = 0, then T - 1 geometrically spaced betas from `start` to 1: beta_t = start^((T-1-t)/(T-2)) for
    t >= 1 (constant ratio beta_{t+1} / beta_t; dense near 0, where a likelihood term dominates the prior's)."""
    _check_count(T, "geometric")
    if not 0 < start < 1:
        raise ConfigError(f"geometric schedule needs 0 < start < 1, got {start!r}")
    if T == 2:
        return torch.tensor([0.0, 1.0], dtype=torch.float64)
    tail = torch.logspace(math.log10(start), 0.0, T - 1, dtype=torch.float64)
    tail[-1] = 1.0
    return torch.cat([torch.zeros(1, dtype=torch.float64), tail])


def custom(betas: Sequence[float] | Tensor) -> Tensor:
    """A user-given schedule, validated: 1-D, finite, at least 2 values, beta_0 = 0, beta_{T-1} = 1, strictly
    increasing. Raises `ConfigError` saying what is wrong."""
    try:
        b = torch.as_tensor(betas, dtype=torch.float64).detach().cpu().clone()
    except (TypeError, ValueError, RuntimeError) as e:
        raise ConfigError(f"an annealing schedule must be a sequence of numbers: {e}") from None
    if b.dim() != 1 or b.numel() < 2:
        raise ConfigError(f"an annealing schedule must be a 1-D sequence of at least 2 betas, got {tuple(b.shape)}")
    if not torch.isfinite(b).all():
        raise ConfigError("an annealing schedule must be finite (no NaN or inf)")
    if b[0] != 0.0 or b[-1] != 1.0:
        raise ConfigError(f"an annealing schedule must start at 0 and end at 1, got {b[0].item()} ... {b[-1].item()}")
    steps = b.diff()
    if (steps <= 0).any():
        i = int(torch.nonzero(steps <= 0)[0])
        raise ConfigError(
            f"an annealing schedule must be strictly increasing: beta[{i}] = {b[i].item()} "
            f">= beta[{i + 1}] = {b[i + 1].item()}"
        )
    return b


#: Schedules by name, for configs and the command line: `make_schedule("sigmoidal", 1000, delta=4)`.
SCHEDULES: dict[str, Callable[..., Tensor]] = {"linear": linear, "sigmoidal": sigmoidal, "geometric": geometric}


def make_schedule(name: str, T: int, **options: float) -> Tensor:
    """The named schedule with T temperatures (`SCHEDULES`); unknown names raise `ConfigError`."""
    if name not in SCHEDULES:
        raise ConfigError(f"unknown annealing schedule {name!r}; choose one of: {', '.join(sorted(SCHEDULES))}")
    return SCHEDULES[name](T, **options)


def as_schedule(schedule: int | Sequence[float] | Tensor) -> Tensor:
    """An int T means `linear(T)` (AIWAE's default); a sequence or tensor is validated by `custom`."""
    if isinstance(schedule, int) and not isinstance(schedule, bool):
        return linear(schedule)
    return custom(schedule)
