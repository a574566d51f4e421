"""Gumbel-Softmax (Concrete) relaxation of a categorical draw (Jang et al. 2017; CP-VAE, Lavda et al., eq. 11):

    c~ = softmax((log pi + g) / tau),   g_k ~ Gumbel(0, 1) i.i.d.,

a point of the simplex that is differentiable in log pi. As tau -> 0 it tends to one_hot(argmax_k (log pi_k + g_k)),
an exact draw c ~ Cat(pi) (the Gumbel-max trick); `temperature=0` returns that one-hot draw.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def gumbel_noise(shape: torch.Size | tuple[int, ...], like: Tensor) -> Tensor:
    """i.i.d. Gumbel(0, 1) draws `shape` on `like`'s device and dtype: g = -log E, E ~ Exp(1)."""
    e = torch.empty(shape, dtype=like.dtype, device=like.device).exponential_()
    return -e.clamp_min(torch.finfo(like.dtype).tiny).log()


def relaxed_one_hot(
    logits: Tensor, temperature: float, straight_through: bool = False, noise: Tensor | None = None
) -> Tensor:
    """A Gumbel-Softmax sample `[*batch, K]` for (unnormalised) `logits` `[*batch, K]`.

    `temperature` 0 gives the hard one-hot Gumbel-max draw (no gradient to `logits`). `straight_through`
    returns the hard draw in the forward pass and the relaxed sample's gradient in the backward pass (Jang et al.
    2017, sec. 2.2). `noise` (Gumbel draws of the logits' shape) fixes the randomness, e.g. to compare
    temperatures on the same draw.
    """
    g = gumbel_noise(logits.shape, logits) if noise is None else noise
    perturbed = logits + g
    hard = F.one_hot(perturbed.argmax(-1), logits.shape[-1]).to(logits.dtype)
    if temperature == 0:
        return hard
    soft = torch.softmax(perturbed / temperature, -1)
    return hard - soft.detach() + soft if straight_through else soft
