"""Weight initialisations applied to a built model (`model.weight_init` in a config).

* `default`: PyTorch's own (Kaiming-uniform with a = sqrt(5) for linear and conv weights).
* `he_normal`: He et al. (2015): every linear and convolution weight ~ N(0, 2 / fan_in), biases as PyTorch sets
  them; what the VampPrior authors' code applies to its linear layers (jmtomczak/vae_vampprior utils/nn.py
  `he_init`). Parameters that are not layer weights (VampPrior's pseudo-inputs, a prior's means) are left alone.
"""

from __future__ import annotations

import math

import torch
from torch import nn

WEIGHT_INITS = ("default", "he_normal")


@torch.no_grad()
def he_normal_(model: nn.Module) -> nn.Module:
    """Redraw the weight of every `nn.Linear` and `nn.Conv*d` in `model` from N(0, 2 / fan_in); returns `model`."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d)):
            fan_in = m.weight[0].numel() if not isinstance(m, nn.ConvTranspose2d) else m.weight[:, 0].numel()
            m.weight.normal_(0.0, math.sqrt(2.0 / fan_in))
    return model


def apply_weight_init(model: nn.Module, name: str) -> nn.Module:
    """`model` with the weight initialisation `name` (one of `WEIGHT_INITS`) applied."""
    return he_normal_(model) if name == "he_normal" else model
