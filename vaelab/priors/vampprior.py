"""VampPrior (Tomczak & Welling 2018): p(z) = sum_k w_k q(z | u_k), a mixture of the variational posterior
at K learned pseudo-inputs u_k (eq. 9; eq. 16 with learned weights w; uniform w_k = 1/K otherwise).

The K encoder passes over the pseudo-inputs happen once per `log_prob` call, i.e. once per batch of
samples `[*S, B, D]`, not once per sample; with gradients off and the model in eval mode (IS evaluation,
which calls `log_prob` once per chunk of samples) they are reused across calls until a tensor they read
changes (see `VampPrior.log_prob`). When q is a diagonal Gaussian the mixture density is evaluated
with one matmul (`vaelab.distributions.gaussian_mixture`), so K = 500 costs one small GEMM per batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution

from vaelab.distributions.diagonal_normal import DiagonalNormal
from vaelab.distributions.gaussian_mixture import diagonal_gaussian_mixture_log_prob
from vaelab.errors import ConfigError
from vaelab.posteriors.amortized import Amortized
from vaelab.priors.base import Prior


class VampPrior(Prior):
    """Mixture of `posterior(u_k)` over pseudo-inputs `u` `[K, *event]`.

    Args:
        posterior: maps inputs `[K, *event]` to q(z | u) with batch `[K]`; the model's encoder and family
            (held by reference, not as submodules: their weights belong to the model).
        pseudo_inputs: initial `[K, *event]` values in the data range [0, 1].
        learn_inputs: learn the pseudo-inputs (VampPrior) or keep them fixed ("VampPrior data").
        learn_weights: learn mixture weights (eq. 16) instead of 1/K.

    Registry name `vampprior` (options `components`, `init`, ...: the pseudo-inputs are built for the model's encoder).

    >>> import torch, vaelab
    >>> family = vaelab.DiagonalGaussian(16, 2)  # q(z | u) for 16-pixel inputs u
    >>> p = vaelab.VampPrior(2, family, pseudo_inputs=torch.rand(10, 16))
    >>> p.components, p.log_prob(torch.zeros(5, 3, 2)).shape, p.sample(4).shape
    (10, torch.Size([5, 3]), torch.Size([4, 2]))
    >>> from torch import nn
    >>> model = vaelab.VAE(nn.Flatten(), "diagonal_gaussian", {"type": "vampprior", "components": 10},
    ...                    nn.Linear(2, 16), "bernoulli", latent_dim=2, event_shape=(1, 4, 4))
    >>> model.prior.pseudo_inputs.shape
    torch.Size([10, 1, 4, 4])
    """

    def __init__(
        self,
        latent_dim: int,
        posterior: Callable[[Tensor], Distribution],
        pseudo_inputs: Tensor,
        learn_inputs: bool = True,
        learn_weights: bool = False,
    ) -> None:
        super().__init__(latent_dim)
        object.__setattr__(self, "_posterior", posterior)  # not a submodule: no second copy of its weights
        object.__setattr__(self, "_cache", None)  # (tensors, key, mixture) of `_reusable_mixture`
        if learn_inputs:
            self.raw_inputs = nn.Parameter(pseudo_inputs.clone())
        else:
            self.register_buffer("raw_inputs", pseudo_inputs.clone())
        self.logits = nn.Parameter(torch.zeros(pseudo_inputs.shape[0])) if learn_weights else None

    @property
    def pseudo_inputs(self) -> Tensor:
        """u `[K, *event]`, kept in the data range [0, 1] by a hardtanh as in the paper's code."""
        return F.hardtanh(self.raw_inputs, 0.0, 1.0)

    @property
    def components(self) -> int:
        return self.raw_inputs.shape[0]

    def mixture(self) -> tuple[Distribution, Tensor | None]:
        """q(z | u_k) with batch `[K]`, and the normalised log-weights `[K]` (None when uniform)."""
        weights = None if self.logits is None else torch.log_softmax(self.logits, 0)
        return self._posterior(self.pseudo_inputs), weights

    def log_prob(self, z: Tensor) -> Tensor:
        """log p(z) `[*S]` for `z` `[*S, D]`: one encoder pass over the K pseudo-inputs per call, or none when
        the mixture of the previous call is still valid (`_reusable_mixture`)."""
        q, log_w = self._reusable_mixture()
        if isinstance(q, DiagonalNormal):  # diagonal Gaussian: the matmul form
            return diagonal_gaussian_mixture_log_prob(z, q.loc, 2 * q.log_scale, log_w)
        comp = q.log_prob(z.unsqueeze(-2))  # any family: z against the K components ([*S, K, D] intermediate)
        if log_w is None:
            return torch.logsumexp(comp, -1) - math.log(self.components)
        return torch.logsumexp(comp + log_w, -1)

    def _inputs_of_mixture(self) -> list[nn.Module] | None:
        """The modules whose parameters and buffers (with the prior's own) determine `mixture()`: the encoder
        and posterior family of a `vaelab.posteriors.amortized.Amortized` posterior, or the posterior itself if it
        is a module; None for any other callable (its dependencies are unknown, so nothing is reused)."""
        post = self._posterior
        if isinstance(post, nn.Module):
            return [self, post]
        if type(post) is Amortized:
            return [self, *post.modules()]
        return None

    def _reusable_mixture(self) -> tuple[Distribution, Tensor | None]:
        """`mixture()`, reused from the previous call while it provably still holds: gradients off, the prior
        and the encoder in eval mode (deterministic, no buffer updates), and every parameter and buffer it
        reads the same tensor at the same version (in-place updates, e.g. optimizer steps or `copy_` under
        `no_grad`, bump it), storage, dtype and device. (As for autograd's own version check, writes through
        `.data` are not seen.) With gradients on nothing is reused, so training is unchanged."""
        modules = None if torch.is_grad_enabled() else self._inputs_of_mixture()
        reusable = modules is not None and not any(m.training for root in modules for m in root.modules())
        tensors = [t for m in modules for t in (*m.parameters(), *m.buffers())] if reusable else []
        if not reusable or any(t.is_inference() for t in tensors):  # inference tensors have no version counter
            object.__setattr__(self, "_cache", None)
            return self.mixture()
        key = [(t._version, t.data_ptr(), t.dtype, t.device) for t in tensors]
        cached = self._cache
        if cached is not None and cached[1] == key and all(a is b for a, b in zip(cached[0], tensors, strict=True)):
            return cached[2]
        mixture = self.mixture()
        object.__setattr__(self, "_cache", (tensors, key, mixture))
        return mixture

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """z `[n, D]`: components k ~ w, then z ~ q(z | u_k) (one encoder pass over the n chosen inputs)."""
        probs = torch.ones(self.components, device=self.raw_inputs.device)
        if self.logits is not None:
            probs = torch.softmax(self.logits, 0)
        k = torch.multinomial(probs, n, replacement=True)
        return self._posterior(self.pseudo_inputs[k]).sample()


def initial_pseudo_inputs(
    components: int, event_shape: tuple[int, ...], init: str, train_data: Tensor | None, mean: float, std: float
) -> Tensor:
    """Random N(mean, std^2) pixels (the paper's code: 0.05, 0.01 for binary MNIST) or `components`
    random training images (`init: data`, drawn with the global RNG, hence seeded by the run)."""
    if init == "random":
        return mean + std * torch.randn(components, *event_shape)
    if init == "data":
        if train_data is None:
            raise ConfigError("prior vampprior with init: data needs the training data; build the model through a run")
        if train_data.shape[0] < components:
            raise ConfigError(
                f"vampprior asks for {components} pseudo-inputs but the training set has {train_data.shape[0]}"
            )
        idx = torch.randperm(train_data.shape[0])[:components]
        return train_data[idx].float().clone()
    raise ConfigError(f"vampprior init must be 'random' or 'data', not {init!r}")
