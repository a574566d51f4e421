"""Deterministic classifiers: the baselines of SIWAE app. B.1.

* "pyramid": an MLP with 5 hidden layers of 256 units, for the peak deterministic accuracy;
* "bottleneck": the VIB's architecture without the noise, x -> MLP -> z (2-D, linear) -> affine -> logits.

They are trained with the `cross_entropy` objective (`vaelab/objectives/cross_entropy.py`).
"""

from __future__ import annotations

from torch import Tensor, nn

from vaelab.data.supervised import Supervised, inputs_of
from vaelab.likelihoods import Likelihood


class Classifier(nn.Module):
    """logits = decoder(encoder(x)) `[B, C]`; p(y | x) = softmax(logits)_y through the label likelihood."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, likelihood: Likelihood) -> None:
        super().__init__()
        self.encoder, self.decoder, self.likelihood = encoder, decoder, likelihood
        self.event_shape = likelihood.event_shape

    def logits(self, data: Supervised | Tensor) -> Tensor:
        """Class logits `[B, C]` for a supervised batch or bare inputs `[B, *input_event]`."""
        return self.decoder(self.encoder(inputs_of(data).flatten(1)))

    def log_prob(self, data: Supervised) -> Tensor:
        """log p(y | x) `[B]`."""
        return self.likelihood.log_prob(data.targets, self.logits(data))
