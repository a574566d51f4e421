"""The interfaces vaelab's code relies on, declared (PEP 544 protocols) instead of discovered with `hasattr`.

Models:

* `LatentModel`: `posterior(x)` -> q(z | x) and `log_joint(x, z)` -> log p(x, z). That is all the importance-
  sampling estimators need, so a model from another library that offers these two is evaluated by vaelab.
* `GenerativeModel`: a `LatentModel` with a prior p(z) and p(x | z) apart (`prior`, `log_likelihood`, `sample`):
  what AIS from the prior, BDMC and the sample pictures need.

* `AmortizedModel`: a `LatentModel` whose q(z | x) is a posterior family on encoder features,
  `posterior_family(encoder(x))`, with a `prior` (vaelab's `VAE` and its subclasses): what the inference gaps (the
  trained family), CP-VAE's checks and the AIWAE parameter split read.

* `DecodedModel`: a `GenerativeModel` built as vaelab's are, an `nn.Module` whose p(x | z) is a vaelab likelihood
  over decoder outputs (`likelihood.num_outputs` sizes the IS estimator's chunks).

* `Reconstructs`: a model that maps x to a reconstruction E[x | z], z ~ q(z | x) (the reconstruction grids).

* `HasPseudoInputs`: a prior with learned pseudo-inputs (the VampPrior; `None` where a composite prior has none).

* `Observed`: a model with a `likelihood` that names the kind of data it is over (`data_kind`: "binary",
  "real", "labels", ...); a classifier's is "labels".

* `Autoregressive`: a decoder that reads x as well as z (PixelCNN: p(x | z) = prod_i p(x_i | x_<i, z)).

* `ReadsCategory`: a model whose likelihood reads a discrete latent c besides z, p(x | z, c) (CP-VAE's decoder
  on [z, one-hot c]); log p(x, z) is then undefined, and vaelab estimates log p(x) stratified over c.

Posterior capabilities (of a q(z | x) distribution, beyond `torch.distributions.Distribution`):

* `AuxiliarySampler`: an auxiliary-variable family with no tractable log q(z | x) that draws z with the log-weight
  denominator instead (the auxiliary flow, Cremer et al. 2018 eq. 14);
* `MarginalEstimator`: such a family that can also estimate log q(z | x) by importance sampling.

The checks are `isinstance(obj, Protocol)`: structural, so a class need not inherit from them.

>>> import torch, vaelab
>>> from vaelab.protocols import LatentModel
>>> model = vaelab.VAE(encoder=torch.nn.Flatten(), posterior="diagonal_gaussian", prior="standard_normal",
...                    decoder=torch.nn.Linear(2, 4), likelihood="bernoulli", latent_dim=2, event_shape=(4,))
>>> isinstance(model, LatentModel), isinstance(torch.nn.Linear(2, 2), LatentModel)
(True, False)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

from torch import Size, Tensor
from torch.distributions import Distribution
from torch.nn import Parameter


@runtime_checkable
class LatentModel(Protocol):
    """A latent variable model p(x, z) with an amortised posterior q(z | x)."""

    def posterior(self, x: Tensor) -> Distribution:
        """q(z | x): a Distribution with batch `[B]` and event `[D]` for x `[B, *event]`."""
        ...

    def log_joint(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x, z) `[*S, B]` for x `[B, *event]` and z `[*S, B, D]`."""
        ...


@runtime_checkable
class GenerativeModel(LatentModel, Protocol):
    """A `LatentModel` whose prior p(z) and likelihood p(x | z) are given apart, and which can sample x."""

    prior: Distribution | object

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x | z) `[*S, B]`."""
        ...

    def sample(self, n: int, mean: bool = True) -> Tensor:
        """n draws x ~ p(x) `[n, *event]` (their means given z with `mean`)."""
        ...


@runtime_checkable
class AmortizedModel(LatentModel, Protocol):
    """A `LatentModel` with q(z | x) = `posterior_family(encoder(x))` (a `vaelab.posteriors.PosteriorFamily`, or
    any module from features to a Distribution) and a prior p(z)."""

    encoder: Any
    posterior_family: Any
    prior: Any


@runtime_checkable
class DecodedModel(GenerativeModel, Protocol):
    """A `GenerativeModel` with parameters whose `likelihood` is a vaelab `Likelihood` over the decoder's outputs
    (`num_outputs` of them per point): the estimators use its prior and likelihood terms as they are."""

    likelihood: Any

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        """The model's parameters (an `nn.Module`'s); the first gives the device."""
        ...


@runtime_checkable
class Reconstructs(Protocol):
    """A model with `reconstruct(x)`: E[x | z] at z ~ q(z | x), `[B, *event]` for x `[B, *event]`."""

    def reconstruct(self, x: Tensor) -> Tensor: ...


@runtime_checkable
class HasPseudoInputs(Protocol):
    """A prior with learned pseudo-inputs u `[K, *event]` (VampPrior: p(z) = (1/K) sum_k q(z | u_k)), or None."""

    pseudo_inputs: Tensor | None


@runtime_checkable
class DataKind(Protocol):
    """A likelihood that names the kind of data it is over (vaelab's `Likelihood.data_kind`)."""

    data_kind: str


@runtime_checkable
class Observed(Protocol):
    """A model whose `likelihood` is a `DataKind` (vaelab's models and classifiers)."""

    likelihood: DataKind


@runtime_checkable
class Autoregressive(Protocol):
    """A decoder network that also reads x (`autoregressive = True`), so it needs a model built for it (PixelHVAE)."""

    autoregressive: bool


@runtime_checkable
class ReadsCategory(Protocol):
    """A model with K `categories` whose decoder reads c: `decode(z, c)` and `log_likelihood(x, z, c)`."""

    categories: int

    def decode(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        """Likelihood parameters of p(x | z, c) for z `[*S, B, D]` and c `[*S, B, K]` (one-hot or relaxed)."""
        ...

    def log_likelihood(self, x: Tensor, z: Tensor, c: Tensor | None = None) -> Tensor:
        """log p(x | z, c) `[*S, B]`."""
        ...


@runtime_checkable
class AuxiliarySampler(Protocol):
    """A posterior family whose marginal log q(z | x) is intractable and which draws (z, log_q) jointly, with
    log_q the denominator of an unbiased importance weight (log q(z, v | x) - log r(v | x, z))."""

    def rsample_and_log_prob(self, sample_shape: Size = Size()) -> tuple[Tensor, Tensor]: ...


@runtime_checkable
class MarginalEstimator(Protocol):
    """A posterior family that estimates its marginal log q(z | x) by importance sampling."""

    def log_marginal_estimate(self, z: Tensor, samples: int = 100) -> Tensor: ...
