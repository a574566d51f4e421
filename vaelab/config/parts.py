"""The parts of a `VAE` from whatever a Python user has: registry names, vaelab objects, or their own modules.

`resolve_parts` turns (encoder, posterior, prior, decoder, likelihood) into the objects `VAE` composes. Sizes are
found, not declared: the encoder's feature width by a dry run on zeros `[2, *event_shape]` (which also
initialises lazy layers), the latent width from `latent_dim`, the prior or a dry run of the posterior module.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from vaelab.config.registry import LIKELIHOODS, POSTERIORS, PRIORS, Registry
from vaelab.errors import ConfigError
from vaelab.likelihoods import Likelihood
from vaelab.nets.modes import eval_mode
from vaelab.posteriors.amortized import Amortized
from vaelab.priors import Prior
from vaelab.priors.distribution import DistributionPrior

#: A component given by name: "bernoulli", or a section {"type": "gaussian_mixture", "components": 5}.
Named = str | dict


def _build_named(registry: Registry, spec: Named, **context: Any):
    options = {"type": spec} if isinstance(spec, str) else dict(spec)
    if "type" not in options:
        raise ConfigError(f"a {registry.kind} given as a dict needs a 'type' key, got {spec!r}")
    return registry.build(options.pop("type"), options, **context)


@torch.no_grad()
def dry_run(module: Callable[[Tensor], Any], x: Tensor) -> Any:
    """`module(x)` in eval mode (batch norm with a dry batch), each submodule's mode restored after."""
    with eval_mode(module):
        return module(x)


def feature_width(encoder: nn.Module, event_shape: tuple[int, ...], flatten: bool) -> int:
    """F for an encoder `[B, *event]` (or `[B, prod(event)]` with `flatten`) -> `[B, F]`."""
    x = torch.zeros(2, math.prod(event_shape)) if flatten else torch.zeros(2, *event_shape)
    h = dry_run(encoder, _like(encoder, x))
    if not isinstance(h, Tensor) or h.dim() != 2:
        got = list(h.shape) if isinstance(h, Tensor) else type(h).__name__
        raise ConfigError(
            f"the encoder must return features [B, F] for x [B, *event]; it returned {got} (end it with nn.Flatten())"
        )
    return h.shape[1]


def _like(module: nn.Module, x: Tensor) -> Tensor:
    """`x` on the device and in the dtype of `module`'s first parameter (if any)."""
    p = next(iter(module.parameters()), None) if isinstance(module, nn.Module) else None
    return x if p is None or isinstance(p, nn.parameter.UninitializedParameter) or p.is_meta else x.to(p)


def _check_posterior(q: Any, batch: int) -> int:
    if not isinstance(q, Distribution) or len(q.event_shape) != 1 or tuple(q.batch_shape) != (batch,):
        what = f"batch {list(q.batch_shape)}, event {list(q.event_shape)}" if isinstance(q, Distribution) else type(q)
        raise ConfigError(
            f"the posterior must map features [B, F] to a torch Distribution with batch [B] and event [D]; got {what}"
        )
    return q.event_shape[0]


def resolve_prior(prior: Named | Prior | Distribution | nn.Module, latent_dim: int | None, **context: Any) -> Prior:
    """A `Prior` from a name (needs `latent_dim`), a `Prior`, a torch `Distribution` over `[D]`, or a module whose
    `forward()` returns one (e.g. an unconditional zuko flow)."""
    if isinstance(prior, (str, dict)):
        if latent_dim is None:
            raise ConfigError(f"prior {prior!r} given by name needs latent_dim (or a posterior module that sets it)")
        return _build_named(PRIORS, prior, latent_dim=latent_dim, **context)
    if isinstance(prior, Prior):
        return prior
    if isinstance(prior, (Distribution, nn.Module)):
        return DistributionPrior(prior)
    raise ConfigError(f"a prior must be a name, a Prior, a torch Distribution or a module returning one, not {prior!r}")


def resolve_parts(
    encoder: nn.Module,
    posterior: Named | nn.Module,
    prior: Named | Prior | Distribution | nn.Module,
    decoder: nn.Module,
    likelihood: Named | Likelihood,
    latent_dim: int | None,
    event_shape: tuple[int, ...] | None,
    flatten: bool,
) -> tuple[nn.Module, nn.Module, Prior, nn.Module, Likelihood]:
    """(encoder, posterior family, prior, decoder, likelihood) ready for `VAE`; `ConfigError` on what does not fit."""
    if isinstance(likelihood, (str, dict)):
        if event_shape is None:
            raise ConfigError(
                f"likelihood {likelihood!r} given by name needs event_shape, e.g. event_shape=(1, 28, 28)"
            )
        likelihood = _build_named(LIKELIHOODS, likelihood, event_shape=tuple(event_shape))
    if not isinstance(likelihood, Likelihood):
        raise ConfigError(f"the likelihood must be a name (e.g. 'bernoulli') or a Likelihood, not {likelihood!r}")
    event_shape = tuple(likelihood.event_shape if event_shape is None else event_shape)
    width = feature_width(encoder, event_shape, flatten)
    if isinstance(prior, Prior) and latent_dim is None:
        latent_dim = prior.latent_dim
    if isinstance(posterior, (str, dict)):
        if latent_dim is None and not isinstance(prior, (str, dict)):
            latent_dim = resolve_prior(prior, None).latent_dim
        if latent_dim is None:
            raise ConfigError(f"posterior {posterior!r} given by name needs latent_dim=D")
        posterior = _build_named(POSTERIORS, posterior, in_features=width, latent_dim=latent_dim)
    elif not isinstance(posterior, nn.Module):
        raise ConfigError(f"the posterior must be a name or a module mapping features to a Distribution: {posterior!r}")
    x = _like(encoder, torch.zeros(2, *event_shape))
    dim = _check_posterior(dry_run(Amortized(encoder, posterior, flatten), x), 2)
    if latent_dim is not None and dim != latent_dim:
        raise ConfigError(f"the posterior's latent width is {dim} but latent_dim is {latent_dim}")
    context = {"event_shape": event_shape, "posterior": Amortized(encoder, posterior, flatten), "train_data": None}
    prior = resolve_prior(prior, dim, **context)
    if prior.latent_dim != dim:
        raise ConfigError(f"the prior is over {prior.latent_dim} dimensions but the posterior over {dim}")
    out = dry_run(decoder, _like(decoder, torch.zeros(2, dim)))
    if not isinstance(out, Tensor) or out[0].numel() != likelihood.num_outputs:
        got = list(out.shape[1:]) if isinstance(out, Tensor) else type(out).__name__
        raise ConfigError(
            f"the decoder must map z [B, {dim}] to {likelihood.num_outputs} likelihood parameters per example "
            f"(shape {list(likelihood.param_shape)} or flat); it returned {got}"
        )
    return encoder, posterior, prior, decoder, likelihood
