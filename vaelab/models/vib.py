"""The variational information bottleneck classifier (Alemi et al. 2017; SIWAE sec. 4.2 and app. B.1).

    inputs x -> encoder -> q(z | x) (any posterior family) ;  prior r(z) ;  z -> decoder -> logits -> p(y | z)

It is the VAE composition with a label likelihood: its data are :class:`~vaelab.data.supervised.Supervised`
pairs (x, y), `posterior(data)` reads x and `log_likelihood(data, z)` = log p(y | z) scores y, so every
objective applies unchanged: the ELBO becomes E_q[log p(y|z)] - beta KL(q(z|x) || r(z)) (the VIB objective,
Alemi et al. eq. 6, beta = 0.05 in SIWAE app. B.1). At beta = 1 the ELBO, IWAE and SIWAE bound the evidence
of the generative model r(z) p(y | z), log p(y) = log E_r[p(y | z)], which does not depend on x: the input
enters only through the proposal q(z | x). Predictions use the posterior predictive E_q[p(y | z)] instead
(`vaelab.evaluation.calibration`).
"""

from __future__ import annotations

from torch import Tensor
from torch.distributions import Distribution

from vaelab.data.supervised import Supervised, inputs_of
from vaelab.errors import DataError
from vaelab.models.vae import VAE


class VIB(VAE):
    """A VAE over labels: `event_shape` is `()` (a label), the encoder reads inputs `[B, *input_event]`."""

    def posterior(self, data: Supervised | Tensor) -> Distribution:
        """q(z | x) for a supervised batch or bare inputs `[B, *input_event]` (prediction needs no labels)."""
        return super().posterior(inputs_of(data))

    def log_likelihood(self, data: Supervised, z: Tensor) -> Tensor:
        """log p(y | z) `[*S, B]` for latents `[*S, B, D]`."""
        if not isinstance(data, Supervised):
            raise DataError("a VIB classifier scores labels: pass its data as Supervised(inputs, targets)")
        return self.likelihood.log_prob(data.targets, self.decode(z))
