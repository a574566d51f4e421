"""Learning-rate schedules as functions of the epoch (derived state, so resuming needs nothing saved).

* constant;
* step: lr * gamma^(epoch // every);
* iwae: Burda et al. (2016) sec. 5 / AIWAE sec. 5: 3^i passes over the data at lr * 10^(-i/7), for
  i = 0..stages-1 (8 stages = 3,280 epochs).
"""

from __future__ import annotations

from vaelab.config.registry import LR_SCHEDULES
from vaelab.errors import ConfigError


@LR_SCHEDULES.register("constant")
def _constant():
    return lambda epoch: 1.0


@LR_SCHEDULES.register("step")
def _step(every: int = 100, gamma: float = 0.5):
    if every < 1:
        raise ConfigError("lr_schedule step: 'every' must be >= 1 epoch")
    return lambda epoch: gamma ** (epoch // every)


@LR_SCHEDULES.register("iwae")
def _iwae(stages: int = 8, base: int = 3, decay: float = 7.0):
    ends, total = [], 0
    for i in range(stages):
        total += base**i
        ends.append(total)

    def factor(epoch: int) -> float:
        i = next((i for i, end in enumerate(ends) if epoch < end), stages - 1)
        return 10.0 ** (-i / decay)

    factor.total_epochs = total  # type: ignore[attr-defined]
    return factor


def lr_factor(schedule: dict, epoch: int) -> float:
    """Multiplier of the base learning rate in `epoch` (0-based) for a config `{type: ..., options}`."""
    options = dict(schedule)
    return LR_SCHEDULES.build(options.pop("type", "constant"), options)(epoch)


def schedule_epochs(schedule: dict) -> int | None:
    """The number of epochs a schedule prescribes (iwae: sum of 3^i), or None if it sets none."""
    options = dict(schedule)
    fn = LR_SCHEDULES.build(options.pop("type", "constant"), options)
    return getattr(fn, "total_epochs", None)
