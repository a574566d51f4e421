"""Name -> builder registries of the component families: the one place where config names meet classes.

The registry imports the components (as `torch.distributions.kl` imports the distributions it pairs); the
components never import the registry. A builder is any callable, most often the component's class itself, so its
defaults live once, in the constructor; its keyword arguments are the options a config may set. The builders here
that are functions do what a constructor should not: check where a network is used (encoder or decoder), read
nested network sections, or make a VampPrior's pseudo-inputs from its `init` option. Unknown options and unknown
names raise `ConfigError` with the valid choices, so a typo in a YAML file is a one-line error.

Models and objectives, whose builders compose these families, are in `vaelab.config.build`.
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution

from vaelab.config.schema import yaml_number
from vaelab.errors import ConfigError
from vaelab.likelihoods import Bernoulli, Categorical, DiscretizedLogisticLikelihood, Gaussian
from vaelab.nets import (
    MLP,
    Absolute,
    AffineSkip,
    Columns,
    GatedConvDecoder,
    GatedConvEncoder,
    GatedMLP,
    PixelCNN,
    StridedConvEncoder,
    StridedDeconvDecoder,
    TFPConvDecoder,
    TFPConvEncoder,
)
from vaelab.nets.conv import image_shape
from vaelab.posteriors import (
    AuxiliaryFlowPosterior,
    CategoricalGaussian,
    DiagonalGaussian,
    FullCovarianceGaussian,
    GaussianMixture,
)
from vaelab.posteriors.amortized import Amortized
from vaelab.priors import MixtureOfGaussians, StandardNormal, VampPrior
from vaelab.priors.vampprior import initial_pseudo_inputs
from vaelab.train import lr_schedules

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of builders of one kind (posterior families, priors, ...)."""

    def __init__(self, kind: str, builders: dict[str, Callable[..., T]] | None = None) -> None:
        self.kind = kind
        self._builders: dict[str, Callable[..., T]] = dict(builders or {})

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Add a builder under `name` (a decorator); `ValueError` if the name is taken."""

        def deco(builder: Callable[..., T]) -> Callable[..., T]:
            if name in self._builders:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._builders[name] = builder
            return builder

        return deco

    def names(self) -> list[str]:
        return sorted(self._builders)

    def __contains__(self, name: str) -> bool:
        return name in self._builders

    def get(self, name: str) -> Callable[..., T]:
        if name not in self._builders:
            hint = difflib.get_close_matches(name, self._builders, n=1)
            did = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"unknown {self.kind} {name!r}{did}; choose one of: {', '.join(self.names())}")
        return self._builders[name]

    def build(self, name: str, options: dict[str, Any] | None = None, **context: Any) -> T:
        """Call builder `name` with the user's `options` plus those `context` values it accepts (the
        library supplies e.g. `latent_dim`, `event_shape`). Unknown options raise `ConfigError`."""
        builder = self.get(name)
        options = check_options(builder, dict(options or {}), f"{self.kind} {name!r}", reserved=context)
        params = inspect.signature(builder).parameters
        takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        context = {k: v for k, v in context.items() if takes_all or k in params}
        return builder(**context, **options)


def check_options(
    fn: Callable[..., Any], options: dict[str, Any], what: str, reserved: dict | None = None
) -> dict[str, Any]:
    """`options` with strings that spell numbers ("1e6": YAML 1.1 reads it as a string) read as the numbers that
    `fn`'s annotations or defaults ask for (whole floats as ints); `ConfigError` if a key is one `fn` does not take
    (or one the library sets), or a value that must be a number (an integer) is none."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        _check_ranges(options, what)
        return options
    allowed = [n for n in params if n not in (reserved or {})]
    out = dict(options)
    for key, value in options.items():
        if key in (reserved or {}):
            raise ConfigError(f"option {key!r} of {what} is set by vaelab itself; remove it from the config")
        if key not in allowed:
            hint = difflib.get_close_matches(key, allowed, n=1)
            did = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"unknown option {key!r} for {what}{did}; valid options: {', '.join(allowed)}")
        kind = _numeric_kind(params[key])
        if kind is not None and isinstance(value, (str, float)):
            number = yaml_number(value)
            if isinstance(number, str):
                raise ConfigError(f"option {key!r} of {what} must be a number, got {value!r}")
            if kind is int and not number.is_integer():
                raise ConfigError(f"option {key!r} of {what} must be a whole number, got {value!r}")
            out[key] = int(number) if kind is int else number
    _check_ranges(out, what)
    return out


#: Options that count something (at least one) or are scales (positive), whichever component takes them.
COUNTS = ("samples", "chains", "temperatures", "leapfrog_steps", "components", "categories", "stages", "every",
          "every_steps", "base_depth", "features", "channels", "layers")  # fmt: skip
NON_NEGATIVE = ("burn_in_epochs",)
POSITIVE = ("step_size", "sigma", "init_scale", "gamma", "temperature")


def _check_ranges(options: dict[str, Any], what: str) -> None:
    """`ConfigError` for a count below 1 (`samples: 0` would give an empty average, NaN) or a scale <= 0."""
    for key, value in options.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if key in COUNTS and value < 1:
            raise ConfigError(f"option {key!r} of {what} must be at least 1, got {value!r}")
        if key in NON_NEGATIVE and value < 0:
            raise ConfigError(f"option {key!r} of {what} must be 0 or more, got {value!r}")
        if key in POSITIVE and not value > 0:
            raise ConfigError(f"option {key!r} of {what} must be > 0, got {value!r}")


def _numeric_kind(param: inspect.Parameter) -> type | None:
    """`int` or `float` if the parameter takes a number and no string (by its annotation, else its default)."""
    note = param.annotation
    if note is inspect.Parameter.empty:
        default = param.default
        return type(default) if type(default) in (int, float) else None
    text = note if isinstance(note, str) else getattr(note, "__name__", str(note))
    kinds = {part.strip() for part in text.replace("Optional[", "").replace("]", "").split("|")}
    if kinds & {"str", "Any", "typing.Any"}:
        return None
    return float if "float" in kinds else int if "int" in kinds else None


def split_section(section: dict) -> tuple[str, dict]:
    """(`type`, the other options) of a config section such as `{type: mlp, hidden: [300]}`."""
    options = dict(section)
    return options.pop("type"), options


# --- networks: the functions check the role (encoder body: out_features None; decoder: set) -------------------


def _linear(in_features: int, out_features: int | None) -> MLP:
    """A single affine map (or the identity as an encoder body, whose head then makes it affine)."""
    return MLP(in_features, [], out_features)


def _absolute(in_features: int, out_features: int | None) -> Absolute:
    if out_features is not None and out_features != in_features:
        raise ConfigError(
            f"decoder absolute maps {in_features} latents to as many outputs, but the likelihood needs {out_features}; "
            "use a likelihood with one parameter per element (gaussian with variance fixed) and latent_dim = data dim"
        )
    return Absolute(in_features)


def _checked(cls: type, check: Callable[..., None], context: tuple[str, ...]) -> Callable[..., Any]:
    """The builder of `cls` that first runs `check(**context)`: its options are the constructor's keyword arguments
    (so each default lives once, in the class); the `context` values (e.g. `in_features`, `out_features`,
    `event_shape`) are the library's, passed to the class only where its constructor takes them."""
    own = inspect.signature(cls).parameters
    keyword = inspect.Parameter.KEYWORD_ONLY

    def build(**kwargs: Any) -> Any:
        check(**{k: kwargs.get(k) for k in context})
        return cls(**{k: v for k, v in kwargs.items() if k in own})

    params = [inspect.Parameter(k, keyword) for k in context if k not in own]
    params += [p.replace(kind=keyword) for p in own.values() if p.kind is not p.VAR_KEYWORD]
    build.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    build.__name__ = build.__qualname__ = f"build_{cls.__name__}"
    return build


def _reads_images(name: str, short: bool = False) -> Callable[..., None]:
    """A check that the network reads x (images of `prod(event_shape)` pixels), as an encoder body when `short`."""

    def check(in_features: int, event_shape: tuple[int, ...], out_features: int | None = None) -> None:
        if in_features != math.prod(event_shape):
            if short:
                raise ConfigError(f"{name} reads images of {math.prod(event_shape)} pixels, not {in_features} inputs")
            raise ConfigError(
                f"{name} reads images of {math.prod(event_shape)} pixels but is given {in_features} inputs; "
                "use it on x, and an MLP on latents"
            )
        if short and out_features is not None:
            raise ConfigError(f"{name} is an encoder body (the posterior adds the head); use it as model.encoder")

    return check


def _decoder_only(message: str) -> Callable[..., None]:
    """A check that the network is used as a decoder (`out_features` set), else `ConfigError(message)`."""

    def check(out_features: int | None) -> None:
        if out_features is None:
            raise ConfigError(message)

    return check


def _body(body: dict | None, what: str, **context: Any) -> nn.Module:
    if not isinstance(body, dict) or "type" not in body:
        raise ConfigError(f"the {what} network needs body: {{type: ..., ...}} (e.g. {{type: mlp, hidden: [128]}})")
    return NETWORKS.build(*split_section(body), **context)


def _columns(
    in_features: int,
    out_features: int | None,
    event_shape: tuple[int, ...],
    columns: Sequence[int] = (14,),
    body: dict | None = None,
) -> Columns:
    c, h, w = image_shape(event_shape, "the columns network")
    if in_features != c * h * w:
        raise ConfigError(
            f"the columns network reads images of {c * h * w} pixels, not {in_features} inputs; use it on x"
        )
    columns = list(columns)
    if not columns or any(not 0 <= j < w for j in columns):
        raise ConfigError(f"columns must be a non-empty list of column indices in 0..{w - 1}, got {columns}")
    kept = (c, h, len(columns))
    net = _body(body, "columns", in_features=math.prod(kept), out_features=out_features, event_shape=kept)
    return Columns(event_shape, columns, net)


def _affine_skip(
    in_features: int, out_features: int | None, event_shape: tuple[int, ...], body: dict | None = None
) -> AffineSkip:
    if out_features is None:
        raise ConfigError("affine_skip adds an affine map to a decoder's outputs; use it as a decoder")
    net = _body(body, "affine_skip", in_features=in_features, out_features=out_features, event_shape=event_shape)
    return AffineSkip(net, in_features, out_features)


# --- priors ------------------------------------------------------------------------------------------------


def _vampprior(
    latent_dim: int,
    event_shape: tuple[int, ...],
    posterior: Callable[[Tensor], Distribution],
    train_data: Tensor | None = None,
    components: int = 500,
    init: str = "random",
    init_mean: float = 0.05,
    init_std: float = 0.01,
    **options: Any,
) -> VampPrior:
    """VampPrior whose K = `components` pseudo-inputs start as `init` says (`initial_pseudo_inputs`); the other
    options are the constructor's (`learn_inputs`, `learn_weights`)."""
    u = initial_pseudo_inputs(components, event_shape, init, train_data, init_mean, init_std)
    return VampPrior(latent_dim, posterior, u, **options)


_vampprior.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [p for p in inspect.signature(_vampprior).parameters.values() if p.kind is not p.VAR_KEYWORD]
    + [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for name, p in inspect.signature(VampPrior).parameters.items()
        if name not in ("latent_dim", "posterior", "pseudo_inputs")
    ]
)


def _conditional(
    latent_dim: int,
    posterior: Any = None,
    categories: int | None = None,
    init_scale: float = 0.1,
    init: str = "normal",
) -> MixtureOfGaussians:
    """CP-VAE's conditional prior p(z, c) = p(c) p(z | c) with p(c) = 1/K and learned p(z | c = k) = N(mu_k, diag
    sigma_k^2) (Lavda et al., eqs. 4-5). Summing c out leaves the mixture-of-Gaussians prior with uniform weights,
    which is what this returns; K = `categories`, or by default the categorical_gaussian posterior's.

    The means start at N(0, init_scale^2) with init_scale = 0.1 (not the MoG prior's 1.0): with 40 latents, N(0, 1)
    means put the K conditionals tens of nats apart, the closed-form B2 = sum_k q(k|x) KL_k then pushes every x to
    the same nearest category before the encoder adapts, and q(c|x) saturates there (measured on MNIST and on the
    1-D toy: q(c) perplexity 1.0 of K, KL(c) = log K); with 0.1 the categories stay in use.

    `init: authors` starts p(z | c) as the CP-VAE authors' code does (macio232/cp-vae, models/cp_vae_z_xc.py, commit
    cdc65c7): means U(0, 1), log-variances softplus(u; beta = 1/2) with u ~ U(0, 1) (their KL_continuous reads the
    softplus as a log-variance). That code never hands these tensors to the optimiser, so it keeps them fixed: add
    `train.freeze: [prior]` for the same (the paper, eq. 5, learns them)."""
    family = posterior.family if isinstance(posterior, Amortized) else None
    if categories is None and isinstance(family, CategoricalGaussian):
        categories = family.categories
    k = categories
    if k is None:
        raise ConfigError(
            "prior conditional needs categories: K, or a posterior {type: categorical_gaussian} to take K from"
        )
    if init not in ("normal", "authors"):
        raise ConfigError(f"prior conditional: init must be 'normal' or 'authors', got {init!r}")
    prior = MixtureOfGaussians(latent_dim, k, learn_weights=False, init_scale=init_scale)
    if init == "authors":
        with torch.no_grad():
            prior.loc.uniform_(0.0, 1.0)
            prior.log_var.copy_(F.softplus(torch.rand_like(prior.log_var), beta=0.5))
    return prior


# --- the tables: one line per config name ------------------------------------------------------------------

NETWORKS: Registry[nn.Module] = Registry(
    "network",
    {
        "mlp": MLP,
        "gated_mlp": GatedMLP,
        "linear": _linear,
        "absolute": _absolute,
        "gated_conv_encoder": _checked(
            GatedConvEncoder, _reads_images("gated_conv_encoder"), ("in_features", "event_shape")
        ),
        "gated_conv_decoder": GatedConvDecoder,
        "tfp_conv_encoder": _checked(
            TFPConvEncoder,
            _reads_images("tfp_conv_encoder", short=True),
            ("in_features", "event_shape", "out_features"),
        ),
        "tfp_conv_decoder": _checked(
            TFPConvDecoder,
            _decoder_only("tfp_conv_decoder maps latents to the likelihood's parameters; use it as model.decoder"),
            ("out_features",),
        ),
        "strided_conv_encoder": _checked(
            StridedConvEncoder,
            _reads_images("strided_conv_encoder", short=True),
            ("in_features", "event_shape", "out_features"),
        ),
        "strided_deconv_decoder": _checked(
            StridedDeconvDecoder,
            _decoder_only(
                "strided_deconv_decoder maps latents to the likelihood's parameters; use it as model.decoder"
            ),
            ("out_features",),
        ),
        "pixelcnn": _checked(
            PixelCNN,
            _decoder_only("pixelcnn is a decoder (it outputs likelihood parameters); use it as model.decoder"),
            ("out_features",),
        ),
        "columns": _columns,
        "affine_skip": _affine_skip,
    },
)
POSTERIORS: Registry[nn.Module] = Registry(
    "posterior family",
    {
        "diagonal_gaussian": DiagonalGaussian,
        "full_covariance_gaussian": FullCovarianceGaussian,
        "gaussian_mixture": GaussianMixture,
        "categorical_gaussian": CategoricalGaussian,
        "auxiliary_flow": AuxiliaryFlowPosterior,
    },
)
PRIORS: Registry[nn.Module] = Registry(
    "prior",
    {
        "standard_normal": StandardNormal,
        "mixture_of_gaussians": MixtureOfGaussians,
        "vampprior": _vampprior,
        "conditional": _conditional,
    },
)
LIKELIHOODS: Registry[nn.Module] = Registry(
    "likelihood",
    {
        "bernoulli": Bernoulli,
        "gaussian": Gaussian,
        "categorical": Categorical,
        "discretized_logistic": DiscretizedLogisticLikelihood,
    },
)
#: Its builders return functions `factor(epoch, step)`, not modules (`vaelab.train.lr_schedules`).
LR_SCHEDULES: Registry = Registry(
    "learning-rate schedule", {"constant": lr_schedules.constant, "step": lr_schedules.step, "iwae": lr_schedules.iwae}
)
