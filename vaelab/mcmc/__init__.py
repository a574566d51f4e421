"""MCMC: batched HMC with per-chain step-size adaptation, AIS (forward and reverse), BDMC, annealing schedules.

Chains and data points share one tensor `z` `[C, B, D]`; targets are functions `[C, B, D]` -> `[C, B]`. HMC is split
by concern: `integrator` (leapfrog), `kernel` (pure `init` / `step`), `adaptation` (step size), and `hmc` (the
sampling loop). AIS, reverse AIS and BDMC take their settings as one `AISOptions` (`options`).
"""

from vaelab.mcmc import kernel
from vaelab.mcmc.adaptation import StepSizeAdaptation, initial_step_size
from vaelab.mcmc.ais import (
    AISResult,
    AnnealingPath,
    GeometricPath,
    PriorPath,
    ReplicatedAIS,
    ais,
    ais_replicates,
    anneal,
    model_path,
    posterior_path,
    reverse_ais,
)
from vaelab.mcmc.bdmc import BDMCResult, Simulator, bdmc, simulate
from vaelab.mcmc.hmc import HMCRun, HMCStep, hmc, hmc_step
from vaelab.mcmc.integrator import leapfrog, value_and_grad
from vaelab.mcmc.kernel import HMCInfo, HMCState
from vaelab.mcmc.options import ALIASES, PRESETS, AISOptions, parse_ais_options, resolve
from vaelab.mcmc.schedules import SCHEDULES, as_schedule, custom, geometric, linear, make_schedule, sigmoidal

__all__ = [
    "ALIASES",
    "PRESETS",
    "SCHEDULES",
    "AISOptions",
    "AISResult",
    "AnnealingPath",
    "BDMCResult",
    "GeometricPath",
    "HMCInfo",
    "HMCRun",
    "HMCState",
    "HMCStep",
    "PriorPath",
    "ReplicatedAIS",
    "Simulator",
    "StepSizeAdaptation",
    "ais",
    "ais_replicates",
    "anneal",
    "as_schedule",
    "bdmc",
    "custom",
    "geometric",
    "hmc",
    "hmc_step",
    "initial_step_size",
    "kernel",
    "leapfrog",
    "linear",
    "make_schedule",
    "model_path",
    "parse_ais_options",
    "posterior_path",
    "resolve",
    "reverse_ais",
    "sigmoidal",
    "simulate",
    "value_and_grad",
]
