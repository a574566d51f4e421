"""Build a model from its config section: the only place where config names meet classes."""

from __future__ import annotations

import math

from torch import Tensor, nn

# Importing the component packages registers their builders.
from vaelab import likelihoods, models, nets, objectives, posteriors, priors  # noqa: F401, E402
from vaelab.config import ModelConfig
from vaelab.errors import ConfigError
from vaelab.models.cpvae import CPVAE, DECODER_INPUTS, check_pair, is_pair
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


def _amortized(event_shape: tuple[int, ...], latent_dim: int, encoder: dict, posterior: dict) -> Amortized:
    """q(z | x) over `[latent_dim]` from the `encoder` and `posterior` sections: the encoder reads x `[B, *event]`
    flattened, the posterior family its features."""
    net_context = {"event_shape": event_shape}  # for image networks (gated_conv_encoder, ...)
    enc = NETWORKS.build(*_split(encoder), in_features=math.prod(event_shape), out_features=None, **net_context)
    return Amortized(enc, POSTERIORS.build(*_split(posterior), in_features=enc.out_features, latent_dim=latent_dim))


def _prior(
    prior: dict, latent_dim: int, event_shape: tuple[int, ...], q: Amortized, train_data: Tensor | None
) -> nn.Module:
    """The `prior` section over `[latent_dim]`; `q` and `train_data` are offered to priors built from them."""
    return PRIORS.build(
        *_split(prior), latent_dim=latent_dim, event_shape=event_shape, posterior=q, train_data=train_data
    )


def _decoder_reads_category(decoder_input: str | None, family: nn.Module, prior: nn.Module) -> bool:
    """`model.options.decoder_input` of a vae: `z_and_c` (CP-VAE's p(x | z, c), eq. 3; the default for the CP-VAE
    pair) or `z` (p(x | z); the default, and the only choice, for any other model)."""
    if decoder_input is None:
        return is_pair(family, prior)
    if decoder_input not in DECODER_INPUTS:
        raise ConfigError(
            f"model.options.decoder_input must be one of {', '.join(DECODER_INPUTS)}, not {decoder_input!r}"
        )
    if decoder_input == "z_and_c":
        check_pair(family, prior, "model.options.decoder_input: z_and_c")
    return decoder_input == "z_and_c"


def _composed(model_cls: type[nn.Module], labels: bool, wrong_data: str):
    """The MODELS builder of `model_cls(encoder, posterior family, prior, decoder, likelihood)`; `labels`: the
    likelihood must be over labels (else over the inputs), or ConfigError `wrong_data`. For inputs, option
    `decoder_input` (see `_decoder_reads_category`): `z_and_c` builds a `CPVAE` whose decoder reads [z, one-hot c]."""

    def build(
        event_shape,
        latent_dim: int,
        encoder: dict,
        decoder: dict,
        posterior: dict,
        prior: dict,
        likelihood: dict,
        train_data: Tensor | None = None,
        decoder_input: str | None = None,
    ) -> nn.Module:
        lik = LIKELIHOODS.build(*_split(likelihood), event_shape=event_shape)
        q = _amortized(event_shape, latent_dim, encoder, posterior)
        pri = _prior(prior, latent_dim, event_shape, q, train_data)
        if labels and decoder_input is not None:
            raise ConfigError("model.options.decoder_input is an option of a vae (CP-VAE), not of a classifier")
        reads_c = not labels and _decoder_reads_category(decoder_input, q.family, pri)
        width = latent_dim + (q.family.categories if reads_c else 0)  # [z, one-hot c] for p(x | z, c)
        dec = NETWORKS.build(*_split(decoder), in_features=width, out_features=lik.num_outputs, event_shape=event_shape)
        if getattr(dec, "autoregressive", False):
            raise ConfigError(f"decoder {decoder['type']!r} reads x itself; use it in model.type: hvae (a PixelHVAE)")
        if (lik.data_kind == "labels") != labels:
            raise ConfigError(wrong_data)
        return (CPVAE if reads_c else model_cls)(q.encoder, q.family, pri, dec, lik)

    return build


MODELS.register("vae")(
    _composed(
        models.VAE,
        labels=False,
        wrong_data="a vae models its inputs, not labels; for a classifier set model.type: vib (or classifier)",
    )
)
# VIB classifier (Alemi et al. 2017): the vae composition over (inputs, label) pairs; `event_shape` is the inputs',
# the likelihood is over labels (`categorical`).
MODELS.register("vib")(
    _composed(
        models.VIB,
        labels=True,
        wrong_data="a vib classifies: set model.likelihood: {type: categorical, classes: C}",
    )
)


@MODELS.register("classifier")
def _classifier(
    event_shape,
    latent_dim: int,
    encoder: dict,
    decoder: dict,
    likelihood: dict,
    posterior: dict | None = None,
    prior: dict | None = None,
    bottleneck: bool = False,
):
    """Deterministic classifier (SIWAE app. B.1 baselines), trained with objective `cross_entropy`. With
    `bottleneck` (model.options) the encoder ends in a linear layer of `latent_dim` units (the VIB's latent,
    without noise); otherwise `latent_dim` is unused. `posterior` and `prior` are unused (no latent variable)."""
    lik = LIKELIHOODS.build(*_split(likelihood), event_shape=())
    if lik.data_kind != "labels":
        raise ConfigError(
            "a classifier needs a label likelihood: set model.likelihood: {type: categorical, classes: C}"
        )
    width = latent_dim if bottleneck else None
    enc = NETWORKS.build(*_split(encoder), in_features=math.prod(event_shape), out_features=width)
    dec = NETWORKS.build(*_split(decoder), in_features=enc.out_features, out_features=lik.num_outputs)
    return models.Classifier(enc, dec, lik)
