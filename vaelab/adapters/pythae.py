"""pythae models (Chadebec et al. 2022, "Pythae: Unifying Generative Autoencoders in Python") as vaelab models.

`PythaeModel(model)` wraps a trained pythae VAE so that `vaelab.evaluate` (IS), `vaelab.ais` and `vaelab.bdmc`
measure it. pythae's VAEs share one generative model and one posterior family, which the wrapper spells out:

    p(z) = N(0, I),   q(z | x) = N(mu(x), diag exp(log_var(x))),   p(x | z) from the decoder's reconstruction r(z):

- `reconstruction_loss: bce`: Bernoulli with probabilities r(z) (pythae's loss, logs clamped at -100 as
  `binary_cross_entropy` does);
- `reconstruction_loss: mse`: N(x; r(z), I), the unit-variance Gaussian of pythae's own `get_nll`.

With these, -pythae's loss is the ELBO E_q[log p(x | z)] - KL(q || p) (Kingma & Welling 2014, eq. 10; for mse up
to the constant D/2 log 2 pi, which the loss leaves out) and pythae's `get_nll` the IS estimate vaelab computes (up
to Monte Carlo error). The wrapper keeps the model's mode (call
`model.eval()` first if it has dropout or batch norm) and moves with it (`.to(device)`).

pythae is an optional dependency, installed without its pinned extras: `pip install --no-deps pythae` plus
`pydantic>=2` and `cloudpickle`, which it imports (or `pip install "vaelab[pythae]"`).

>>> import torch
>>> from pythae.models import VAE, VAEConfig
>>> import vaelab
>>> from vaelab.adapters.pythae import PythaeModel
>>> net = VAE(VAEConfig(input_dim=(1, 4, 4), latent_dim=2, reconstruction_loss="bce"))
>>> model = PythaeModel(net)
>>> x = torch.bernoulli(torch.full((3, 1, 4, 4), 0.3))
>>> model.posterior(x).batch_shape, model.log_joint(x, torch.zeros(5, 3, 2)).shape
(torch.Size([3]), torch.Size([5, 3]))
>>> vaelab.evaluate(model, x, samples=50, progress=False)["n"]
3

`pythae_vae(...)` builds the wrapped model from JSON arguments as a `@vaelab.model_factory`, so a `vaelab.fit` run of
it is rebuilt by `vaelab.load` and evaluated by `vaelab evaluate RUN` in a fresh process:

>>> model = pythae_vae(input_dim=[1, 4, 4], latent_dim=2, reconstruction_loss="bce")
>>> model.vaelab_factory["factory"]
'vaelab.adapters.pythae:pythae_vae'
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Bernoulli, Distribution, Independent, Normal

from vaelab.errors import ConfigError
from vaelab.priors.standard_normal import StandardNormal
from vaelab.recording import model_factory

#: pythae model classes (`model.model_name`) whose prior is N(0, I), whose q(z | x) is the encoder's diagonal
#: Gaussian and whose p(x | z) is the reconstruction loss's: the VAE and the variants that change only its objective.
SUPPORTED = frozenset(
    {
        "VAE",
        "BetaVAE",
        "BetaTCVAE",
        "DisentangledBetaVAE",
        "FactorVAE",
        "INFOVAE_MMD",
        "IWAE",
        "CIWAE",
        "MIWAE",
        "PIWAE",
    }
)
#: Why the others do not fit the wrapper.
UNSUPPORTED = {
    "VAMP": "its prior is a VampPrior, not N(0, I)",
    "VAE_IAF": "its posterior is a flow, not the encoder's Gaussian",
    "VAE_LinNF": "its posterior is a flow, not the encoder's Gaussian",
    "HVAE": "its posterior is a Hamiltonian flow",
    "RHVAE": "its posterior and prior are Riemannian",
    "SVAE": "its latents lie on a hypersphere",
    "PoincareVAE": "its latents lie in a Poincare ball",
    "MSSSIM_VAE": "its reconstruction loss (MS-SSIM) is not a likelihood",
    "VAEGAN": "its reconstruction loss is a discriminator's feature distance, not a likelihood",
    "Adversarial_AE": "its prior is matched adversarially, not by a likelihood",
}
LIKELIHOODS = {"bce": "bernoulli", "mse": "gaussian"}


class PythaeModel(nn.Module):
    """A pythae VAE (`pythae.models.VAE` or a variant in `SUPPORTED`) as a vaelab latent variable model.

    `likelihood` overrides the one its `reconstruction_loss` implies ("bernoulli" or "gaussian"); `scale` is the
    Gaussian's standard deviation (pythae: 1). Shapes: x `[B, *input_dim]`, z `[*S, B, D]`.
    """

    def __init__(self, model: nn.Module, likelihood: str | None = None, scale: float = 1.0) -> None:
        super().__init__()
        name = getattr(model, "model_name", type(model).__name__)
        if name in UNSUPPORTED:
            raise ConfigError(f"pythae {name} cannot be wrapped: {UNSUPPORTED[name]}")
        if name not in SUPPORTED:
            raise ConfigError(f"pythae {name} is not a supported VAE; supported: {', '.join(sorted(SUPPORTED))}")
        config = model.model_config
        loss = getattr(config, "reconstruction_loss", "mse")
        self.likelihood_name = likelihood or LIKELIHOODS.get(loss, "")
        if self.likelihood_name not in ("bernoulli", "gaussian"):
            raise ConfigError(f"pythae reconstruction loss {loss!r} has no likelihood; pass likelihood=")
        if not scale > 0:
            raise ConfigError(f"the Gaussian likelihood's scale must be > 0, got {scale}")
        self.model, self.scale = model, float(scale)
        self.latent_dim = int(config.latent_dim)
        self.event_shape = tuple(int(d) for d in config.input_dim)
        param = next(model.parameters(), None)
        self.prior = StandardNormal(self.latent_dim)
        if param is not None:
            self.prior.to(device=param.device, dtype=param.dtype)

    def posterior(self, x: Tensor) -> Distribution:
        """q(z | x) = N(mu(x), diag exp(log_var(x))): batch `[B]`, event `[D]`."""
        out = self.model.encoder(x)
        return Independent(Normal(out.embedding, torch.exp(0.5 * out.log_covariance)), 1)

    def decode(self, z: Tensor) -> Tensor:
        """The decoder's reconstruction r(z) `[*S, B, *event]` for z `[*S, B, D]` (one batched decoder call)."""
        flat = z.reshape(-1, z.shape[-1])
        r = self.model.decoder(flat)["reconstruction"]
        return r.reshape(*z.shape[:-1], *self.event_shape)

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x | z) `[*S, B]`, summed over the event (module docstring)."""
        r = self.decode(z)
        if self.likelihood_name == "bernoulli":
            log_p = -F.binary_cross_entropy(r, x.expand_as(r), reduction="none")
        else:
            log_p = -0.5 * ((x - r) / self.scale).pow(2) - math.log(self.scale) - 0.5 * math.log(2 * math.pi)
        return log_p.flatten(z.dim() - 1).sum(-1)

    def log_joint(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x, z) = log N(z; 0, I) + log p(x | z) `[*S, B]`."""
        return self.prior.log_prob(z) + self.log_likelihood(x, z)

    def observation(self, r: Tensor) -> Distribution:
        """p(x | z) for reconstructions `r` `[*S, *event]`, event the data's."""
        n = len(self.event_shape)
        if self.likelihood_name == "bernoulli":
            return Independent(Bernoulli(probs=r.clamp(0, 1)), n)
        return Independent(Normal(r, torch.full_like(r, self.scale)), n)

    @torch.no_grad()
    def simulate(self, n: int) -> tuple[Tensor, Tensor]:
        """n joint draws: x ~ p(x | z*) `[n, *event]` with z* ~ N(0, I) `[n, D]` (for `vaelab.bdmc`)."""
        z = self.prior.sample(n)
        return self.observation(self.decode(z)).sample(), z

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True) -> Tensor:
        """n draws of x `[n, *event]` (the reconstructions r(z), z ~ p(z), with `mean`)."""
        z = self.prior.sample(n)
        r = self.decode(z)
        return r if mean else self.observation(r).sample()

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """E[x | z] = r(z) at one draw z ~ q(z | x), `[B, *event]` (the reconstruction grids of `vaelab sample`)."""
        return self.decode(self.posterior(x).sample())

    def extra_repr(self) -> str:
        return f"likelihood={self.likelihood_name}, latent_dim={self.latent_dim}, event_shape={self.event_shape}"


@model_factory
def pythae_vae(model: str = "VAE", likelihood: str | None = None, scale: float = 1.0, **config: Any) -> PythaeModel:
    """A new pythae `model` (a `SUPPORTED` class name) with pythae's default networks, built from its config's
    JSON keys (`input_dim`, `latent_dim`, `reconstruction_loss`, ...: `pythae.models.<model>Config`), wrapped in
    `PythaeModel(likelihood=, scale=)`; recorded by `vaelab.fit` so that `vaelab.load` rebuilds it."""
    import pythae.models

    if model not in SUPPORTED:
        why = f": {UNSUPPORTED[model]}" if model in UNSUPPORTED else f"; supported: {', '.join(sorted(SUPPORTED))}"
        raise ConfigError(f"pythae {model} cannot be wrapped{why}")
    if "input_dim" in config:
        config["input_dim"] = tuple(config["input_dim"])
    net = getattr(pythae.models, model)(getattr(pythae.models, f"{model}Config")(**config))
    return PythaeModel(net, likelihood=likelihood, scale=scale)
