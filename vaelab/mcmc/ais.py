"""Annealed importance sampling (Neal 2001) with HMC transitions, batched over chains x data points.

Intermediate densities are geometric averages of an initial density f_0 (normalised, easy to sample) and
the target f_T (AIWAE, Ding & Freedman, eq. 7; Cremer et al. 2018, sec. 6.5):

    f_t(z) = f_0(z)^(1 - beta_t) f_T(z)^(beta_t),   0 = beta_0 < ... < beta_{T-1} = 1.

From z_0 ~ f_0, each temperature t = 1..T-1 first updates the log-weight at the current state and then
moves the state with an HMC transition T_t leaving f_t invariant (AIWAE eq. 8, Algorithm 1):

    log w <- log w + log f_t(z_{t-1}) - log f_{t-1}(z_{t-1})  [= (beta_t - beta_{t-1}) (log f_T - log f_0)(z_{t-1})],
    z_t ~ T_t(. | z_{t-1}),

so that E[w] = Z_T / Z_0. With f_0 = p(z) (init "prior"; f_t = p(z) p(x|z)^beta_t) or f_0 = q(z|x) (init
"posterior") and f_T = p(x, z), Z_T / Z_0 = p(x): log (1/C) sum_c w_c is a stochastic lower bound of log p(x)
(Jensen), unbiased in w. Run backwards (beta from 1 to 0) from exact posterior samples, the same recursion
estimates Z_0 / Z_T = 1 / p(x): a stochastic upper bound (Grosse et al. 2015; see `vaelab.mcmc.bdmc`).

Everything runs under `torch.no_grad()`; each gradient evaluation builds and frees its own small graph, so
memory does not grow with T. The loop over temperatures (and leapfrog steps) is the only sequential one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor
from torch.distributions import Distribution

from vaelab.errors import ConfigError
from vaelab.mcmc import kernel
from vaelab.mcmc.adaptation import StepSizeAdaptation, initial_step_size
from vaelab.mcmc.integrator import LogDensity, in_chunks, value_and_grad
from vaelab.mcmc.options import AISOptions, resolve
from vaelab.objectives.bounds import delta_method_se, logmeanexp
from vaelab.progress import progress as progress_bar
from vaelab.stats import mean_se
from vaelab.threads import CPU_CHUNK_ELEMENTS


@runtime_checkable
class AnnealingPath(Protocol):
    """An annealing path: `path(z, beta)` = log f_beta(z) `[C, B]` for z `[C, B, D]`, differentiable in z,
    with f_0 the (normalised) initial density and f_1 the target."""

    def __call__(self, z: Tensor, beta: float) -> Tensor: ...


class GeometricPath:
    """log f_beta(z) = (1 - beta) log f_0(z) + beta log f_T(z) (AIWAE eq. 7) from two log-densities
    `[C, B, D]` -> `[C, B]`. `endpoints(z)` gives (log f_0, log f_T), from which AIS takes its weight increments
    exactly as (beta_t - beta_{t-1}) (log f_T - log f_0) rather than as a difference of two large numbers."""

    def __init__(self, log_init: LogDensity, log_target: LogDensity) -> None:
        self.log_init, self.log_target = log_init, log_target

    def endpoints(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self.log_init(z), self.log_target(z)

    def __call__(self, z: Tensor, beta: float) -> Tensor:
        return _mix(*self.endpoints(z), beta)


def _mix(log_init: Tensor, log_target: Tensor, beta: float) -> Tensor:
    """(1 - beta) log f_0 + beta log f_T, exactly one end at beta = 0 or 1."""
    return torch.lerp(log_init, log_target, beta) if 0 < beta < 1 else (log_target if beta == 1 else log_init)


class PriorPath(GeometricPath):
    """f_0 = p(z), f_T = p(x, z): log f_beta(z) = log p(z) + beta log p(x | z) (Cremer et al. 2018, sec. 6.5),
    with log p(z) evaluated once per call. `x` `[B, *event]`; z `[C, B, D]`."""

    def __init__(self, model, x: Tensor) -> None:
        self.model, self.x = model, x
        super().__init__(model.prior.log_prob, lambda z: model.log_joint(x, z))

    def endpoints(self, z: Tensor) -> tuple[Tensor, Tensor]:
        log_prior = self.model.prior.log_prob(z)
        return log_prior, log_prior + self.model.log_likelihood(self.x, z)


def posterior_path(model, x: Tensor, q: Distribution | None = None) -> GeometricPath:
    """f_0 = q(z | x) (detached; the model's encoder unless `q` is given, batch `[B]`), f_T = p(x, z):
    f_beta = q^(1 - beta) p(x, z)^beta (AIWAE sec. 3)."""
    if q is None:
        with torch.no_grad():
            q = model.posterior(x)
    return GeometricPath(q.log_prob, lambda z: model.log_joint(x, z))


def model_path(model, x: Tensor, init: str | Distribution = "prior") -> tuple[GeometricPath, Callable[[int], Tensor]]:
    """The path from `init` ("prior", "posterior" (the encoder's q) or a distribution with batch `[B]`, event
    `[D]`) to p(x, z) for data `x` `[B, *event]`, and a sampler `n -> [n, B, D]` of the initial distribution."""
    B = x.shape[0]
    if isinstance(init, Distribution):
        if tuple(init.batch_shape) != (B,):
            raise ConfigError(f"AIS initial distribution must have batch shape [{B}], got {list(init.batch_shape)}")
        return posterior_path(model, x, init), lambda n: init.sample((n,))
    if init == "prior":
        return PriorPath(model, x), lambda n: model.prior.sample(n * B).reshape(n, B, -1)
    if init == "posterior":
        with torch.no_grad():
            q = model.posterior(x)
        return posterior_path(model, x, q), lambda n: q.sample((n,))
    raise ConfigError(f"AIS init must be 'prior', 'posterior' or a distribution, not {init!r}")


@dataclass
class AISResult:
    """AIS output for B data points and C chains.

    - `log_weights` `[C, B]`: per-chain log w (forward: estimates log p(x); reverse: log(1/p(x))).
    - `z` `[C, B, D]`: final states (approximate samples of f at the last beta).
    - `acceptance` `[T-1]`: HMC acceptance probability per temperature, averaged over chains and data points.
    - `step_size` `[C, B, 1]`: final per-chain step sizes.
    - `step_sizes` `[T-1, B]`: the step size used at each temperature (in the order run), averaged over the
      chains of each data point; `step_sizes[:, None, :, None]` is a fixed schedule for another run.
    - `reverse`: whether the schedule ran from the target back to the initial distribution.
    """

    log_weights: Tensor
    z: Tensor
    acceptance: Tensor
    step_size: Tensor
    step_sizes: Tensor
    reverse: bool = False

    @property
    def mean_step_size(self) -> Tensor:
        """Step size per temperature averaged over chains and data points `[T-1]`."""
        return self.step_sizes.mean(1)

    @property
    def log_likelihood(self) -> Tensor:
        """The estimate `[B]`: forward, log (1/C) sum_c w_c (stochastic lower bound of log p(x)); reverse,
        -log (1/C) sum_c w_c (stochastic upper bound, Grosse et al. 2015)."""
        lme = logmeanexp(self.log_weights, 0)
        return -lme if self.reverse else lme

    @property
    def per_chain_bound(self) -> Tensor:
        """The bound of a single chain, averaged over chains `[B]`: forward, mean_c log w_c (E <= log p(x): the AIS
        analogue of the ELBO; its gap is the KL between the forward and reverse chain distributions, O(1/T));
        reverse, -mean_c log w_c (E >= log p(x)). Looser than `log_likelihood`, but far less noisy relative to
        its gap, so the cleaner diagnostic of how the schedule is doing."""
        m = self.log_weights.mean(0)
        return -m if self.reverse else m

    @property
    def ess(self) -> Tensor:
        """Effective sample size (sum_c w_c)^2 / sum_c w_c^2 of the chains' weights `[B]`, in [1, C]."""
        lw = self.log_weights
        return torch.exp(2 * torch.logsumexp(lw, 0) - torch.logsumexp(2 * lw, 0))

    @property
    def log_weight_se(self) -> Tensor:
        """Delta-method standard error of `log_likelihood` `[B]` from the C chains' weights,
        sqrt((C / ESS - 1) / (C - 1)) (`vaelab.objectives.bounds.delta_method_se`). It never exceeds 1 and
        understates the error when few chains carry the weight (e.g. 0.67 against an actual -2.45 nats at D = 50
        from the prior): use independent replicates (`ais_replicates`) for an error bar."""
        lw = self.log_weights
        return delta_method_se(torch.logsumexp(lw, 0), torch.logsumexp(2 * lw, 0), lw.shape[0])

    @classmethod
    def cat(cls, parts: Sequence[AISResult]) -> AISResult:
        """One result for the points of `parts` (runs on consecutive batches of points, with the same schedule),
        concatenated in order; `acceptance` is their mean weighted by the number of points (columns) of each."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        sizes = torch.tensor([r.log_weights.shape[1] for r in parts], dtype=first.acceptance.dtype)
        w = (sizes / sizes.sum()).to(first.acceptance.device)
        return cls(
            log_weights=torch.cat([r.log_weights for r in parts], 1),
            z=torch.cat([r.z for r in parts], 1),
            acceptance=sum(wi * r.acceptance for wi, r in zip(w, parts, strict=True)),  # type: ignore[arg-type]
            step_size=torch.cat([r.step_size for r in parts], 1),
            step_sizes=torch.cat([r.step_sizes for r in parts], 1),
            reverse=first.reverse,
        )

    def summary(self) -> dict[str, float]:
        ll = self.log_likelihood
        n = ll.numel()
        return {
            "n": n,
            "log_likelihood": float(ll.mean()),
            "log_likelihood_se": mean_se(ll)[1],
            "ess_mean": float(self.ess.mean()),
            "acceptance_mean": float(self.acceptance.mean()),
        }


@dataclass
class ReplicatedAIS:
    """R independent AIS runs of C chains each on the same B points (`ais_replicates`). `result` is the single run
    they were made as, on the points repeated point-major (`[C, B * R]`: replicate r of point b is column b R + r).

    The estimate of log p(x_b) is the mean over replicates of each run's log (1/C) sum_c w_c; its Monte Carlo error
    is the spread of the R runs (`replicate_se`), which, unlike the delta method within one run, does not rest on
    the few chains that carry the weight. Neither includes the bias of AIS (a stochastic lower bound: E[log p^] <=
    log p(x)); BDMC bounds that on simulated data (`vaelab.mcmc.bdmc`)."""

    result: AISResult
    replicates: int

    @property
    def estimates(self) -> Tensor:
        """log (1/C) sum_c w_c of every replicate `[R, B]`."""
        return self.result.log_likelihood.reshape(-1, self.replicates).T

    @property
    def log_weights(self) -> Tensor:
        """Per-chain log w `[R, C, B]`."""
        C = self.result.log_weights.shape[0]
        return self.result.log_weights.reshape(C, -1, self.replicates).permute(2, 0, 1)

    @property
    def log_likelihood(self) -> Tensor:
        """The estimate `[B]`: mean over the R replicates."""
        return self.estimates.mean(0)

    @property
    def replicate_se(self) -> Tensor:
        """Standard error of `log_likelihood` over the replicates, std_r / sqrt(R) `[B]` (NaN for R = 1)."""
        R = self.replicates
        return self.estimates.std(0) / math.sqrt(R) if R > 1 else torch.full_like(self.log_likelihood, math.nan)

    @property
    def delta_se(self) -> Tensor:
        """The within-run delta-method se of `log_likelihood` `[B]`: sqrt(mean_r se_r^2 / R)."""
        se = self.result.log_weight_se.reshape(-1, self.replicates)
        return torch.sqrt(se.square().mean(1) / self.replicates)

    def summary(self) -> dict[str, float]:
        """Means over the B points for `eval-<split>-ais.json`: `log_likelihood`, its spread over data
        (`log_likelihood_se` = `log_likelihood_se_data`), its Monte Carlo se from the replicates, std_r(m_r) /
        sqrt(R) with m_r the mean over points of replicate r (`log_likelihood_mc_se_replicates`), and from the
        delta method within each run (`log_likelihood_mc_se_delta`, which understates it); `log_likelihood_mc_se` is
        the first when R > 1 (`mc_se_method`). ESS and acceptance of the chains; `n_nonfinite` points."""
        ll, R = self.log_likelihood, self.replicates
        n, se_data = ll.numel(), mean_se(ll)[1]
        replicate = mean_se(self.estimates.mean(1))[1]
        delta = float(self.delta_se.double().square().sum().sqrt() / n)
        ess = self.result.ess
        return {
            "n": n,
            "replicates": R,
            "log_likelihood": float(ll.mean()),
            "log_likelihood_se": se_data,
            "log_likelihood_se_data": se_data,
            "log_likelihood_mc_se": replicate if R > 1 else delta,
            "mc_se_method": "replicates" if R > 1 else "delta",
            "log_likelihood_mc_se_replicates": replicate,
            "log_likelihood_mc_se_delta": delta,
            "ess_mean": float(ess.mean()),
            "ess_median": float(ess.double().quantile(0.5)),
            "acceptance_mean": float(self.result.acceptance.mean()),
            "n_nonfinite": int((~torch.isfinite(ll)).sum()),
        }


def _start(
    path: AnnealingPath, z: Tensor, beta_prev: float, beta: float, logp_prev: Tensor | None, chunk: int | None = None
):
    """log f_beta(z), its gradient, and the weight increment log f_beta(z) - log f_beta_prev(z); `chunk` chains at
    a time (`in_chunks`)."""
    if isinstance(path, GeometricPath):

        def one(z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            with torch.enable_grad():
                z = z.detach().requires_grad_(True)
                log_init, log_target = path.endpoints(z)
                logp = _mix(log_init, log_target, beta)
                (grad,) = torch.autograd.grad(logp.sum(), z)
            return logp.detach(), grad, (beta - beta_prev) * (log_target - log_init).detach()

        return in_chunks(one, z, chunk)
    logp, grad = value_and_grad(lambda v: path(v, beta), z, chunk)
    if logp_prev is None:
        logp_prev = path(z, beta_prev)
    return logp, grad, logp - logp_prev


def _per_temperature(step_size: float | Tensor, temperatures: int) -> Tensor | None:
    """A fixed step-size schedule `[T-1, *]` (4-D tensor), or None for a single (possibly adapted) step size."""
    if not isinstance(step_size, Tensor) or step_size.dim() != 4:
        return None
    if step_size.shape[0] != temperatures:
        raise ConfigError(f"a per-temperature step-size schedule needs {temperatures} rows, got {step_size.shape[0]}")
    return step_size


@torch.no_grad()
def anneal(
    path: AnnealingPath,
    z: Tensor,
    betas: Sequence[float] | Tensor,
    leapfrog_steps: int = 10,
    step_size: float | Tensor = 0.1,
    adaptation: StepSizeAdaptation | None = None,
    jitter: float = 0.0,
    progress: bool = True,
    desc: str = "AIS",
    chunk: int | None = None,
) -> AISResult:
    """Run AIS chains `z` `[C, B, D]` (draws from the normalised f_{betas[0]}) along `betas` `[T]` (increasing:
    forward; decreasing: reverse) with one HMC transition of `leapfrog_steps` steps per temperature after each
    weight update (module docstring; AIWAE Algorithm 1). Returns an `AISResult` (log-weights `[C, B]`).

    `step_size`: a float or a tensor broadcastable to `[C, B, 1]`, adapted after each transition when
    `adaptation` is given; or a fixed schedule `[T-1, C|1, B|1, 1]`, one row per temperature (with
    `adaptation=None`). Adapting a chain's step size from its own acceptance makes its kernel depend on its
    own state, so it no longer leaves f_t exactly invariant. With per="chain" forward AIS came out ~0.03 nats
    high on average (4 runs, each 2-3.5 se; 50-D linear-Gaussian, T = 100-300), and reverse AIS ~0.1 nats
    *below* exact (10 se; 3-D model, T = 100, 20000 chains): the BDMC upper bound breaks. A fixed schedule
    (e.g. the `step_sizes` of a pilot run) keeps AIS exact; per="data" dilutes each chain's influence on its
    own step size by the number of chains (no bias detectable there, nor with a pilot or fixed step sizes).

    `chunk`: evaluate the gradients `chunk` chains at a time (cache-sized working sets on the CPU; the draws and
    so the results are the same, up to round-off).
    """
    b = [float(v) for v in betas]
    if len(b) < 2:
        raise ConfigError("AIS needs at least 2 temperatures")
    schedule = _per_temperature(step_size, len(b) - 1)
    if schedule is not None and adaptation is not None:
        raise ConfigError("a fixed per-temperature step-size schedule cannot also be adapted; pass adaptation=None")
    z = z.detach().clone()
    eps = initial_step_size(step_size if schedule is None else schedule[0], z)
    log_w = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
    acceptance = torch.empty(len(b) - 1, dtype=z.dtype, device=z.device)
    step_sizes = torch.empty(len(b) - 1, z.shape[1], dtype=z.dtype, device=z.device)
    logp_prev = None
    bar = progress_bar(range(1, len(b)), desc=desc, unit="temp", enabled=progress)
    refresh = max(1, (len(b) - 1) // 100)
    for t in bar:
        if schedule is not None:
            eps = initial_step_size(schedule[t - 1], z)
        logp, grad, increment = _start(path, z, b[t - 1], b[t], logp_prev, chunk)
        log_w += increment
        state = kernel.HMCState(z, logp, grad)
        target = lambda v, beta=b[t]: path(v, beta)  # noqa: E731
        state, info = kernel.step(state, target, eps, leapfrog_steps, jitter, chunk=chunk)
        z, logp_prev = state.z, state.log_density
        acceptance[t - 1] = info.accept_prob.mean()
        step_sizes[t - 1] = eps.mean((0, 2))
        if adaptation is not None:
            eps = adaptation.update(eps, info.accept_prob)
        if not bar.disable and (t % refresh == 0 or t == len(b) - 1):
            bar.set_postfix(acc=f"{float(acceptance[t - 1]):.3f}", eps=f"{float(eps.mean()):.3g}", refresh=False)
    bar.close()
    return AISResult(log_w, z, acceptance, eps, step_sizes, reverse=b[-1] < b[0])


def _step_for_batch(step_size: float | Tensor, sl: slice, B: int) -> float | Tensor:
    """The entries of a per-data-point step-size tensor `[..., B, 1]` belonging to data batch `sl`."""
    if isinstance(step_size, Tensor) and step_size.dim() >= 3 and step_size.shape[-2] == B and B > 1:
        return step_size[..., sl, :]
    return step_size


def chains_per_chunk(model: Any, o: AISOptions, points: int, device: torch.device) -> int | None:
    """Chains per gradient evaluation for `points` data points: `o.chunk_elements` (None: on the CPU
    `CPU_CHUNK_ELEMENTS`, elsewhere no chunks; 0: none) over points x the decoder's output width (at least
    1,024), at least 1; None for no chunks."""
    budget = o.chunk_elements
    if budget is None:
        budget = CPU_CHUNK_ELEMENTS if device.type == "cpu" else 0
    if budget == 0:
        return None
    width = max(getattr(getattr(model, "likelihood", None), "num_outputs", 0), 1024)
    return max(1, budget // (points * width))


#: Where a batch's chains start: (data batch, sampler of the initial distribution `n -> [n, B, D]`, n) -> `[n, b, D]`.
Start = Callable[[slice, Callable[[int], Tensor], int], Tensor]


def _run(model, x: Tensor, start: Start, o: AISOptions, reverse: bool, progress: bool, desc: str) -> AISResult:
    """`anneal` over data batches of `o.batch_size`: per batch, the path from `o.init` and `o.chains` chains
    `start(batch, sample_init, n)`; with `o.pilot_chains`, first a pilot run whose per-temperature step sizes the
    main run then uses fixed. `reverse` runs the schedule from beta = 1 down to 0."""
    if o.replicates != 1:
        raise ConfigError(f"AIS replicates={o.replicates}: run them with ais_replicates (or vaelab.ais)")
    B = x.shape[0]
    batch_size = B if o.batch_size is None else o.batch_size
    if isinstance(o.init, Distribution) and batch_size < B:
        raise ConfigError("AIS with an explicit initial distribution cannot batch the data; pass batch_size=None")
    betas = o.betas().flip(0) if reverse else o.betas()
    adaptation = o.adaptation()
    parts = []
    starts = range(0, B, batch_size)
    with o.random_state(x.device):
        for i, first in enumerate(starts):
            sl = slice(first, min(first + batch_size, B))
            path, sample_init = model_path(model, x[sl], o.init)
            name = desc if len(starts) == 1 else f"{desc} {i + 1}/{len(starts)}"
            step, adapt = _step_for_batch(o.step_size, sl, B), adaptation
            chunk = chains_per_chunk(model, o, sl.stop - sl.start, x.device)
            if o.pilot_chains:  # tune on independent chains, then run with their step sizes fixed: AIS stays exact
                pilot_z = start(sl, sample_init, o.pilot_chains)
                pilot = anneal(
                    path, pilot_z, betas, o.leapfrog, step, adaptation, o.jitter, progress, f"{name} (pilot)", chunk
                )
                step, adapt = pilot.step_sizes[:, None, :, None], None
            z0 = start(sl, sample_init, o.chains)
            parts.append(anneal(path, z0, betas, o.leapfrog, step, adapt, o.jitter, progress, name, chunk))
    return AISResult.cat(parts)


@torch.no_grad()
def ais(
    model: Any, x: Tensor, options: AISOptions | str | None = None, *, progress: bool = True, **settings: Any
) -> AISResult:
    """AIS estimate of log p(x) for `x` `[B, *event]` with `options.chains` chains per data point, all moved at once
    (module docstring; AIWAE eqs. 7-8, Algorithm 1): log (1/C) sum_c w_c, a stochastic lower bound of log p(x).

    `options`: an `AISOptions` (or a preset name; default `AISOptions()`), which says every setting: schedule,
    leapfrog steps, initial distribution (prior, the model's q, or a Distribution), step size and its adaptation,
    jitter, pilot chains, data batches, seed. `settings` override its fields by name or by any of their other
    spellings (`vaelab.mcmc.options.resolve`): `ais(model, x, chains=4, temps=20)`. `model` needs `posterior(x)`,
    `log_joint(x, z)` and, for init "prior", `prior` (`sample`, `log_prob`) and `log_likelihood(x, z)`.

    Returns an `AISResult`: log-weights `[C, B]`, `log_likelihood` `[B]`, `ess` `[B]`, final z `[C, B, D]`.

    >>> import torch
    >>> from vaelab.mcmc import AISOptions, ais
    >>> from vaelab.models import LinearGaussian
    >>> model = LinearGaussian.random(3, 2, dtype=torch.float64)
    >>> ais(model, torch.randn(5, 3, dtype=torch.float64), AISOptions(chains=8, temps=20), progress=False).z.shape
    torch.Size([8, 5, 2])
    """
    o = resolve(options, settings)
    return _run(model, x, lambda sl, sample_init, n: sample_init(n), o, False, progress, "AIS")


@torch.no_grad()
def ais_replicates(
    model: Any, x: Tensor, options: AISOptions | str | None = None, *, progress: bool = True, **settings: Any
) -> ReplicatedAIS:
    """`options.replicates` (R) independent runs of `ais(model, x, options)` as one: the B points `x` `[B, *event]`
    repeated point-major into `[B * R, *event]`, so that every replicate has its own chains, step-size adaptation
    and pilot, as R separate calls would, and all are annealed together. `options.batch_size` counts data points
    (each batch anneals `batch_size * R` rows); an `init` distribution or a per-point step-size tensor cannot be
    repeated: replicates then raise `ConfigError`. `settings` as `ais`. Returns a `ReplicatedAIS`."""
    o = resolve(options, settings)
    R = o.replicates
    if R > 1 and (isinstance(o.init, Distribution) or isinstance(o.step_size, Tensor)):
        raise ConfigError("AIS replicates need init 'prior' or 'posterior' and a float step_size")
    rows = x.repeat_interleave(R, 0) if R > 1 else x
    batch = None if o.batch_size is None else o.batch_size * R
    result = ais(model, rows, dataclasses.replace(o, replicates=1, batch_size=batch), progress=progress)
    return ReplicatedAIS(result, R)


@torch.no_grad()
def reverse_ais(
    model: Any,
    x: Tensor,
    z_posterior: Tensor,
    options: AISOptions | str | None = None,
    *,
    progress: bool = True,
    **settings: Any,
) -> AISResult:
    """Reverse AIS (Grosse, Ghahramani & Adams 2015): start from exact posterior samples `z_posterior` (`[B, D]`,
    shared by the chains of each data point, or `[C, B, D]`) and run the schedule of `options` backwards from
    p(z | x) to its initial distribution `init`. Each chain's weight prod_t f_{t-1}(z_t) / f_t(z_t) has mean
    1 / p(x), so `result.log_likelihood` = -log (1/C) sum_c w_c is a stochastic upper bound of log p(x).
    `options` and `settings` as `ais` (a pilot run starts from the same posterior samples); returns an `AISResult`
    with `reverse=True` whose per-temperature fields run from beta = 1 down to 0.
    """
    o = resolve(options, settings)
    B = x.shape[0]
    if z_posterior.dim() == 2:
        z_posterior = z_posterior.unsqueeze(0)
    if z_posterior.dim() != 3 or z_posterior.shape[1] != B or z_posterior.shape[0] not in (1, o.chains):
        raise ConfigError(f"z_posterior must be [B, D] or [chains, B, D] with B = {B}, got {list(z_posterior.shape)}")
    n_post = z_posterior.shape[0]

    def start(sl: slice, sample_init, n: int) -> Tensor:
        return z_posterior[torch.arange(n, device=z_posterior.device) % n_post][:, sl]

    return _run(model, x, start, o, True, progress, "reverse AIS")
