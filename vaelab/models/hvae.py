"""The two-level hierarchical VAE of the VampPrior paper (Tomczak & Welling 2018, sec. 4, eqs. 10-15):

    q(z1, z2 | x) = q(z1 | x, z2) q(z2 | x)                  (eq. 10, Gaussians eqs. 14-15)
    p(x, z1, z2)  = p(x | z1, z2) p(z1 | z2) p(z2)           (eq. 11, p(z1 | z2) Gaussian eq. 13)

with p(z2) any registered prior (standard normal, mixture of Gaussians, or the VampPrior of eq. 12, a mixture
of q(z2 | u_k)). The latent is the concatenation z = [z1, z2] `[*S, B, D1 + D2]`, so every estimator that
works through `posterior(x)`, `log_likelihood(x, z)`, `prior.log_prob(z)` and `sample(n)` runs unchanged:
`posterior(x)` draws z2 then z1 (reparameterised, batched over samples) and its `log_prob` is
log q(z2 | x) + log q(z1 | x, z2); the prior's is log p(z1 | z2) + log p(z2); the decoder reads both z1 and z2.
With a PixelCNN decoder (`PixelHVAE`) p(x | z1, z2) is autoregressive in x.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Size, Tensor, nn
from torch.distributions import Distribution, constraints

from vaelab.likelihoods import Likelihood
from vaelab.models.vae import VAE
from vaelab.nets.pixelcnn import PixelCNN
from vaelab.posteriors import PosteriorFamily
from vaelab.priors import Prior
from vaelab.protocols import HasPseudoInputs


class Join(nn.Module):
    """A network of two inputs, joint([net_a(a), net_b(b)]) (the VampPrior code's q(z1 | x, z2) and
    p(x | z1, z2) bodies). Inputs `[*Sa, Fa]`, `[*Sb, Fb]` whose leading dimensions broadcast to `[*S]`;
    output `[*S, out_features]`. `joint=None` returns the concatenated branch features."""

    def __init__(self, net_a: nn.Module, net_b: nn.Module, joint: nn.Module | None = None) -> None:
        super().__init__()
        self.net_a, self.net_b, self.joint = net_a, net_b, joint
        width = net_a.out_features + net_b.out_features
        self.out_features = joint.out_features if joint is not None else width

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return self.combine(self.net_a(a), b)

    def combine(self, ha: Tensor, b: Tensor) -> Tensor:
        """The output for branch-a features `ha` computed once (e.g. from x) and inputs `b` (e.g. z2 samples)."""
        hb = self.net_b(b)
        lead = torch.broadcast_shapes(ha.shape[:-1], hb.shape[:-1])
        h = torch.cat([ha.expand(*lead, ha.shape[-1]), hb.expand(*lead, hb.shape[-1])], -1)
        return h if self.joint is None else self.joint(h)


class HierarchicalPosterior(Distribution):
    """q(z | x) = q(z2 | x) q(z1 | x, z2) over z = [z1, z2] (eqs. 10, 14, 15): batch `[B]`, event `[D1 + D2]`.

    Args:
        q_z2: q(z2 | x), batch `[B]`, event `[D2]`.
        q_z1: z2 `[*S, B, D2]` -> q(z1 | x, z2) with batch `[*S, B]`, event `[D1]`.
        dim1: D1.

    `rsample(S)` draws z2 ~ q(z2 | x), then z1 ~ q(z1 | x, z2), both reparameterised: `[*S, B, D1 + D2]`.
    `log_prob(z)` = log q(z2 | x) + log q(z1 | x, z2), `[*S, B]`; for the z just drawn it reuses the
    q(z1 | x, z2) of the draw (the estimators' rsample-then-log_prob pattern costs one pass, not two).
    No closed-form mean or entropy: active units and the ELBO use samples.
    """

    has_rsample = True
    arg_constraints: dict = {}
    support = constraints.independent(constraints.real, 1)

    def __init__(self, q_z2: Distribution, q_z1: Callable[[Tensor], Distribution], dim1: int) -> None:
        self.q_z2, self.q_z1 = q_z2, q_z1
        self.dims = (dim1, q_z2.event_shape[-1])
        self._last: tuple | None = None  # (z, its version counter, grad mode, q(z1 | x, z2)) of the last draw
        super().__init__(q_z2.batch_shape, Size([sum(self.dims)]), validate_args=False)

    def rsample(self, sample_shape: Size = Size()) -> Tensor:
        z2 = self.q_z2.rsample(sample_shape)
        q1 = self.q_z1(z2)
        z = torch.cat([q1.rsample(), z2], -1)
        self._last = (z, z._version, torch.is_grad_enabled(), q1)
        return z

    def _conditional(self, z: Tensor, z2: Tensor) -> Distribution:
        last = self._last
        if last is not None and last[0] is z and last[1] == z._version and (last[2] or not torch.is_grad_enabled()):
            return last[3]
        return self.q_z1(z2)

    def log_prob(self, z: Tensor) -> Tensor:
        z1, z2 = z.split(self.dims, -1)
        return self.q_z2.log_prob(z2) + self._conditional(z, z2).log_prob(z1)

    def __repr__(self) -> str:
        return f"HierarchicalPosterior(batch_shape={tuple(self.batch_shape)}, dims={self.dims})"


class HierarchicalPrior(Prior):
    """p(z) = p(z1 | z2) p(z2) over z = [z1, z2] (eqs. 11-13).

    Args:
        top: p(z2) over `[D2]`, any prior.
        net: the body of p(z1 | z2), `[*S, D2] -> [*S, F]`.
        head: Gaussian head `[*S, F]` -> p(z1 | z2) over `[D1]` (a posterior family used as a conditional).
    """

    def __init__(self, top: Prior, net: nn.Module, head: PosteriorFamily) -> None:
        super().__init__(head.latent_dim + top.latent_dim)
        self.top, self.net, self.head = top, net, head
        self.dims = (head.latent_dim, top.latent_dim)

    def split(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """z `[*S, D1 + D2]` -> (z1 `[*S, D1]`, z2 `[*S, D2]`)."""
        z1, z2 = z.split(self.dims, -1)
        return z1, z2

    def conditional(self, z2: Tensor) -> Distribution:
        """p(z1 | z2) with batch `z2.shape[:-1]` (eq. 13)."""
        return self.head(self.net(z2))

    def log_prob(self, z: Tensor) -> Tensor:
        """log p(z1 | z2) + log p(z2), `[*S]`."""
        z1, z2 = self.split(z)
        return self.conditional(z2).log_prob(z1) + self.top.log_prob(z2)

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """Ancestral draws `[n, D1 + D2]`: z2 ~ p(z2), then z1 ~ p(z1 | z2)."""
        z2 = self.top.sample(n)
        return torch.cat([self.conditional(z2).sample(), z2], -1)

    def kl(self, q: Distribution) -> None:
        return None  # no closed form: the objectives estimate KL(q || p) by Monte Carlo

    @property
    def pseudo_inputs(self) -> Tensor | None:
        """The VampPrior's pseudo-inputs when p(z2) is one (for `vaelab sample`'s grid), else None."""
        return self.top.pseudo_inputs if isinstance(self.top, HasPseudoInputs) else None


class HVAE(VAE):
    """The two-level VAE; `encoder` + `posterior` give q(z2 | x), `q_z1` + `q_z1_head` give q(z1 | x, z2)
    (`q_z1.net_a` reads x, `q_z1.net_b` reads z2), `decoder` is a `Join` of z1 and z2 whose output feeds the
    likelihood. `latent_dim` = D1 + D2; latents are `[*S, B, D1 + D2]` = [z1, z2]. The config files build one
    with `model: {type: hvae, latent_dim: D1, options: {latent_dim2: D2}}`.

    >>> import torch, vaelab
    >>> from torch import nn
    >>> from vaelab.models.hvae import HierarchicalPrior, Join
    >>> D1, D2, F, P = 2, 3, 8, 16  # P pixels
    >>> model = vaelab.HVAE(
    ...     encoder=nn.Linear(P, F), posterior=vaelab.DiagonalGaussian(F, D2),  # q(z2 | x)
    ...     q_z1=Join(nn.Linear(P, F), nn.Linear(D2, F)), q_z1_head=vaelab.DiagonalGaussian(2 * F, D1),  # q(z1 | x, z2)
    ...     prior=HierarchicalPrior(vaelab.StandardNormal(D2), nn.Linear(D2, F), vaelab.DiagonalGaussian(F, D1)),
    ...     decoder=Join(nn.Linear(D1, F), nn.Linear(D2, F), nn.Linear(2 * F, P)),  # p(x | z1, z2)
    ...     likelihood=vaelab.Bernoulli((1, 4, 4)))
    >>> x = torch.zeros(3, 1, 4, 4)
    >>> z = model.posterior(x).rsample((5,))  # [z1, z2]
    >>> z.shape, model.log_joint(x, z).shape, model.sample(2).shape
    (torch.Size([5, 3, 5]), torch.Size([5, 3]), torch.Size([2, 1, 4, 4]))
    """

    def __init__(
        self,
        encoder: nn.Module,
        posterior: PosteriorFamily,
        q_z1: Join,
        q_z1_head: PosteriorFamily,
        prior: HierarchicalPrior,
        decoder: Join,
        likelihood: Likelihood,
    ) -> None:
        super().__init__(encoder, posterior, prior, decoder, likelihood)
        self.q_z1, self.q_z1_head = q_z1, q_z1_head
        self.latent_dims = prior.dims

    def posterior(self, x: Tensor) -> HierarchicalPosterior:
        """q(z1, z2 | x) for `x` `[B, *event]`: batch `[B]`, event `[D1 + D2]`; x's branch of q(z1 | x, z2) is
        computed once, its z2 branch once per sample."""
        flat = x.flatten(1)
        q_z2 = self.posterior_family(self.encoder(flat))
        hx = self.q_z1.net_a(flat)
        return HierarchicalPosterior(q_z2, lambda z2: self.q_z1_head(self.q_z1.combine(hx, z2)), self.latent_dims[0])

    def decode(self, z: Tensor) -> Tensor:
        """Likelihood parameters `[*S, B, *param_shape]` of p(x | z1, z2) for z = [z1, z2] `[*S, B, D1 + D2]`."""
        return self.decoder(*self.prior.split(z)).reshape(*z.shape[:-1], *self.likelihood.param_shape)


class PixelHVAE(HVAE):
    """HVAE with a PixelCNN p(x | z1, z2) (the paper's PixelHVAE): `decoder` maps (z1, z2) to conditioning
    features `[*S, B, F]`, `pixelcnn` runs on x with them (teacher forcing) for log p(x | z), and draws x
    pixel by pixel for `sample` and `reconstruct`."""

    def __init__(
        self,
        encoder: nn.Module,
        posterior: PosteriorFamily,
        q_z1: Join,
        q_z1_head: PosteriorFamily,
        prior: HierarchicalPrior,
        decoder: Join,
        pixelcnn: PixelCNN,
        likelihood: Likelihood,
    ) -> None:
        super().__init__(encoder, posterior, q_z1, q_z1_head, prior, decoder, likelihood)
        self.pixelcnn = pixelcnn

    def features(self, z: Tensor) -> Tensor:
        """The PixelCNN's conditioning features `[*S, B, F]` for z = [z1, z2]."""
        return self.decoder(*self.prior.split(z))

    def decode(self, z: Tensor) -> Tensor:
        raise NotImplementedError(
            "p(x | z) of a PixelCNN decoder depends on x: use log_likelihood(x, z), sample(n) or reconstruct(x)"
        )

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x | z) = sum_i log p(x_i | x_<i, z1, z2), `[*S, B]`: one teacher-forced PixelCNN pass over
        x repeated for every sample."""
        h = self.features(z)
        lead = h.shape[:-1]
        params = self.pixelcnn(x.expand(*lead, *x.shape[1:]), h)
        return self.likelihood.log_prob(x, params.reshape(*lead, *self.likelihood.param_shape))

    def _draw(self, z: Tensor, mean: bool) -> Tensor:
        x, params = self.pixelcnn.sample(self.features(z), self.likelihood)
        return self.likelihood.mean(params) if mean else x

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True) -> Tensor:
        """n images `[n, *event]`: z ~ p(z), then x ~ p(x | z) pixel by pixel; `mean=True` returns each
        pixel's conditional mean E[x_i | x_<i, z] along the drawn image instead of the draw."""
        return self._draw(self.prior.sample(n), mean)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Conditional means (as in `sample`) along an image drawn from p(x | z) at z ~ q(z | x), `[B, *event]`."""
        return self._draw(self.posterior(x).sample(), mean=True)
