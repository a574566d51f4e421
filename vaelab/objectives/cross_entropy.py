"""The cross-entropy objective of deterministic classifiers (SIWAE app. B.1 baselines, `models/classifier.py`):
the exact log-likelihood log p(y | x) of such a model, so the trainer maximises it as it maximises a bound,
and validates and early-stops on it."""

from __future__ import annotations

from torch import Tensor

from vaelab.data.supervised import Supervised
from vaelab.objectives.bounds import Objective


class CrossEntropy(Objective):
    """log p(y | x) of a deterministic classifier: minus the cross-entropy loss. beta and the entropy weight
    weigh latent terms, which this model has none of, so they are ignored."""

    name = "cross_entropy"

    def __call__(self, model, x: Supervised, beta: float = 1.0, entropy_weight: float = 1.0) -> Tensor:
        return model.log_prob(x)

    def __repr__(self) -> str:
        return "CrossEntropy()"
