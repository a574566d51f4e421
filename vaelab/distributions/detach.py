"""Stop-gradient copies of distributions, for the "sticking the landing" estimators (Roeder et al. 2017).

`detach_parameters(q)` has the same density as q but its parameters are cut from the autograd graph, so
`detach_parameters(q).log_prob(z)` passes gradient only through the sample z (the path derivative), not
through the variational parameters directly (the score term, zero in expectation for the ELBO).
"""

from __future__ import annotations

from torch.distributions import Distribution, Independent, MultivariateNormal, Normal

from vaelab.distributions.diagonal_normal import DiagonalNormal
from vaelab.distributions.mixture import ReparameterizedMixture
from vaelab.errors import ConfigError


def detach_parameters(q: Distribution) -> Distribution:
    """q with detached parameters (same batch and event shapes, same `log_prob` values).

    Supported: `ReparameterizedMixture` (a subclass comes back as the plain mixture of its components),
    `DiagonalNormal`, `MultivariateNormal`, `Normal` and `Independent` of those.
    """
    if isinstance(q, ReparameterizedMixture):
        return ReparameterizedMixture(q.log_weights.detach(), detach_parameters(q.component_distribution))
    if isinstance(q, DiagonalNormal):
        return DiagonalNormal(q.loc.detach(), q.scale.detach(), q.log_scale.detach())
    if isinstance(q, MultivariateNormal):
        return MultivariateNormal(q.loc.detach(), scale_tril=q.scale_tril.detach(), validate_args=False)
    if isinstance(q, Normal):
        return Normal(q.loc.detach(), q.scale.detach(), validate_args=False)
    if isinstance(q, Independent):
        return Independent(detach_parameters(q.base_dist), q.reinterpreted_batch_ndims, validate_args=False)
    raise ConfigError(
        f"stl/dreg need a posterior whose parameters can be detached; {type(q).__name__} is not supported: "
        "set the objective's stl and dreg options to false"
    )
