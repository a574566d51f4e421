"""Build a model from its config section: the only place where config names meet classes."""

from __future__ import annotations

import math

from torch import nn

# Importing the component packages registers their builders.
from vaelab import likelihoods, models, nets, objectives, posteriors, priors  # noqa: F401, E402
from vaelab.config import ModelConfig
from vaelab.registry import LIKELIHOODS, MODELS, NETWORKS, POSTERIORS, PRIORS


def _split(section: dict) -> tuple[str, dict]:
    options = dict(section)
    return options.pop("type"), options


def build_model(cfg: ModelConfig, event_shape: tuple[int, ...]) -> nn.Module:
    """encoder -> posterior family -> prior -> decoder -> likelihood, as `cfg` names them."""
    options = {k: v for k, v in vars(cfg).items()}
    kind = options.pop("type", "vae")
    return MODELS.build(kind, options, event_shape=tuple(event_shape))


@MODELS.register("vae")
def _vae(event_shape, latent_dim: int, encoder: dict, decoder: dict, posterior: dict, prior: dict, likelihood: dict):
    lik = LIKELIHOODS.build(*_split(likelihood), event_shape=event_shape)
    enc = NETWORKS.build(*_split(encoder), in_features=math.prod(event_shape), out_features=None)
    post = POSTERIORS.build(*_split(posterior), in_features=enc.out_features, latent_dim=latent_dim)
    pri = PRIORS.build(*_split(prior), latent_dim=latent_dim, event_shape=event_shape)
    dec = NETWORKS.build(*_split(decoder), in_features=latent_dim, out_features=lik.num_outputs)
    return models.VAE(enc, post, pri, dec, lik)
