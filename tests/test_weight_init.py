"""`model.weight_init: he_normal` (the VampPrior authors' he_init): layer weights ~ N(0, 2 / fan_in), nothing else."""

from __future__ import annotations

import math

import pytest
import torch

from vaelab.config import load_config
from vaelab.config.build import build_model
from vaelab.errors import ConfigError

VAMP = ["model.prior={type: vampprior, components: 50}", "model.encoder={type: gated_mlp, hidden: [300, 300]}"]


def _model(*sets: str):
    torch.manual_seed(0)
    return build_model(load_config(None, [*VAMP, *sets]).model, (1, 28, 28))


def test_he_normal_redraws_layer_weights_with_variance_two_over_fan_in():
    default, he = _model(), _model("model.weight_init=he_normal")
    for (name, a), (_, b) in zip(default.named_modules(), he.named_modules(), strict=True):
        if isinstance(b, torch.nn.Linear) and b.weight.numel() > 10_000:
            fan_in = b.weight.shape[1]
            assert b.weight.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.02), name
            assert abs(b.weight.mean().item()) < 3 * math.sqrt(2 / fan_in / b.weight.numel()), name
            assert a.weight.std().item() < 0.7 * b.weight.std().item(), name  # PyTorch's: std 1 / sqrt(3 fan_in)
            assert torch.equal(a.bias, b.bias), name  # biases as PyTorch drew them (same seed)
    assert torch.equal(default.prior.raw_inputs, he.prior.raw_inputs)  # the pseudo-inputs keep their own init


def test_an_unknown_weight_init_is_refused():
    with pytest.raises(ConfigError, match="weight_init"):
        load_config(None, ["model.weight_init=xavier"])
