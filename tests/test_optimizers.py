"""`adam_normgrad` (VampPrior sec. 5.1) against an update computed by hand, step by step."""

import math

import pytest
import torch

from vaelab.config import ConfigError, load_config
from vaelab.train.optimizers import AdamNormGrad, make_adam


def reference_steps(p0: torch.Tensor, grads: list[torch.Tensor], lr: float, b1=0.9, b2=0.999, eps=1e-8):
    """Adam written out in plain Python on g / (||g|| + 1e-7), one scalar at a time."""
    p, m, v = p0.tolist(), [0.0] * p0.numel(), [0.0] * p0.numel()
    for t, g in enumerate(grads, start=1):
        norm = math.sqrt(sum(gi * gi for gi in g.tolist())) + 1e-7
        for i, gi in enumerate(g.tolist()):
            gi /= norm
            m[i] = b1 * m[i] + (1 - b1) * gi
            v[i] = b2 * v[i] + (1 - b2) * gi * gi
            mhat, vhat = m[i] / (1 - b1**t), v[i] / (1 - b2**t)
            p[i] -= lr * mhat / (math.sqrt(vhat) + eps)
    return torch.tensor(p, dtype=torch.float64)


@pytest.mark.parametrize("fused", [False, True])
def test_normgrad_matches_hand_computed_update(fused):
    torch.manual_seed(0)
    p0 = torch.randn(5, dtype=torch.float64)
    q0 = torch.randn(3, dtype=torch.float64)  # a second tensor: normalised by its own norm, not the global one
    grads_p = [torch.randn(5, dtype=torch.float64) * s for s in (1e-3, 10.0, 0.5)]
    grads_q = [torch.randn(3, dtype=torch.float64) * s for s in (100.0, 1e-2, 3.0)]
    p, q = torch.nn.Parameter(p0.clone()), torch.nn.Parameter(q0.clone())
    opt = AdamNormGrad([p, q], lr=0.01, fused=fused)
    for gp, gq in zip(grads_p, grads_q, strict=True):
        p.grad, q.grad = gp.clone(), gq.clone()
        opt.step()
    torch.testing.assert_close(p.detach(), reference_steps(p0, grads_p, 0.01), rtol=0, atol=1e-12)
    torch.testing.assert_close(q.detach(), reference_steps(q0, grads_q, 0.01), rtol=0, atol=1e-12)


def test_normgrad_differs_from_plain_adam():
    """The normalisation changes the trajectory when gradient scales vary (a planted no-op would pass above
    only if the reference were wrong too; this pins that the two optimisers really differ)."""
    p0 = torch.tensor([1.0, -2.0], dtype=torch.float64)
    grads = [torch.tensor([3.0, 4.0], dtype=torch.float64), torch.tensor([0.03, -0.04], dtype=torch.float64)]
    a, b = torch.nn.Parameter(p0.clone()), torch.nn.Parameter(p0.clone())
    opt_a, opt_b = torch.optim.Adam([a], lr=0.1), AdamNormGrad([b], lr=0.1)
    for g in grads:
        a.grad, b.grad = g.clone(), g.clone()
        opt_a.step()
        opt_b.step()
    assert (a - b).abs().max() > 1e-3
    torch.testing.assert_close(b.detach(), reference_steps(p0, grads, 0.1), rtol=0, atol=1e-12)


def test_config_selects_optimizer():
    cfg = load_config(None, ["train.optimizer=adam_normgrad"])
    params = [torch.nn.Parameter(torch.zeros(2))]
    assert isinstance(make_adam(cfg.train.optimizer, [{"params": params}], params, lr=1e-3), AdamNormGrad)
    with pytest.raises(ConfigError, match="adam_normgrad"):
        load_config(None, ["train.optimizer=adamw"])
