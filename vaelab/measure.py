"""`vaelab.evaluate`, `vaelab.ais` and `vaelab.bdmc`: the estimators `vaelab evaluate` runs, for any model in Python.

A model needs only `posterior(x)` (a Distribution with batch `[B]`, event `[D]`) and `log_joint(x, z)` (`[*S, B]`):
a `vaelab.protocols.LatentModel`. A `DecodedModel` (vaelab's own: prior, likelihood, `parameters()`) is used as it
is; any other is seen through those two methods (`JointOnly`). AIS starts from the prior by default for a
`GenerativeModel` (a prior apart from p(x | z)), else from the model's q(z | x).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import Tensor, nn

from vaelab.errors import ConfigError
from vaelab.evaluation.loglik import evaluate_log_likelihood
from vaelab.mcmc import ais_replicates
from vaelab.mcmc.options import AISOptions, resolve
from vaelab.nets.modes import in_eval_mode
from vaelab.protocols import DecodedModel, GenerativeModel, LatentModel
from vaelab.stats import mean_se


class _FlatPrior:
    """log p(z) = 0: with `log_likelihood` = log p(x, z), log p(x | z) + log p(z) is still log p(x, z)."""

    @staticmethod
    def log_prob(z: Tensor) -> Tensor:
        return z.new_zeros(z.shape[:-1])


class _Width:
    """The decoder width `evaluate_log_likelihood` sizes its chunks by (`num_outputs`), for a model without a
    vaelab likelihood: the data's own size per point."""

    def __init__(self, num_outputs: int) -> None:
        self.num_outputs = num_outputs


class JointOnly:
    """A `LatentModel` seen through `posterior` and `log_joint` alone, with the methods the estimators call:
    log_likelihood = log p(x, z) and a flat prior term, so log-weights are unchanged; `parameters()` gives the
    device; `likelihood.num_outputs` is the data's size per point (`outputs`)."""

    def __init__(self, model: LatentModel, device: torch.device, outputs: int) -> None:
        self.model, self.prior, self.device = model, _FlatPrior(), device
        self.likelihood = _Width(outputs)

    def posterior(self, x: Tensor):
        return self.model.posterior(x)

    def log_joint(self, x: Tensor, z: Tensor) -> Tensor:
        return self.model.log_joint(x, z)

    log_likelihood = log_joint

    def parameters(self):
        return iter([torch.zeros((), device=self.device)])


def _device(model: Any, x: Tensor) -> torch.device:
    """The device of the model's first parameter (an `nn.Module`'s), else x's."""
    p = next(model.parameters(), None) if isinstance(model, nn.Module) else None
    return x.device if p is None else p.device


def as_estimable(model: Any, x: Tensor) -> DecodedModel | JointOnly:
    """`model` for the IS estimators (`evaluate_log_likelihood`, `active_units`, `stratified_summary`): a
    `DecodedModel` as it is, any other `LatentModel` as a `JointOnly` (x `[N, *event]` gives its width); a
    `ConfigError` for an object that is neither."""
    if isinstance(model, DecodedModel):
        return model
    if not isinstance(model, LatentModel):
        raise ConfigError(
            f"vaelab estimates log p(x) of a model with posterior(x) and log_joint(x, z); a {type(model).__name__} "
            "has not both"
        )
    return JointOnly(model, _device(model, x), math.prod(x.shape[1:]))


@in_eval_mode
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
    est = evaluate_log_likelihood(as_estimable(model, x), x, samples, batch_size, progress=progress)
    result: dict[str, Any] = {"is_samples": samples, **est.summary()}
    result["bits_per_dim"] = -result["log_likelihood"] / (math.prod(x.shape[1:]) * math.log(2))
    result["per_example"] = {"log_likelihood": est.log_likelihood, "elbo": est.elbo, "mc_se": est.mc_se, "ess": est.ess}
    return result


def _ais_options(model: Any, options: AISOptions | str | None, preset: str | None, settings: dict) -> AISOptions:
    """`options` (or `preset`) with `settings` (`vaelab.mcmc.options.resolve`); `init` defaults to "prior" for a
    `GenerativeModel` (a prior and a likelihood term), else "posterior" (the model's q)."""
    if preset is not None and options is not None:
        raise ConfigError("give either options or preset, not both")
    if "init" not in settings and not isinstance(options, AISOptions):
        settings["init"] = "prior" if isinstance(model, GenerativeModel) else "posterior"
    return resolve(options if options is not None else preset, settings)


@in_eval_mode
def ais(
    model: Any,
    x: Tensor,
    options: AISOptions | str | None = None,
    *,
    preset: str | None = None,
    progress: bool = True,
    **settings: Any,
) -> dict:
    """AIS estimate of log p(x) for x `[B, *event]` (`vaelab.mcmc.ais_replicates`): `options` an `AISOptions` or a
    preset name ("aiwae", "cremer"; also as `preset=`; default `AISOptions()`), `settings` its fields by name or
    alias (chains, temps, leapfrog, schedule, init, step_size, target_acceptance, adapt, replicates, seed, ...).
    Without options, `init` is "prior" for a model with a prior and "posterior" otherwise. Returns the summary
    `vaelab evaluate --ais` writes (`log_likelihood`, its se over data and Monte Carlo se, ESS, acceptance) plus
    `per_example` `log_likelihood` `[B]`.

    >>> import torch, vaelab
    >>> from vaelab.models import LinearGaussian
    >>> model = LinearGaussian.random(3, 2, dtype=torch.float32)
    >>> out = vaelab.ais(model, torch.randn(4, 3), chains=4, temps=20, progress=False)
    >>> out["n"], out["per_example"]["log_likelihood"].shape
    (4, torch.Size([4]))
    """
    opts = _ais_options(model, options, preset, settings)
    x = x.to(_device(model, x))
    run = ais_replicates(model, x, opts, progress=progress)
    return {**run.summary(), "per_example": {"log_likelihood": run.log_likelihood.cpu()}}


@in_eval_mode
def bdmc(
    model: Any,
    x: Tensor | int,
    options: AISOptions | str | None = None,
    *,
    z: Tensor | None = None,
    preset: str | None = None,
    progress: bool = True,
    **settings: Any,
) -> dict:
    """Bidirectional Monte Carlo (Grosse, Ghahramani & Adams 2015): forward AIS (a stochastic lower bound of
    log p(x)) and reverse AIS from exact posterior samples (an upper bound) on data simulated from the model; their
    gap bounds the error of AIS with `options` on such data (`vaelab.mcmc.bdmc`).

    `x` an int n simulates n points, z* ~ p(z), x ~ p(x | z*) (`vaelab.mcmc.simulate`: the model's own `simulate`,
    else its prior, decoder and likelihood); a tensor `[B, *event]` needs the latents `z` `[B, D]` that generated it.
    `options`, `preset` and `settings` as `vaelab.ais` (`replicates` must be 1; with a `seed`, the simulation uses
    `seed + 2`, forward and reverse AIS `seed` and `seed + 1`). Returns `lower`, `upper`, `gap`
    (means over points), `gap_se`, `per_chain_gap`, `n`, plus `per_example` `lower`, `upper`, `gap` `[B]`.

    >>> import torch, vaelab
    >>> from vaelab.models import LinearGaussian
    >>> model = LinearGaussian.random(3, 2, dtype=torch.float64)
    >>> out = vaelab.bdmc(model, 4, chains=4, temps=20, progress=False)
    >>> out["n"], out["per_example"]["gap"].shape
    (4, torch.Size([4]))
    """
    from vaelab.mcmc import bdmc as run_bdmc
    from vaelab.mcmc import simulate

    opts = _ais_options(model, options, preset, settings)
    if isinstance(x, int) and not isinstance(x, bool):
        if x < 1:
            raise ConfigError(f"BDMC needs at least one simulated point, got {x}")
        simulation = dataclasses.replace(opts, seed=None if opts.seed is None else opts.seed + 2)
        with simulation.random_state(_device(model, torch.empty(0))):  # not the AIS runs' streams (seed, seed + 1)
            x, z = simulate(model, x)
    elif z is None:
        raise ConfigError("BDMC needs the latents that generated x (z=...), or an int n to simulate n points")
    device = _device(model, x)
    r = run_bdmc(model, x.to(device), z.to(device), opts, progress=progress)
    gap = r.gap
    return {
        **r.summary(),
        "gap_se": mean_se(gap)[1],
        "per_example": {"lower": r.lower.cpu(), "upper": r.upper.cpu(), "gap": gap.cpu()},
    }


def gaps(model: nn.Module, x: Tensor, *, progress: bool = True, **settings: Any) -> dict:
    """The inference gap of `model` on x `[N, *event]` and its parts (Cremer, Li & Duvenaud 2018, Table 1):
    inference = log p(x) - L[q], approximation = log p(x) - L[q*], amortization = L[q*] - L[q], with q* fitted
    per data point (`vaelab.evaluation.gaps.measure_gaps`). `settings` are the `gaps` keys of a config (families,
    init, samples, lr, check_every, patience, max_steps, batch_size, eval_samples, ais_chains, ais_temperatures,
    ais_leapfrog, ais_init, flow), checked as a config's are. Returns the summary `vaelab gaps` writes to
    `gaps.json` (means and standard errors in nats) plus `per_example` `[N]` tensors.

    >>> import torch, vaelab
    >>> from vaelab.models import LinearGaussian
    >>> model = LinearGaussian.random(3, 2, dtype=torch.float32)
    >>> out = vaelab.gaps(model, torch.randn(4, 3), families=["ffg"], max_steps=20, eval_samples=50,
    ...                   ais_temperatures=0, progress=False)
    >>> out["n"], out["trained_family"], sorted(out["per_example"])[:2]
    (4, 'ffg', ['elbo', 'elbo_q_star_ffg'])
    """
    from vaelab.config import config_from_dict
    from vaelab.evaluation.gaps import measure_gaps

    if not isinstance(model, nn.Module) or not isinstance(model, LatentModel):
        raise ConfigError(
            "gaps needs a vaelab-style model: an nn.Module with posterior(x), log_joint(x, z), latent_dim"
        )
    result = measure_gaps(model, x, config_from_dict({"gaps": settings}).gaps, progress=progress)
    assert result is not None  # one process
    per_example = {"log_p_hat": result.log_p, "iwae": result.iwae, "elbo": result.elbo}
    per_example.update({f"elbo_q_star_{f}": v for f, v in result.local_elbo.items()})
    return {**result.summary(), "per_example": per_example}
