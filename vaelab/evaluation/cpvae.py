"""What `vaelab evaluate` adds for a CP-VAE (Lavda et al.): the bound of eq. (7) computed with the exact sum over c
(its negative is Table 1's NVLB), its parts A, B1, B2 (eqs. 8-9), how the categories are used, and the clustering
accuracy of argmax q(c | x) when the data have labels (sec. 5.2).

The IS evaluator's "elbo" is a different, larger bound: E_{q(z|x)}[log p(x, z) - log q(z|x)] with c summed out of
both q and p; the joint bound here also pays for KL(q(c | z, x) || p(c | z)).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from tqdm.auto import tqdm

from vaelab.evaluation.clustering import clustering_accuracy
from vaelab.models.cpvae import conditional_pair
from vaelab.objectives.cpvae import exact_reconstruction, kl_terms


@torch.no_grad()
def evaluate_cpvae(
    model, data: Tensor, labels: Tensor | None = None, batch_size: int = 100, samples: int = 1, progress: bool = True
) -> dict:
    """NVLB = -L(x) (eq. 7, exact over c, `samples` draws of z per category) with standard error, mean A, B1, B2,
    the aggregated posterior's perplexity exp H(q(c)) over `data`, and `clustering_accuracy` against `labels`."""
    family, prior = conditional_pair(model, "CP-VAE evaluation")
    device = next(model.parameters()).device
    parts, probs = [], []
    batches = range(0, data.shape[0], batch_size)
    for start in tqdm(batches, desc="CP-VAE bound", unit="batch", disable=None if progress else True, leave=False):
        x = data[start : start + batch_size].to(device)
        q = model.posterior(x)
        rec = exact_reconstruction(model, x, q, samples)
        parts.append(torch.stack([rec, *kl_terms(q, prior)[:2]]).cpu())  # [3, B]: A, B1, B2
        probs.append(q.log_weights.exp().cpu())
    rec, kl_c, kl_z = torch.cat(parts, 1).double()
    nvlb = kl_c + kl_z - rec
    n = nvlb.numel()
    q_c = torch.cat(probs).double().mean(0)
    result = {
        "nvlb": float(nvlb.mean()),
        "nvlb_se": float(nvlb.std() / math.sqrt(n)) if n > 1 else float("nan"),
        "reconstruction": float(rec.mean()),
        "kl_c": float(kl_c.mean()),
        "kl_z": float(kl_z.mean()),
        "z_samples_per_category": samples,
        "categories": family.categories,
        "q_c_perplexity": float(torch.exp(-(q_c * q_c.clamp_min(1e-300).log()).sum())),
    }
    if labels is not None:
        pred = torch.cat(probs).argmax(1)
        result["clustering"] = clustering_accuracy(pred, labels[:n].cpu(), family.categories)
    return result
