"""Build a model from its config section: the only place where config names meet classes."""

from __future__ import annotations

import math

from torch import Tensor, nn

# Importing the component packages registers their builders.
from vaelab import likelihoods, models, nets, objectives, posteriors, priors  # noqa: F401, E402
from vaelab.config import ModelConfig
from vaelab.registry import LIKELIHOODS, MODELS, NETWORKS, POSTERIORS, PRIORS


def _split(section: dict) -> tuple[str, dict]:
    options = dict(section)
    return options.pop("type"), options


def build_model(cfg: ModelConfig, event_shape: tuple[int, ...], train_data: Tensor | None = None) -> nn.Module:
    """encoder -> posterior family -> prior -> decoder -> likelihood, as `cfg` names them. `train_data`
    `[N, *event]` is offered to components that initialise from data (VampPrior's `init: data`)."""
    options = {k: v for k, v in vars(cfg).items()}
    kind = options.pop("type")
    options.update(options.pop("options"))
    return MODELS.build(kind, options, event_shape=tuple(event_shape), train_data=train_data)


class Amortized:
    """x -> q(z | x) through a model's encoder and posterior family; a plain callable (not a module), so a
    prior that uses it (VampPrior) does not own a second copy of the encoder's weights."""

    def __init__(self, encoder: nn.Module, family: nn.Module) -> None:
        self.encoder, self.family = encoder, family

    def __call__(self, x: Tensor):
        return self.family(self.encoder(x.flatten(1)))


@MODELS.register("vae")
def _vae(
    event_shape,
    latent_dim: int,
    encoder: dict,
    decoder: dict,
    posterior: dict,
    prior: dict,
    likelihood: dict,
    train_data: Tensor | None = None,
):
    lik = LIKELIHOODS.build(*_split(likelihood), event_shape=event_shape)
    enc = NETWORKS.build(*_split(encoder), in_features=math.prod(event_shape), out_features=None)
    post = POSTERIORS.build(*_split(posterior), in_features=enc.out_features, latent_dim=latent_dim)
    pri = PRIORS.build(
        *_split(prior),
        latent_dim=latent_dim,
        event_shape=event_shape,
        posterior=Amortized(enc, post),
        train_data=train_data,
    )
    dec = NETWORKS.build(*_split(decoder), in_features=latent_dim, out_features=lik.num_outputs)
    return models.VAE(enc, post, pri, dec, lik)
