"""The inference gap and its parts (Cremer, Li & Duvenaud 2018, Table 1, eq. 10):

    inference     = log p(x) - L[q]
    approximation = log p(x) - L[q*]          (q* = the best q of the family for this x; KL(q* || p(z|x)))
    amortization  = L[q*] - L[q]              (what the encoder loses by sharing parameters across x)

with L the ELBO (eq. 3), q the encoder's posterior and q* fitted per data point (appendix 6.4,
`vaelab.evaluation.local_optimization`). The approximation and amortization gaps use q* of the family the
model was trained with (FFG for an FFG-trained model, the flow for a flow-trained one); the other families'
L[q*] are reported too (Table 2's rows L[q*_FFG], L[q*_Flow]).

log p(x) is estimated as in sec. 3.3 by the largest of the lower bounds at hand: the IWAE bound of q with
`eval_samples` (5000) samples, AIS (100 chains, 500 temperatures, 10 leapfrog steps), and the IWAE bounds of the
fitted q* (each also a stochastic lower bound of log p(x)). Two departures from the paper, both measured on a
50-D linear-Gaussian model (tests/test_gaps.py):

- AIS starts from the fitted q* (`ais_init: q_star`: the Gaussian family, FFG or FullCov, with the largest L[q*]
  on the batch) rather than from the prior: annealing from p(z) to p(z|x) in 50 dimensions with 500 temperatures
  falls short by nats, from q* it lands within a few hundredths. `ais_init: prior` is the paper's choice.
- "Largest" is decided on one set of draws (`lower_bounds`, the bounds' means over the data points) and the
  chosen bound's value is then taken from a fresh, independent set (`log_p_hat`): the maximum of several noisy
  estimates, read off the same draws that picked it, is biased upwards. One bound is used for every point: picking
  point by point would pick up each point's upward noise as well.

L[q] and L[q*] are `eval_samples`-sample ELBO estimates; their draws are independent of those of `log_p_hat`.

Each batch of points draws its noise from a stream seeded by its index (`vaelab.evaluation.batches`), so the batches
can be shared out over the ranks of a process group (`torchrun ... -m vaelab gaps`) and kept on disk as they are
done (the local optimisation is long: 82-87 min per 25 MNIST points on one CPU thread at the paper's settings), with the
same per-point values for any number of ranks and for a stopped and continued measurement.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from torch.distributions import Distribution

from vaelab import distributed
from vaelab.config import GapsConfig
from vaelab.data.dataset import derive_seed
from vaelab.distributions import detach_parameters
from vaelab.errors import ConfigError
from vaelab.evaluation.batches import (
    PartialResults,
    digest,
    model_digest,
    random_state,
    read_back,
    seeded_batches,
    shared_seed,
)
from vaelab.evaluation.local_optimization import LOCAL_FAMILIES, local_family, optimize_local
from vaelab.evaluation.loglik import importance_sampled_log_likelihood
from vaelab.mcmc import ais
from vaelab.mcmc.options import ALIASES, AISOptions, resolve
from vaelab.nets.modes import in_eval_mode
from vaelab.posteriors import AuxiliaryFlowPosterior, DiagonalGaussian, FullCovarianceGaussian, PerPoint
from vaelab.protocols import AmortizedModel
from vaelab.stats import mean_se

#: Display names of the families, as in the paper's tables.
FAMILY_NAMES = {"ffg": "FFG", "flow": "Flow", "full_covariance": "FullCov"}


def trained_family(model) -> str | None:
    """The local family matching the model's amortised posterior ("ffg", "flow", "full_covariance"), or None."""
    family = model.posterior_family if isinstance(model, AmortizedModel) else None
    for cls, name in (
        (AuxiliaryFlowPosterior, "flow"),
        (DiagonalGaussian, "ffg"),
        (FullCovarianceGaussian, "full_covariance"),
    ):
        if isinstance(family, cls):
            return name
    return None


@dataclass
class GapResult:
    """Per-data-point bounds `[N]` (CPU tensors) on N data points and how they were obtained.

    `iwae`, `elbo`: the encoder's q; `ais`: AIS (None if not run), from `ais_init[b]` in data batch b ("prior" or a
    family); `local_elbo[F]`, `local_iwae[F]`: the fitted q*_F; `local_steps[F]`, `local_converged[F]`: its
    optimisation per point. These are the selection draws; `log_p_bound` names the bound with the largest mean on
    them and `log_p` holds its values on fresh draws (module docstring). `last_fits`: the fitted families of the
    last batch of points (for plots).
    """

    trained: str | None
    iwae: Tensor
    elbo: Tensor
    ais: Tensor | None
    local_elbo: dict[str, Tensor]
    local_iwae: dict[str, Tensor]
    local_steps: dict[str, Tensor]
    local_converged: dict[str, Tensor]
    log_p_bound: str
    log_p: Tensor
    ais_init: list[str]
    settings: dict
    seconds: float
    last_fits: dict[str, PerPoint] = field(default_factory=dict, repr=False)
    batches_resumed: int = 0  # batches read back from partial results (`measure_gaps`)
    seconds_resumed: float = 0.0  # the computing time those batches recorded (`vaelab.evaluation.batches.read_back`)
    batches_untimed: int = 0  # of them, those that recorded none (written by an earlier vaelab)

    def lower_bounds(self) -> dict[str, Tensor]:
        """Every per-point stochastic lower bound of log p(x) at hand, by name, on the selection draws."""
        return _bound_names(self.iwae, self.ais, self.local_iwae)

    def log_p_hat(self) -> tuple[str, Tensor]:
        """The bound with the largest mean on the selection draws, and its per-point values `[N]` on fresh ones."""
        return self.log_p_bound, self.log_p

    def summary(self) -> dict:
        """Means and standard errors (over data points) of the bounds and gaps, in nats."""
        which, log_p = self.log_p_hat()
        n = log_p.numel()

        def stat(t: Tensor) -> dict[str, float]:
            mean, se = mean_se(t)
            return {"mean": mean, "se": se}

        out: dict = {
            "n": n,
            "trained_family": self.trained,
            "log_p_hat": {**stat(log_p), "bound": which, "from": "fresh draws, independent of the selection"},
            "lower_bounds": {k: stat(v) for k, v in self.lower_bounds().items()},
            "ais_init": sorted(set(self.ais_init)),
            "elbo_q": stat(self.elbo),
            "elbo_q_star": {f: stat(v) for f, v in self.local_elbo.items()},
            "steps": {f: {"mean": float(s.float().mean()), "max": int(s.max())} for f, s in self.local_steps.items()},
            "converged": {f: float(c.float().mean()) for f, c in self.local_converged.items()},
            "approximation_by_family": {f: stat(log_p - v) for f, v in self.local_elbo.items()},
            "inference": stat(log_p - self.elbo),
            "seconds": self.seconds,
            "seconds_total": self.seconds + self.seconds_resumed,  # with the batches read back
            "batches_resumed": self.batches_resumed,
            "batches_untimed": self.batches_untimed,
            "settings": self.settings,
        }
        if self.trained in self.local_elbo:
            star = self.local_elbo[self.trained]
            out["approximation"] = stat(log_p - star)
            out["amortization"] = stat(star - self.elbo)
        return out


def _bound_names(iwae, ais, local_iwae: dict) -> dict:
    """The lower bounds by display name: IWAE[q], AIS (if run), IWAE[q*_F] for every family F."""
    out = {"IWAE[q]": iwae}
    if ais is not None:
        out["AIS"] = ais
    out.update({f"IWAE[q*_{FAMILY_NAMES[f]}]": v for f, v in local_iwae.items()})
    return out


#: Families whose q* has a tractable density and a sampler, so AIS can start from it.
AIS_START_FAMILIES = ("ffg", "full_covariance")


def _ais_start(init: str, fits: dict[str, PerPoint], elbos: dict[str, Tensor]) -> tuple[str, Distribution | str]:
    """Where AIS starts for one batch: with `init` "q_star", the fitted Gaussian q* (`AIS_START_FAMILIES`) with
    the largest mean L[q*] on the batch, detached (the prior if none was fitted); else the prior."""
    candidates = [f for f in AIS_START_FAMILIES if f in fits]
    if init == "prior" or not candidates:
        return "prior", "prior"
    best = max(candidates, key=lambda f: float(elbos[f].mean()))
    with torch.no_grad():
        return best, detach_parameters(fits[best]())


def ais_options(s: GapsConfig) -> AISOptions:
    """The `gaps.ais_*` keys (`ais_chains`, `ais_temperatures`, `ais_leapfrog`) as `AISOptions`, through the one
    table of AIS spellings (`vaelab.mcmc.options.ALIASES`); the other settings are `AISOptions`' defaults."""
    return resolve(None, {k: v for k, v in asdict(s).items() if k in ALIASES})


def _check(model, s: GapsConfig) -> tuple[str | None, list[str]]:
    """The model's trained family and the families to fit (the settings' and the trained one); checks the settings."""
    trained = trained_family(model)
    families = list(dict.fromkeys([*s.families, *([trained] if trained else [])]))
    for f in families:
        if f not in LOCAL_FAMILIES:
            raise ConfigError(f"gaps.families: unknown family {f!r}; choose from: {', '.join(LOCAL_FAMILIES)}")
    if s.init not in ("prior", "encoder"):
        raise ConfigError(f"gaps.init must be 'prior' or 'encoder', not {s.init!r}")
    if s.ais_init not in ("q_star", "prior"):
        raise ConfigError(f"gaps.ais_init must be 'q_star' or 'prior', not {s.ais_init!r}")
    return trained, families


class _Batch:
    """One batch of points' gap measurement (`measure_gaps`), as a dict of CPU tensors and strings that a partial
    result keeps and a gather sends: `values` (per-point `[B]` tensors by key), `ais_init` (where AIS started),
    `ais_start` (that fitted q*'s state, to rerun AIS from it), `fits` (every fitted family's state; last batch)."""

    def __init__(self, model, s: GapsConfig, families: list[str], progress: bool) -> None:
        self.model, self.s, self.families, self.progress = model, s, families, progress
        self.template = None
        if not s.flow and trained_family(model) == "flow":
            self.template = model.posterior_family  # the local flow gets the trained flow's architecture
        self.like = next(model.parameters()).new_zeros(())  # local parameters take the model's dtype and device

    def family(self, f: str, x: Tensor, state: dict[str, Tensor] | None = None) -> PerPoint:
        """A new local family `f` for the points `x` (started per `gaps.init`), or one holding `state`."""
        with torch.no_grad():
            q = self.model.posterior(x) if self.s.init == "encoder" else None
        family = local_family(f, x.shape[0], self.model.latent_dim, q, self.s.flow, self.like, self.template)
        if state is not None:
            family.load_state_dict(state)
        return family

    def iwae(self, x: Tensor, q=None) -> Tensor:
        """A fresh IWAE bound `[B]` with `eval_samples` draws (of q, default the encoder's)."""
        return importance_sampled_log_likelihood(self.model, x, self.s.eval_samples, q=q).log_likelihood

    def ais(self, x: Tensor, start: Distribution | str) -> Tensor:
        """AIS estimate `[B]` of log p(x) from `start` with the settings' chains, temperatures and leapfrog steps."""
        result = ais(self.model, x, ais_options(self.s), init=start, progress=self.progress)
        return result.log_likelihood.detach().cpu()

    def measure(self, x: Tensor, keep_fits: bool) -> dict:
        """L[q], IWAE[q], and per family F the fitted q*_F's L[q*_F], IWAE[q*_F] and optimisation, each IWAE bound
        also redrawn (`fresh:`); AIS from `_ais_start` (if `ais_temperatures` >= 2)."""
        s, values = self.s, {}

        def keep(key: str, t: Tensor) -> None:
            values[key] = t.detach().cpu()

        amortised = importance_sampled_log_likelihood(self.model, x, s.eval_samples)
        keep("iwae", amortised.log_likelihood)
        keep("elbo", amortised.elbo)
        keep("fresh:iwae", self.iwae(x))
        fits, elbos = {}, {}
        for f in self.families:
            family = self.family(f, x)
            fit = optimize_local(
                self.model, x, family, s.samples, s.lr, s.check_every, s.patience, s.max_steps, self.progress,
                desc=f"q*_{FAMILY_NAMES[f]}",
            )  # fmt: skip
            local = importance_sampled_log_likelihood(self.model, x, s.eval_samples, q=family())
            keep(f"elbo:{f}", local.elbo)
            keep(f"iwae:{f}", local.log_likelihood)
            keep(f"fresh:iwae:{f}", self.iwae(x, family()))
            keep(f"steps:{f}", fit.steps)
            keep(f"converged:{f}", fit.converged)
            fits[f], elbos[f] = family, local.elbo
        out: dict = {"values": values, "ais_init": "none"}
        if s.ais_temperatures >= 2:
            name, start = _ais_start(s.ais_init, fits, elbos)
            keep("ais", self.ais(x, start))
            out["ais_init"] = name
            if name != "prior":
                out["ais_start"] = _state(fits[name])
        if keep_fits:
            out["fits"] = {f: _state(family) for f, family in fits.items()}
        return out

    def fresh_ais(self, x: Tensor, part: dict) -> Tensor:
        """AIS `[B]` on fresh chains from the batch's starting distribution (`part`, its `measure`)."""
        if part["ais_init"] == "prior":
            return self.ais(x, "prior")
        with torch.no_grad():
            start = detach_parameters(self.family(part["ais_init"], x, part["ais_start"])())
        return self.ais(x, start)


def _state(module: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


@in_eval_mode
def measure_gaps(
    model,
    data: Tensor,
    settings: GapsConfig | None = None,
    progress: bool = True,
    *,
    seed: int | None = None,
    shard: bool = False,
    partials: str | Path | None = None,
    deadline: float | None = None,
) -> GapResult | None:
    """L[q], L[q*_F] for each family F, and the lower bounds of log p(x) on `data` `[N, *event]` (module
    docstring), data points in batches of `settings.batch_size` (each batch one set of tensors). Every IWAE bound
    is also drawn a second time, independently; AIS runs a second time only if it is the chosen bound.

    Batch j draws all its noise (q*'s start, the optimisation's samples, IWAE, AIS) from seed `derive_seed(seed,
    j)`, its second AIS from `derive_seed(derive_seed(seed, "fresh AIS"), j)` (`vaelab.evaluation.batches`; `seed`
    drawn once from torch's generator when None), so the per-point values do not depend on how the batches are
    dealt out. `shard`: under a process group every rank calls this and rank r measures batches r, r + W, ...;
    the per-point selection values are all-gathered so that every rank picks the same bound, then the fresh AIS
    is shared out likewise and gathered on rank 0. `partials`: a directory where each batch's result is kept as it
    is done (`PartialResults`; `selection/` and `fresh-ais/`), so that calling this again with the same settings
    continues (other settings raise `ConfigError`); remove it when the result is safe. `deadline` (a
    `time.monotonic()` reading; needs `partials`): stop with `OutOfTime` rather than start a batch that would end
    after it, by the recorded times of the batches of the same phase. Returns the `GapResult`
    (equal for any number of ranks and for a continued call), on rank 0; None on the other ranks."""
    s = settings or GapsConfig()
    trained, families = _check(model, s)
    seed = shared_seed(seed, shard=shard, resumable=partials is not None, what="gap measurement")
    rank = distributed.world()[0] if shard else 0
    batch = _Batch(model, s, families, progress and rank == 0)
    device = batch.like.device
    n, size = data.shape[0], s.batch_size
    used = {**asdict(s), "families": families, "seed": seed}
    stores: list[PartialResults | None] = [None, None]
    if partials is not None:
        key = {"evaluation": "gaps", **used, "n": n, "data": digest(data), "model": model_digest(model)}
        stores = [
            PartialResults(Path(partials) / "selection", key),
            PartialResults(Path(partials) / "fresh-ais", {**key, "evaluation": "gaps, fresh AIS"}),
        ]
    found = [read_back(store.directory) for store in stores if store is not None]  # before they are opened
    start = time.perf_counter()
    last = (n - 1) // size

    def first(points: slice, batch_seed: int) -> dict:
        with random_state(batch_seed, device):
            return batch.measure(data[points].to(device), keep_fits=points.start // size == last)

    parts = seeded_batches(
        first, n, size, seed, shard=shard, partials=stores[0], everywhere=True, progress=progress, desc="gaps",
        deadline=deadline,
    )  # fmt: skip
    assert parts is not None  # everywhere: every rank has every batch
    cat = {k: torch.cat([p["values"][k] for p in parts]) for k in parts[0]["values"]}
    local_iwae = {f: cat[f"iwae:{f}"] for f in families}
    selection = _bound_names(cat["iwae"], cat.get("ais"), local_iwae)
    chosen = max(selection, key=lambda k: float(selection[k].mean()))  # the same on every rank: the same values
    if chosen == "AIS":  # rerun on fresh chains from the same starting distributions

        def again(points: slice, batch_seed: int) -> dict:
            with random_state(batch_seed, device):
                return {"ais": batch.fresh_ais(data[points].to(device), parts[points.start // size])}

        fresh = seeded_batches(
            again, n, size, derive_seed(seed, "fresh AIS"), shard=shard, partials=stores[1], progress=progress,
            desc="gaps: fresh AIS", deadline=deadline,
        )  # fmt: skip
        if fresh is None:
            return None
        log_p = torch.cat([f["ais"] for f in fresh])
    elif rank != 0:
        return None
    else:
        log_p = _bound_names(cat["fresh:iwae"], None, {f: cat[f"fresh:iwae:{f}"] for f in families})[chosen]
    with random_state(seed, device):  # a new flow's random start is overwritten: leave the caller's stream alone
        x_last = data[last * size :].to(device)
        last_fits = {f: batch.family(f, x_last, state) for f, state in parts[last]["fits"].items()}
    return GapResult(
        trained=trained,
        iwae=cat["iwae"],
        elbo=cat["elbo"],
        ais=cat.get("ais"),
        local_elbo={f: cat[f"elbo:{f}"] for f in families},
        local_iwae=local_iwae,
        local_steps={f: cat[f"steps:{f}"] for f in families},
        local_converged={f: cat[f"converged:{f}"] for f in families},
        log_p_bound=chosen,
        log_p=log_p,
        ais_init=[p["ais_init"] for p in parts] if s.ais_temperatures >= 2 else [],
        settings=used,
        seconds=time.perf_counter() - start,
        last_fits=last_fits,
        batches_resumed=sum(f.batches for f in found),
        seconds_resumed=sum(f.seconds for f in found),
        batches_untimed=sum(f.untimed for f in found),
    )


# --- reports ------------------------------------------------------------------------------------------


def _fmt(stat: dict | None) -> str:
    return "" if stat is None else f"{stat['mean']:.2f} ± {stat['se']:.2f}"


def gaps_table(columns: list[tuple[str, dict]]) -> str:
    """A Markdown table like the paper's Table 2: one column per `(name, summary)`, rows log p^(x),
    L[q*_F] for every family, L[q] and the three gaps (mean ± se over data points, nats), then which bound
    gave log p^(x) and the share of points whose q* met the stopping rule (the rest hit `max_steps`)."""
    families = list(dict.fromkeys(f for _, s in columns for f in s["elbo_q_star"]))
    families.sort(key=lambda f: ["flow", "full_covariance", "ffg"].index(f) if f in FAMILY_NAMES else 9)
    rows = [("log p^(x)", [_fmt(s["log_p_hat"]) for _, s in columns])]
    rows += [(f"L_VAE[q*_{FAMILY_NAMES[f]}]", [_fmt(s["elbo_q_star"].get(f)) for _, s in columns]) for f in families]
    rows.append(("L_VAE[q]", [_fmt(s["elbo_q"]) for _, s in columns]))
    for key in ("approximation", "amortization", "inference"):
        rows.append((key.capitalize(), [_fmt(s.get(key)) for _, s in columns]))
    rows.append(("log p^(x) from", [s["log_p_hat"]["bound"] for _, s in columns]))
    stopped = [", ".join(f"{FAMILY_NAMES[f]} {100 * c:.0f}%" for f, c in s["converged"].items()) for _, s in columns]
    rows.append(("q* stopped by the rule", stopped))
    rows.append(("data points", [str(s["n"]) for _, s in columns]))
    head = "| | " + " | ".join(name for name, _ in columns) + " |\n|---|" + "---|" * len(columns) + "\n"
    return head + "".join(f"| {label} | " + " | ".join(vals) + " |\n" for label, vals in rows)


def write_gap_report(result: GapResult, out: str | Path, name: str, weights: dict | None = None) -> list[Path]:
    """Write `gaps.json` (summary and settings; `weights`, which weights of the model, if given), `gaps.md` (the
    table), `gaps.png` (bar chart) and `gaps-per-example.pt` (every per-point tensor) into `out`."""
    from vaelab.viz.gaps import save_gap_chart

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = result.summary() | ({"weights": weights} if weights is not None else {})
    column = f"{name} (q_{FAMILY_NAMES.get(result.trained or '', 'amortised')})"
    (out / "gaps.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "gaps.md").write_text(
        f"# Inference gaps: {name}\n\n{gaps_table([(column, summary)])}\n"
        "Nats, mean ± standard error over the data points (Cremer et al. 2018, Tables 1-2).\n"
    )
    per_point = {
        "log_p_hat": result.log_p,
        "iwae": result.iwae,
        "elbo": result.elbo,
        **({"ais": result.ais} if result.ais is not None else {}),
        **{f"elbo_q_star_{f}": v for f, v in result.local_elbo.items()},
        **{f"iwae_q_star_{f}": v for f, v in result.local_iwae.items()},
        **{f"steps_{f}": v for f, v in result.local_steps.items()},
    }
    torch.save(per_point, out / "gaps-per-example.pt")
    chart = save_gap_chart([(column, summary)], out / "gaps.png")
    return [out / "gaps.json", out / "gaps.md", out / "gaps-per-example.pt", chart]
