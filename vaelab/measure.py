"""`vaelab.evaluate` and `vaelab.ais`: the estimators `vaelab evaluate` runs, for any model in Python.

A model needs only `posterior(x)` (a Distribution with batch `[B]`, event `[D]`) and `log_joint(x, z)` (`[*S, B]`);
`prior.log_prob`, `log_likelihood` and `parameters()` are used where present (a VAE), and stood in for otherwise
(`JointOnly`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import Tensor

from vaelab.errors import ConfigError
from vaelab.evaluation.loglik import evaluate_log_likelihood
from vaelab.mcmc import ais_replicates
from vaelab.mcmc.options import PRESETS, AISOptions


class _FlatPrior:
    """log p(z) = 0: with `log_likelihood` = log p(x, z), log p(x | z) + log p(z) is still log p(x, z)."""

    @staticmethod
    def log_prob(z: Tensor) -> Tensor:
        return z.new_zeros(z.shape[:-1])


class JointOnly:
    """A model seen through `posterior` and `log_joint` alone, with the methods the estimators call: log_likelihood
    = log p(x, z) and a flat prior term, so log-weights are unchanged; `parameters()` gives the device."""

    def __init__(self, model: Any, device: torch.device) -> None:
        self.model, self.prior, self.device = model, _FlatPrior(), device
        self.likelihood = getattr(model, "likelihood", None)

    def posterior(self, x: Tensor):
        return self.model.posterior(x)

    def log_joint(self, x: Tensor, z: Tensor) -> Tensor:
        return self.model.log_joint(x, z)

    log_likelihood = log_joint

    def parameters(self):
        return iter([torch.zeros((), device=self.device)])


def _device(model: Any, x: Tensor) -> torch.device:
    params = getattr(model, "parameters", None)
    p = next(iter(params()), None) if callable(params) else None
    return x.device if p is None else p.device


def _as_model(model: Any, x: Tensor) -> Any:
    full = all(hasattr(model, a) for a in ("prior", "log_likelihood", "likelihood", "parameters"))
    return model if full else JointOnly(model, _device(model, x))


def evaluate(model: Any, x: Tensor, samples: int = 5000, batch_size: int = 100, progress: bool = True) -> dict:
    """Importance-sampled log p(x) with q(z | x) as proposal (k = `samples`) and the ELBO, for x `[N, *event]`:
    the keys `vaelab evaluate` writes to `eval-<split>.json` (`is_samples`, `log_likelihood` with its se over data
    and Monte Carlo se, `elbo`, ESS statistics, non-finite counts, `bits_per_dim`), plus `per_example`: `[N]`
    tensors `log_likelihood`, `elbo`, `mc_se`, `ess`.

    >>> import torch, vaelab
    >>> from vaelab.models import LinearGaussian
    >>> model = LinearGaussian.random(3, 2, dtype=torch.float32)
    >>> out = vaelab.evaluate(model, torch.randn(10, 3), samples=100, progress=False)
    >>> out["n"], out["per_example"]["ess"].shape
    (10, torch.Size([10]))
    """
    model_ = _as_model(model, x)
    if model_ is not model and model_.likelihood is None:
        model_.likelihood = _Width(x)
    est = evaluate_log_likelihood(model_, x, samples, batch_size, progress=progress)
    result: dict[str, Any] = {"is_samples": samples, **est.summary()}
    result["bits_per_dim"] = -result["log_likelihood"] / (math.prod(x.shape[1:]) * math.log(2))
    result["per_example"] = {"log_likelihood": est.log_likelihood, "elbo": est.elbo, "mc_se": est.mc_se, "ess": est.ess}
    return result


class _Width:
    """The decoder width `evaluate_log_likelihood` sizes its chunks by, for a model without a likelihood."""

    def __init__(self, x: Tensor) -> None:
        self.num_outputs = math.prod(x.shape[1:])


def ais(model: Any, x: Tensor, preset: str | None = None, progress: bool = True, **options: Any) -> dict:
    """AIS estimate of log p(x) for x `[B, *event]` (`vaelab.mcmc.ais_replicates`): `options` are `AISOptions`
    fields (chains, temps, leapfrog, schedule, init, step_size, target_acceptance, adapt, replicates, ...) over
    `preset` ("aiwae", "cremer"; default: `AISOptions()`). `init` defaults to "prior" for a model with a prior
    and "posterior" otherwise. Returns the summary `vaelab evaluate --ais` writes (`log_likelihood`, its se over
    data and Monte Carlo se, ESS, acceptance) plus `per_example` `log_likelihood` `[B]`.

    >>> import torch, vaelab
    >>> from vaelab.models import LinearGaussian
    >>> model = LinearGaussian.random(3, 2, dtype=torch.float32)
    >>> out = vaelab.ais(model, torch.randn(4, 3), chains=4, temps=20, progress=False)
    >>> out["n"], out["per_example"]["log_likelihood"].shape
    (4, torch.Size([4]))
    """
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown AIS preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    base = AISOptions() if preset is None else PRESETS[preset]
    if "init" not in options:
        options["init"] = "prior" if hasattr(model, "prior") and hasattr(model, "log_likelihood") else "posterior"
    opts = dataclasses.replace(base, **options)
    x = x.to(_device(model, x))
    run = ais_replicates(model, x, opts.replicates, progress=progress, **opts.ais_kwargs())
    return {**run.summary(), "per_example": {"log_likelihood": run.log_likelihood.cpu()}}
