"""CP-VAE's 1-D toy data (Lavda et al., sec. 5.1): x ~ 1/2 N(0.1, s^2) + 1/2 N(1, s^2), with s = 0.1.

The paper writes the mixture as 1/2 (N(0.1, 0.1) + N(1, 0.1)) and has 50,000 examples. Whether 0.1 is the variance
or the standard deviation is not said; the authors' code draws with `torch.distributions.Normal(mean, 0.1)`, whose
second argument is the standard deviation, so s = 0.1 here (two well separated modes). Splits: 50,000 training
points, as in the paper, plus 10,000 validation and 10,000 test points for early stopping and evaluation, each
split drawn from its own generator seeded by (seed, split). Labels: which component drew the point (0 or 1).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .dataset import derive_seed
from .registry import Built, SyntheticSpec, register_synthetic

NAME = "toy_mixture1d"
MEANS = (0.1, 1.0)
STD = 0.1
SPLIT_SIZES = {"train": 50000, "valid": 10000, "test": 10000}


def log_density(x: Tensor) -> Tensor:
    """The exact log p(x) of the mixture, elementwise."""
    means = torch.tensor(MEANS, dtype=x.dtype, device=x.device)
    comp = -0.5 * ((x.unsqueeze(-1) - means) / STD) ** 2 - math.log(STD * math.sqrt(2 * math.pi))
    return torch.logsumexp(comp, -1) - math.log(len(MEANS))


def log_density_of_points(x: Tensor) -> Tensor:
    """The exact log p(x) `[N]` of points x `[N, 1]` (the dataset's event shape)."""
    return log_density(x[..., 0])


def _generate(seed: int) -> Built:
    pixels, labels = {}, {}
    for split, n in SPLIT_SIZES.items():
        g = torch.Generator().manual_seed(derive_seed(seed, NAME, split))
        component = torch.randint(len(MEANS), (n,), generator=g)
        x = torch.tensor(MEANS)[component] + STD * torch.randn(n, generator=g)
        pixels[split] = x.unsqueeze(1).numpy().astype(np.float32)  # [N, 1]
        labels[split] = component.numpy()
    return Built(pixels, labels, note=f"1/2 N({MEANS[0]}, {STD}^2) + 1/2 N({MEANS[1]}, {STD}^2)")


TOY_MIXTURE1D = register_synthetic(
    SyntheticSpec(
        name=NAME,
        description="CP-VAE sec. 5.1 toy: 1-D mixture 1/2 N(0.1, 0.1^2) + 1/2 N(1, 0.1^2), 50,000/10,000/10,000, "
        "labels = component",
        event_shape=(1,),
        value_kind="real",
        generate=_generate,
        has_labels=True,
        split_sizes=SPLIT_SIZES,
        log_density=log_density_of_points,
    )
)
