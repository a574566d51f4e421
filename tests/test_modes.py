"""vaelab.nets.modes: eval_mode puts every submodule in eval mode and restores each one's own mode, also when the
block raises; config.parts.dry_run runs a module that way."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vaelab.config.parts import dry_run
from vaelab.nets.modes import eval_mode, in_eval_mode


def mixed() -> nn.Sequential:
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.5))
    net.train()
    net[2].eval()  # a submodule whose own mode differs from its parent's
    return net


def modes(net: nn.Module) -> list[bool]:
    return [m.training for m in net.modules()]


def test_modes_are_restored_after_the_block_and_after_an_exception():
    net = mixed()
    before = modes(net)
    with eval_mode(net, "not a module"):
        assert not any(modes(net))
    assert modes(net) == before
    with pytest.raises(RuntimeError), eval_mode(net):
        raise RuntimeError("boom")
    assert modes(net) == before


def test_in_eval_mode_and_dry_run_leave_batch_norm_statistics_and_modes_alone():
    net = mixed()
    before, stats = modes(net), net[1].running_mean.clone()

    @in_eval_mode
    def seen(model: nn.Module, x: torch.Tensor) -> list[bool]:
        model(x)
        return modes(model)

    assert not any(seen(net, torch.randn(5, 3)))
    dry_run(net, torch.randn(2, 3))
    assert modes(net) == before and torch.equal(net[1].running_mean, stats)
