"""Learning-rate schedules as functions of the epoch and the optimizer step (derived state, so resuming needs
nothing saved). Each builder returns `factor(epoch, step) -> float`, both counted from 0; `step` is the number of
optimizer steps taken before the current one. A factor that changes within an epoch has `per_step = True`.
Config names meet these builders in `vaelab.config.registry.LR_SCHEDULES` (`vaelab.config.build.build_schedule`).

* constant;
* step: lr * gamma^(epoch // every), or lr * gamma^(step // every_steps) (SIWAE app. D.3: halved every
  15,000 training steps, TF's staircase exponential decay);
* iwae: Burda et al. (2016) sec. 5 / AIWAE sec. 5: 3^i passes over the data at lr * 10^(-i/7), for
  i = 0..stages-1 (8 stages = 3,280 epochs).
"""

from __future__ import annotations

from vaelab.errors import ConfigError


def constant():
    return lambda epoch, step=0: 1.0


def step(every: int | None = None, gamma: float = 0.5, every_steps: int | None = None):
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


def iwae(stages: int = 8, base: int = 3, decay: float = 7.0):
    ends, total = [], 0
    for i in range(stages):
        total += base**i
        ends.append(total)

    def factor(epoch: int, step: int = 0) -> float:
        i = next((i for i, end in enumerate(ends) if epoch < end), stages - 1)
        return 10.0 ** (-i / decay)

    factor.total_epochs = total  # type: ignore[attr-defined]
    return factor
