"""MCMC: batched HMC with per-chain step-size adaptation, AIS (forward and reverse), BDMC, annealing schedules.

Chains and data points share one tensor `z` `[C, B, D]`; targets are functions `[C, B, D]` -> `[C, B]`.
"""

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
from vaelab.mcmc.bdmc import BDMCResult, bdmc, simulate
from vaelab.mcmc.hmc import (
    HMCRun,
    HMCStep,
    StepSizeAdaptation,
    hmc,
    hmc_step,
    leapfrog,
    value_and_grad,
)
from vaelab.mcmc.options import PRESETS, AISOptions, parse_ais_options
from vaelab.mcmc.schedules import SCHEDULES, as_schedule, custom, geometric, linear, make_schedule, sigmoidal

__all__ = [
    "PRESETS",
    "SCHEDULES",
    "AISOptions",
    "AISResult",
    "AnnealingPath",
    "BDMCResult",
    "GeometricPath",
    "HMCRun",
    "HMCStep",
    "PriorPath",
    "ReplicatedAIS",
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
    "leapfrog",
    "linear",
    "make_schedule",
    "model_path",
    "parse_ais_options",
    "posterior_path",
    "reverse_ais",
    "sigmoidal",
    "simulate",
    "value_and_grad",
]
