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
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from torch.distributions import Distribution
from tqdm.auto import tqdm

from vaelab.config import GapsConfig
from vaelab.distributions import detach_parameters
from vaelab.errors import ConfigError
from vaelab.evaluation.local_optimization import LOCAL_FAMILIES, local_family, optimize_local
from vaelab.evaluation.loglik import importance_sampled_log_likelihood
from vaelab.mcmc import ais
from vaelab.mcmc.options import ALIASES, AISOptions, resolve
from vaelab.posteriors import AuxiliaryFlowPosterior, DiagonalGaussian, FullCovarianceGaussian, PerPoint
from vaelab.protocols import AmortizedModel

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
            return {"mean": float(t.mean()), "se": float(t.std() / math.sqrt(n)) if n > 1 else float("nan")}

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


def _ais_bound(model, x: Tensor, start: Distribution | str, s: GapsConfig, progress: bool) -> Tensor:
    """AIS estimate `[B]` of log p(x) from `start` with the settings' chains, temperatures and leapfrog steps."""
    result = ais(model, x, ais_options(s), init=start, progress=progress)
    return result.log_likelihood.detach().cpu()


def measure_gaps(model, data: Tensor, settings: GapsConfig | None = None, progress: bool = True) -> GapResult:
    """L[q], L[q*_F] for each family F, and the lower bounds of log p(x) on `data` `[N, *event]` (module
    docstring), data points in batches of `settings.batch_size` (each batch one set of tensors). Every IWAE bound
    is also drawn a second time, independently; AIS runs a second time only if it is the chosen bound."""
    s = settings or GapsConfig()
    trained = trained_family(model)
    families = list(dict.fromkeys([*s.families, *([trained] if trained else [])]))
    for f in families:
        if f not in LOCAL_FAMILIES:
            raise ConfigError(f"gaps.families: unknown family {f!r}; choose from: {', '.join(LOCAL_FAMILIES)}")
    if s.init not in ("prior", "encoder"):
        raise ConfigError(f"gaps.init must be 'prior' or 'encoder', not {s.init!r}")
    if s.ais_init not in ("q_star", "prior"):
        raise ConfigError(f"gaps.ais_init must be 'q_star' or 'prior', not {s.ais_init!r}")
    template = None
    if not s.flow and trained == "flow":
        template = model.posterior_family  # the local flow gets the trained flow's architecture
    like = next(model.parameters()).new_zeros(())  # local parameters take the model's dtype and device
    device = like.device
    model.eval()
    start = time.perf_counter()
    parts: dict[str, list[Tensor]] = {}
    last_fits: dict[str, PerPoint] = {}
    ais_starts: list[tuple[str, Distribution | str]] = []

    def keep(key: str, t: Tensor) -> None:
        parts.setdefault(key, []).append(t.detach().cpu())

    def iwae(x: Tensor, q=None) -> Tensor:  # a fresh IWAE bound, independent of every other draw
        return importance_sampled_log_likelihood(model, x, s.eval_samples, q=q).log_likelihood

    batches = range(0, data.shape[0], s.batch_size)
    for i in tqdm(batches, desc="gaps", unit="batch", disable=None if progress else True):
        x = data[i : i + s.batch_size].to(device)
        n = x.shape[0]
        amortised = importance_sampled_log_likelihood(model, x, s.eval_samples)
        keep("iwae", amortised.log_likelihood)
        keep("elbo", amortised.elbo)
        keep("fresh:iwae", iwae(x))
        with torch.no_grad():
            q = model.posterior(x) if s.init == "encoder" else None
        fits, elbos = {}, {}
        for f in families:
            family = local_family(f, n, model.latent_dim, q, s.flow, like, template)
            fit = optimize_local(
                model, x, family, s.samples, s.lr, s.check_every, s.patience, s.max_steps, progress,
                desc=f"q*_{FAMILY_NAMES[f]}",
            )  # fmt: skip
            local = importance_sampled_log_likelihood(model, x, s.eval_samples, q=family())
            keep(f"elbo:{f}", local.elbo)
            keep(f"iwae:{f}", local.log_likelihood)
            keep(f"fresh:iwae:{f}", iwae(x, family()))
            keep(f"steps:{f}", fit.steps)
            keep(f"converged:{f}", fit.converged)
            fits[f], elbos[f] = family, local.elbo
        last_fits = fits
        if s.ais_temperatures >= 2:
            ais_starts.append(_ais_start(s.ais_init, fits, elbos))
            keep("ais", _ais_bound(model, x, ais_starts[-1][1], s, progress))
    cat = {k: torch.cat(v) for k, v in parts.items()}
    local_iwae = {f: cat[f"iwae:{f}"] for f in families}
    selection = _bound_names(cat["iwae"], cat.get("ais"), local_iwae)
    chosen = max(selection, key=lambda k: float(selection[k].mean()))
    if chosen == "AIS":  # rerun on fresh chains from the same starting distributions
        fresh = [
            _ais_bound(model, data[i : i + s.batch_size].to(device), init, s, progress)
            for i, (_, init) in zip(batches, ais_starts, strict=True)
        ]
        log_p = torch.cat(fresh)
    else:
        log_p = _bound_names(cat["fresh:iwae"], None, {f: cat[f"fresh:iwae:{f}"] for f in families})[chosen]
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
        ais_init=[name for name, _ in ais_starts],
        settings={**asdict(s), "families": families},
        seconds=time.perf_counter() - start,
        last_fits=last_fits,
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


def write_gap_report(result: GapResult, out: str | Path, name: str) -> list[Path]:
    """Write `gaps.json` (summary and settings), `gaps.md` (the table), `gaps.png` (bar chart) and
    `gaps-per-example.pt` (every per-point tensor) into `out`."""
    from vaelab.viz.gaps import save_gap_chart

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = result.summary()
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
