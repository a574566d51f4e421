"""Learning-rate schedules as functions of the epoch and the optimizer step (derived state, so resuming needs
nothing saved). Each builder returns `factor(epoch, step) -> float`, both counted from 0; `step` is the number of
optimizer steps taken before the current one. A factor that changes within an epoch has `per_step = True`.

* constant;
* step: lr * gamma^(epoch // every), or lr * gamma^(step // every_steps) (SIWAE app. D.3: halved every
  15,000 training steps, TF's staircase exponential decay);
* iwae: Burda et al. (2016) sec. 5 / AIWAE sec. 5: 3^i passes over the data at lr * 10^(-i/7), for
  i = 0..stages-1 (8 stages = 3,280 epochs).
"""

from __future__ import annotations

from vaelab.config.registry import LR_SCHEDULES
from vaelab.errors import ConfigError


@LR_SCHEDULES.register("constant")
def _constant():
    return lambda epoch, step=0: 1.0


@LR_SCHEDULES.register("step")
def _step(every: int | None = None, gamma: float = 0.5, every_steps: int | None = None):
    if (every is None) == (every_steps is None):
        raise ConfigError("lr_schedule step: set exactly one of 'every' (epochs) and 'every_steps' (optimizer steps)")
    if every_steps is not None:
        if every_steps < 1:
            raise ConfigError("lr_schedule step: 'every_steps' must be >= 1 step")

        def per_step(epoch: int, step: int = 0) -> float:
            return gamma ** (step // every_steps)

        per_step.per_step = True  # type: ignore[attr-defined]
        return per_step
    if every < 1:
        raise ConfigError("lr_schedule step: 'every' must be >= 1 epoch")
    return lambda epoch, step=0: gamma ** (epoch // every)


@LR_SCHEDULES.register("iwae")
def _iwae(stages: int = 8, base: int = 3, decay: float = 7.0):
    ends, total = [], 0
    for i in range(stages):
        total += base**i
        ends.append(total)

    def factor(epoch: int, step: int = 0) -> float:
        i = next((i for i, end in enumerate(ends) if epoch < end), stages - 1)
        return 10.0 ** (-i / decay)

    factor.total_epochs = total  # type: ignore[attr-defined]
    return factor


def build_schedule(schedule: dict):
    """`factor(epoch, step)` for a config `{type: ..., options}` (`ConfigError` if it is not a valid one)."""
    options = dict(schedule)
    return LR_SCHEDULES.build(options.pop("type", "constant"), options)


def lr_factor(schedule: dict, epoch: int, step: int = 0) -> float:
    """Multiplier of the base learning rate in `epoch` (0-based) before optimizer step `step` (0-based)."""
    return build_schedule(schedule)(epoch, step)


def schedule_epochs(schedule: dict) -> int | None:
    """The number of epochs a schedule prescribes (iwae: sum of 3^i), or None if it sets none."""
    return getattr(build_schedule(schedule), "total_epochs", None)
