"""AIWAE: the annealed importance weighted auto-encoder (Ding & Freedman, Algorithm 1).

The generative parameters theta (decoder, likelihood, prior) follow an AIS estimate of grad_theta log p(x)
(eqs. 9-10 with AIS in place of importance sampling): K chains start at z_k^0 ~ q(z | x) and anneal through
f_t = q(z | x)^(1 - beta_t) p(x, z)^beta_t, beta_t = t / (T - 1), with one HMC transition of L leapfrog steps
per temperature (`vaelab.mcmc.anneal`), giving log-weights log w_k (eq. 8) and final states z_k; then

    delta_theta = sum_k w~_k grad_theta log p(x, z_k),   w~_k = w_k / sum_i w_i.

The inference parameters phi (encoder, posterior family) follow the reparameterised ELBO (eq. 2):
delta_phi = grad_phi L(theta, phi). The chains are never differentiated (z_k, w~_k and q in the chain are
detached), so memory does not grow with T. With T = 1 there is no annealing: w_k = p(x, z_k) / q(z_k | x)
and delta_theta is IWAE-K's decoder gradient (eq. 5) exactly.

The step size of each temperature eps_t (t = 1..T-1) is fixed within a step (so each step's AIS weights are
exact for its kernels) and adapted between training steps toward the target acceptance (the paper: 0.6),
log eps_t += rate * (acceptance_t - target), from the acceptance averaged over the step's chains and points.

Algorithm 1 updates theta and then computes the ELBO gradient at the new theta; here both gradients are
taken at the same parameters and applied in one Adam step with two parameter groups (`param_groups`, each
with its own learning-rate scale): Adam is per-parameter, so this is the paper's two optimisers, up to the
order of the two half-steps (a difference of one step's update, O(lr)).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from vaelab.errors import ConfigError
from vaelab.mcmc.hmc import StepSizeAdaptation
from vaelab.mcmc.schedules import make_schedule
from vaelab.objectives.bounds import ELBO, Objective, logmeanexp


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(generative theta, inference phi): phi are the parameters of `model.encoder` and `model.posterior_family`
    (q(z | x)); theta every other parameter of the model (decoder, likelihood, prior). A prior that runs the
    encoder (VampPrior) does not make the encoder generative: it stays in phi."""
    try:
        inference_modules = (model.encoder, model.posterior_family)
    except AttributeError:
        raise ConfigError(
            f"objective aiwae needs a model with an encoder and a posterior family; {type(model).__name__} has none"
        ) from None
    phi = list({id(p): p for m in inference_modules for p in m.parameters()}.values())
    seen = {id(p) for p in phi}
    theta = [p for p in model.parameters() if id(p) not in seen]
    return theta, phi


def _gradient_carrier(value: Tensor, params: list[nn.Parameter]) -> Tensor:
    """A scalar sum_p <p, g_p> with g_p = d value / d p detached: its gradient is g_p for `params` and zero for
    every other parameter, whatever else `value` depends on."""
    params = [p for p in params if p.requires_grad]
    if not params:
        return value.new_zeros(())
    grads = torch.autograd.grad(value, params, allow_unused=True)
    terms = [(p * g).sum() for p, g in zip(params, grads, strict=True) if g is not None]
    return torch.stack(terms).sum() if terms else value.new_zeros(())


class AIWAE(Objective):
    """AIWAE (module docstring). Called as an objective it returns, per data point `[B]`, the AIS estimate
    log (1/K) sum_k w_k (a stochastic lower bound of log p(x); IWAE-K's bound when T = 1); the gradient of the
    batch mean of the returned values is (delta_theta, delta_phi) averaged over the batch.

    Args:
        chains: K, annealed importance samples per data point.
        temperatures: T, inverse temperatures 0 = beta_0 < ... < beta_{T-1} = 1 (T - 1 HMC transitions);
            T = 1: no annealing (plain importance weights).
        leapfrog_steps: L per HMC transition.
        schedule: a `vaelab.mcmc.SCHEDULES` name (the paper: linear).
        step_size: the initial eps_t of every temperature.
        target_acceptance, adapt_rate, min_step_size, max_step_size: the adaptation between steps (rate 0: fixed).
        jitter: each transition's step size is multiplied by U(1 - jitter, 1 + jitter) (`hmc_step`; paper: 0).
        encoder_lr_scale: the inference parameters' learning rate relative to `train.lr` (`param_groups`).
        analytic_kl: the encoder's ELBO with its KL in closed form (same expectation and gradient as the
            paper's one-sample estimate, less noise); False: the one-sample Monte Carlo ELBO.

    Registry name `aiwae`.

    >>> import torch, vaelab
    >>> from torch import nn
    >>> model = vaelab.VAE(nn.Flatten(), "diagonal_gaussian", "standard_normal", nn.Linear(2, 16), "bernoulli",
    ...                    latent_dim=2, event_shape=(1, 4, 4))
    >>> x = torch.bernoulli(torch.full((3, 1, 4, 4), 0.5))
    >>> objective = vaelab.AIWAE(chains=2, temperatures=3, leapfrog_steps=2)
    >>> objective.step_sizes, [group["name"] for group in objective.param_groups(model)]  # eps_t, t = 1..T-1
    (tensor([0.1000, 0.1000], dtype=torch.float64), ['generative', 'inference'])
    >>> objective(model, x).shape
    torch.Size([3])
    >>> _ = torch.manual_seed(0); aiwae = vaelab.AIWAE(chains=4, temperatures=1)(model, x)  # T = 1: IWAE-K
    >>> _ = torch.manual_seed(0); iwae = vaelab.IWAE(samples=4)(model, x)
    >>> torch.allclose(aiwae, iwae)
    True
    """

    name = "aiwae"

    def __init__(
        self,
        chains: int = 5,
        temperatures: int = 5,
        leapfrog_steps: int = 5,
        schedule: str = "linear",
        step_size: float = 0.1,
        target_acceptance: float = 0.6,
        adapt_rate: float = 0.1,
        min_step_size: float = 1e-4,
        max_step_size: float = 1.0,
        jitter: float = 0.0,
        encoder_lr_scale: float = 1.0,
        analytic_kl: bool = True,
    ) -> None:
        if chains < 1 or temperatures < 1 or leapfrog_steps < 1:
            raise ConfigError(
                f"aiwae needs chains, temperatures and leapfrog_steps >= 1, got {chains}, {temperatures}, "
                f"{leapfrog_steps}"
            )
        if not step_size > 0 or encoder_lr_scale < 0:
            raise ConfigError(f"aiwae needs step_size > 0, encoder_lr_scale >= 0; got {step_size}, {encoder_lr_scale}")
        self.chains, self.temperatures, self.leapfrog_steps = chains, temperatures, leapfrog_steps
        self.schedule, self.jitter, self.encoder_lr_scale = schedule, jitter, encoder_lr_scale
        self.betas = make_schedule(schedule, temperatures) if temperatures > 1 else None
        self.adaptation = (
            StepSizeAdaptation(target_acceptance, adapt_rate, min_step_size, max_step_size, per="chain")
            if adapt_rate > 0
            else None
        )
        self.step_sizes = torch.full((temperatures - 1,), float(step_size), dtype=torch.float64)
        self.elbo = ELBO(samples=1, analytic_kl=analytic_kl)
        self._acceptance_sum = torch.zeros(temperatures - 1, dtype=torch.float64)
        self._steps = 0
        self._rank_mean: Callable[[Tensor], Tensor] | None = None  # under DDP (`set_rank_mean`)

    # --- the two gradients ----------------------------------------------------------------------------
    def anneal(self, model, x: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """K chains per point from q(z | x) (detached) to p(x, z): log-weights `[K, B]`, final states `[K, B, D]`
        and the acceptance per temperature `[T-1]` (None when T = 1). Nothing here is differentiable."""
        from vaelab.mcmc.ais import anneal, posterior_path  # not at the top: vaelab.mcmc.ais imports objectives

        with torch.no_grad():
            q = model.posterior(x)
            z = q.sample((self.chains,))  # for a Gaussian q the draws IWAE's rsample makes with the same seed
        path = posterior_path(model, x, q)
        if self.betas is None:
            with torch.no_grad():
                log_q, log_joint = path.endpoints(z)
            return log_joint - log_q, z, None
        eps = self.step_sizes.to(device=x.device).reshape(-1, 1, 1, 1)  # fixed per temperature within the step
        result = anneal(path, z, self.betas, self.leapfrog_steps, eps, None, self.jitter, progress=False)
        return result.log_weights, result.z, result.acceptance

    def __call__(self, model, x: Tensor, beta: float = 1.0, entropy_weight: float = 1.0) -> Tensor:
        """log (1/K) sum_k w_k `[B]` carrying the AIWAE gradients (class docstring). KL warm-up and entropy
        annealing (`beta`, `entropy_weight`) weight the encoder's ELBO only; the decoder targets log p(x)."""
        log_w, z, acceptance = self.anneal(model, x)
        value = logmeanexp(log_w, 0)
        if acceptance is not None and model.training and torch.is_grad_enabled():
            self._adapt(acceptance)
        if not torch.is_grad_enabled():
            return value
        weights = torch.softmax(log_w, 0)  # w~_k [K, B], detached
        decoder = (weights * model.log_joint(x, z)).sum(0).mean()  # eq. 10: sum_k w~_k log p(x, z_k)
        encoder = self.elbo(model, x, beta, entropy_weight).mean()  # eq. 2, fresh reparameterised noise
        theta, phi = split_parameters(model)
        carrier = _gradient_carrier(decoder, theta) + _gradient_carrier(encoder, phi)
        return value + (carrier - carrier.detach())

    # --- optimiser groups, step-size state, metrics ---------------------------------------------------
    def param_groups(self, model: nn.Module) -> list[dict]:
        """Adam parameter groups: theta at the base learning rate, phi at `encoder_lr_scale` times it (the
        trainer multiplies each group's `lr_scale` into the scheduled learning rate)."""
        theta, phi = split_parameters(model)
        groups = [
            {"params": theta, "name": "generative", "lr_scale": 1.0},
            {"params": phi, "name": "inference", "lr_scale": self.encoder_lr_scale},
        ]
        return [g for g in groups if g["params"]]

    def set_rank_mean(self, mean: Callable[[Tensor], Tensor]) -> None:
        """Under DDP: adapt the step sizes to the acceptance `[T-1]` averaged over the ranks (that of the whole
        batch, the ranks' batches being of one size), so they stay the same on every rank."""
        self._rank_mean = mean

    def _adapt(self, acceptance: Tensor) -> None:
        acceptance = acceptance.detach()
        if self._rank_mean is not None:
            acceptance = self._rank_mean(acceptance)
        acc = acceptance.to("cpu", torch.float64)
        self._acceptance_sum += acc
        self._steps += 1
        if self.adaptation is not None:
            self.step_sizes = self.adaptation.update(self.step_sizes.reshape(-1, 1, 1), acc.reshape(-1, 1)).reshape(-1)

    def epoch_metrics(self) -> dict[str, float]:
        """Mean HMC acceptance over the temperatures and training steps since the last call, and the mean
        step size now (for metrics.jsonl); resets the running mean."""
        if not self._steps:
            return {}
        out = {
            "ais_acceptance": float(self._acceptance_sum.mean() / self._steps),
            "ais_step_size": float(self.step_sizes.mean()),
        }
        self._acceptance_sum.zero_()
        self._steps = 0
        return out

    def state_dict(self) -> dict[str, Tensor]:
        """The adapted step sizes `[T-1]` (saved with checkpoints so that a resumed run continues exactly)."""
        return {"step_sizes": self.step_sizes.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        sizes = state["step_sizes"].to(torch.float64)
        if sizes.shape != self.step_sizes.shape:
            raise ConfigError(
                f"the checkpoint's AIWAE step sizes are for {sizes.numel() + 1} temperatures, the config has "
                f"{self.temperatures}; resume with the run's own objective options"
            )
        self.step_sizes = sizes.clone()

    def __repr__(self) -> str:
        return (
            f"AIWAE(chains={self.chains}, temperatures={self.temperatures}, leapfrog_steps={self.leapfrog_steps}, "
            f"schedule={self.schedule!r})"
        )
