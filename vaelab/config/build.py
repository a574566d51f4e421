"""Build models and objectives from their config sections: where config names meet model and objective classes.

The component families (networks, posterior families, priors, likelihoods) are in `vaelab.config.registry`;
the model builders here compose them: encoder -> posterior family -> prior -> decoder -> likelihood.
"""

from __future__ import annotations

import inspect
import math

from torch import Tensor, nn

from vaelab.config.registry import LIKELIHOODS, LR_SCHEDULES, NETWORKS, POSTERIORS, PRIORS, Registry, split_section
from vaelab.config.schema import ModelConfig
from vaelab.errors import ConfigError
from vaelab.models import HVAE, VAE, VIB, Classifier, PixelHVAE
from vaelab.models.cpvae import CPVAE, DECODER_INPUTS, check_pair, is_pair
from vaelab.models.hvae import HierarchicalPrior, Join
from vaelab.nets.init import apply_weight_init
from vaelab.objectives import (
    AIWAE,
    CIWAE,
    ELBO,
    IWAE,
    MIWAE,
    PPD,
    SELBO,
    SIWAE,
    CPVAEBound,
    CrossEntropy,
    Objective,
    ScoreFunction,
    StratifiedObjective,
)
from vaelab.posteriors import PosteriorFamily
from vaelab.posteriors.amortized import Amortized
from vaelab.protocols import Autoregressive


def build_model(cfg: ModelConfig, event_shape: tuple[int, ...], train_data: Tensor | None = None) -> nn.Module:
    """encoder -> posterior family -> prior -> decoder -> likelihood, as `cfg` names them. `train_data`
    `[N, *event]` is offered to components that initialise from data (VampPrior's `init: data`)."""
    options = {k: v for k, v in vars(cfg).items()}
    kind, weight_init = options.pop("type"), options.pop("weight_init")
    options.update(options.pop("options"))
    model = MODELS.build(kind, options, event_shape=tuple(event_shape), train_data=train_data)
    return apply_weight_init(model, weight_init)


def build_objective(section: dict) -> Objective:
    """The objective a config section `{type: ..., options}` names."""
    return OBJECTIVES.build(*split_section(section))


def _amortized(event_shape: tuple[int, ...], latent_dim: int, encoder: dict, posterior: dict) -> Amortized:
    """q(z | x) over `[latent_dim]` from the `encoder` and `posterior` sections: the encoder reads x `[B, *event]`
    flattened, the posterior family its features."""
    net_context = {"event_shape": event_shape}  # for image networks (gated_conv_encoder, ...)
    enc = NETWORKS.build(*split_section(encoder), in_features=math.prod(event_shape), out_features=None, **net_context)
    family = POSTERIORS.build(*split_section(posterior), in_features=enc.out_features, latent_dim=latent_dim)
    return Amortized(enc, family)


def _autoregressive(decoder: nn.Module) -> bool:
    """Whether `decoder` reads x itself (`vaelab.protocols.Autoregressive`: a PixelCNN)."""
    return isinstance(decoder, Autoregressive) and bool(decoder.autoregressive)


def _prior(
    prior: dict, latent_dim: int, event_shape: tuple[int, ...], q: Amortized, train_data: Tensor | None
) -> nn.Module:
    """The `prior` section over `[latent_dim]`; `q` and `train_data` are offered to priors built from them."""
    return PRIORS.build(
        *split_section(prior), latent_dim=latent_dim, event_shape=event_shape, posterior=q, train_data=train_data
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
        lik = LIKELIHOODS.build(*split_section(likelihood), event_shape=event_shape)
        q = _amortized(event_shape, latent_dim, encoder, posterior)
        pri = _prior(prior, latent_dim, event_shape, q, train_data)
        if labels and decoder_input is not None:
            raise ConfigError("model.options.decoder_input is an option of a vae (CP-VAE), not of a classifier")
        reads_c = not labels and _decoder_reads_category(decoder_input, q.family, pri)
        width = latent_dim + (q.family.categories if reads_c else 0)  # [z, one-hot c] for p(x | z, c)
        dec = NETWORKS.build(
            *split_section(decoder), in_features=width, out_features=lik.num_outputs, event_shape=event_shape
        )
        if _autoregressive(dec):
            raise ConfigError(f"decoder {decoder['type']!r} reads x itself; use it in model.type: hvae (a PixelHVAE)")
        if (lik.data_kind == "labels") != labels:
            raise ConfigError(wrong_data)
        return (CPVAE if reads_c else model_cls)(q.encoder, q.family, pri, dec, lik)

    return build


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
    lik = LIKELIHOODS.build(*split_section(likelihood), event_shape=())
    if lik.data_kind != "labels":
        raise ConfigError(
            "a classifier needs a label likelihood: set model.likelihood: {type: categorical, classes: C}"
        )
    width = latent_dim if bottleneck else None
    enc = NETWORKS.build(*split_section(encoder), in_features=math.prod(event_shape), out_features=width)
    dec = NETWORKS.build(*split_section(decoder), in_features=enc.out_features, out_features=lik.num_outputs)
    return Classifier(enc, dec, lik)


_HVAE_Q_Z1 = {
    "x": {"type": "gated_mlp", "hidden": [300]},
    "z2": {"type": "gated_mlp", "hidden": [300]},
    "joint": {"type": "gated_mlp", "hidden": [300]},
}
_HVAE_P_X = {"z1": {"type": "gated_mlp", "hidden": [300]}, "z2": {"type": "gated_mlp", "hidden": [300]}}
_HVAE_P_Z1 = {"type": "gated_mlp", "hidden": [300, 300]}


def _sections(name: str, given: dict | None, defaults: dict) -> dict:
    """`given` network sections over `defaults`; ConfigError for unknown parts or a missing `type`."""
    given = dict(given or {})
    for key, section in given.items():
        if key not in defaults:
            raise ConfigError(f"model.options.{name} has no part {key!r}; its parts: {', '.join(defaults)}")
        if not isinstance(section, dict) or "type" not in section:
            raise ConfigError(f"model.options.{name}.{key} must be a network section with a 'type' key")
    return {**defaults, **given}


def _hvae(
    event_shape: tuple[int, ...],
    latent_dim: int,
    encoder: dict,
    decoder: dict,
    posterior: dict,
    prior: dict,
    likelihood: dict,
    train_data: Tensor | None = None,
    latent_dim2: int = 40,
    q_z1: dict | None = None,
    p_z1: dict | None = None,
    p_x: dict | None = None,
) -> HVAE:
    """HVAE from the model section: `latent_dim` is D1 (z1), `options.latent_dim2` D2 (z2); `encoder` is the
    body of q(z2 | x); `posterior` the Gaussian head of q(z2 | x), q(z1 | x, z2) and p(z1 | z2); `prior` is p(z2);
    `decoder` the joint part of p(x | z1, z2) (a `pixelcnn` gives a PixelHVAE). Options `q_z1: {x, z2, joint}`,
    `p_z1` and `p_x: {z1, z2}` are the other networks (defaults: the paper's gated MLPs with 300 units)."""
    q_z1, p_x = _sections("q_z1", q_z1, _HVAE_Q_Z1), _sections("p_x", p_x, _HVAE_P_X)
    if p_z1 is not None and (not isinstance(p_z1, dict) or "type" not in p_z1):
        raise ConfigError("model.options.p_z1 must be a network section with a 'type' key")
    p_z1 = p_z1 or _HVAE_P_Z1
    d1, d2, data_dim = latent_dim, latent_dim2, math.prod(event_shape)

    def net(section: dict, n_in: int, n_out: int | None = None) -> nn.Module:
        return NETWORKS.build(*split_section(section), in_features=n_in, out_features=n_out, event_shape=event_shape)

    def head(n_in: int, latent: int) -> PosteriorFamily:
        return POSTERIORS.build(*split_section(posterior), in_features=n_in, latent_dim=latent)

    lik = LIKELIHOODS.build(*split_section(likelihood), event_shape=event_shape)
    q2 = _amortized(event_shape, d2, encoder, posterior)  # q(z2 | x)
    enc, post2 = q2.encoder, q2.family
    qx, qz = net(q_z1["x"], data_dim), net(q_z1["z2"], d2)  # q(z1 | x, z2)
    q1 = Join(qx, qz, net(q_z1["joint"], qx.out_features + qz.out_features))
    top = _prior(prior, d2, event_shape, q2, train_data)
    body = net(p_z1, d2)  # p(z1 | z2)
    pri = HierarchicalPrior(top, body, head(body.out_features, d1))
    b1, b2 = net(p_x["z1"], d1), net(p_x["z2"], d2)  # p(x | z1, z2)
    dec = net(decoder, b1.out_features + b2.out_features, lik.num_outputs)
    if _autoregressive(dec):
        return PixelHVAE(enc, post2, q1, head(q1.out_features, d1), pri, Join(b1, b2), dec, lik)
    return HVAE(enc, post2, q1, head(q1.out_features, d1), pri, Join(b1, b2, dec), lik)


# --- objectives -------------------------------------------------------------------------------------------


def _options_signature(cls: type, drop: tuple[str, ...] = ()) -> inspect.Signature:
    """The keyword options a stratified objective `cls` accepts (its own and the base class's), for the registry's
    option check (their constructors pass `**options` on to the base)."""
    params = {}
    for klass in (cls, StratifiedObjective):
        for p in list(inspect.signature(klass.__init__).parameters.values())[1:]:
            if p.kind is p.VAR_KEYWORD or p.name in drop or p.name in params:
                continue
            params[p.name] = p.replace(kind=p.KEYWORD_ONLY)
    return inspect.Signature(list(params.values()))


def _stratified(name: str, cls: type[StratifiedObjective], stl: bool = False):
    """The builder of `cls`; the `stl_` names fix stl = true (the sweep's labels in SIWAE Fig. 4-5)."""
    if stl:

        def build(**options) -> StratifiedObjective:
            if "stl" in options:
                raise ConfigError(f"objective {name} already sets stl; remove the stl option")
            return cls(stl=True, **options)

    else:

        def build(**options) -> StratifiedObjective:
            return cls(**options)

    build.__signature__ = _options_signature(cls, drop=("stl",) if stl else ())
    return build


# --- the tables: one line per config name ------------------------------------------------------------------

MODELS: Registry[nn.Module] = Registry(
    "model",
    {
        "vae": _composed(
            VAE,
            labels=False,
            wrong_data="a vae models its inputs, not labels; for a classifier set model.type: vib (or classifier)",
        ),
        # VIB classifier (Alemi et al. 2017): the vae composition over (inputs, label) pairs; `event_shape` is the
        # inputs', the likelihood is over labels (`categorical`).
        "vib": _composed(
            VIB, labels=True, wrong_data="a vib classifies: set model.likelihood: {type: categorical, classes: C}"
        ),
        "classifier": _classifier,
        "hvae": _hvae,
    },
)
OBJECTIVES: Registry[Objective] = Registry(
    "objective",
    {
        "elbo": ELBO,
        "iwae": IWAE,
        "aiwae": AIWAE,
        "score_function": ScoreFunction,
        "cross_entropy": CrossEntropy,
        "cpvae": CPVAEBound,
        **{
            name: _stratified(name, cls)
            for name, cls in (("selbo", SELBO), ("siwae", SIWAE), ("ciwae", CIWAE), ("miwae", MIWAE), ("ppd", PPD))
        },
        **{
            name: _stratified(name, cls, stl=True)
            for name, cls in (("stl_selbo", SELBO), ("stl_siwae", SIWAE), ("stl_ciwae", CIWAE))
        },
    },
)


# --- learning-rate schedules ----------------------------------------------------------------------------------


def build_schedule(schedule: dict):
    """`factor(epoch, step)` for a config `{type: ..., options}` (`ConfigError` if it is not a valid one)."""
    options = dict(schedule)
    return LR_SCHEDULES.build(options.pop("type", "constant"), options)


def lr_factor(schedule: dict, epoch: int, step: int = 0) -> float:
    """Multiplier of the base learning rate in `epoch` (0-based) before optimizer step `step` (0-based)."""
    return build_schedule(schedule)(epoch, step)


def schedule_epochs(schedule: dict) -> int | None:
    """The number of epochs a schedule prescribes (iwae: sum of 3^i), or None if it sets none."""
    return getattr(build_schedule(schedule), "total_epochs", None)
