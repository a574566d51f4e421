"""Burn-in against the prior (Morningstar et al., SIWAE, app. D.1): before training, fit the decoder and the
encoder to latents drawn from the prior r(z) (held fixed), minimising over batches of training data

    L = E_{z_i ~ r(z), x_i} [ -log p(x_i | z_i) - log q(z_i | x_i) ]       (app. D.1, step 4)

so the decoder starts out predicting the data's marginal statistics from prior draws and q(z|x) starts out
spread over the prior (the cross-entropy H(r, q)). One draw z_i per data point; the paper runs one epoch.

It runs when the objective has `burn_in_epochs > 0` (an option of the stratified objectives), once, before
epoch 1 of a fresh run, with its own Adam (the run's settings) so the training optimiser starts fresh. A run
resumed from a checkpoint has done it already; one killed during it has no checkpoint and restarts from the
seeded initialisation, so resumed runs repeat it exactly. The data order of burn-in epoch b comes from a
generator seeded by (run seed, "burn-in", b); the prior draws from the global RNG (as the training draws).

Under DDP (the trainer's `world` > 1) each rank takes its `vaelab.distributed.shard` of that order (the same number
of steps on every rank), draws from its own stream (seeded from (seed, "rank", r, "burn-in")), the gradients are
averaged over the ranks, and the loss and gradient check are all-reduced, so every rank skips the same steps and the
weights stay the same everywhere. As in training (`vaelab.train.steps`), nothing is read back per step.
"""

from __future__ import annotations

import time

import torch
import torch.distributed as dist
from torch import Tensor

from vaelab import distributed
from vaelab.data.dataset import derive_seed
from vaelab.progress import progress
from vaelab.train.optimizers import build_optimizer
from vaelab.train.steps import StepTally, checked_step


def burn_in_loss(model, x) -> Tensor:
    """-log p(x_i | z_i) - log q(z_i | x_i) `[B]` with z_i ~ r(z) `[B, D]` (no gradient to the prior)."""
    z = model.prior.sample(x.shape[0])
    return -(model.log_likelihood(x, z) + model.posterior(x).log_prob(z))


def burn_in(trainer) -> dict:
    """Run the objective's burn-in epochs for `trainer` (a `Trainer`); returns metrics for the first epoch's
    row (`burn_in_loss`, `burn_in_time_s`), or {} when the objective asks for none."""
    epochs = trainer.objective.burn_in_epochs
    if not epochs:
        return {}

    cfg, model = trainer.cfg, trainer.model
    optimizer = build_optimizer(cfg, model)
    data, bs = trainer.placed("train", trainer.train_data(0)), cfg.data.batch_size
    model.train()
    trainer.seed_rank("burn-in")
    start, tally = time.perf_counter(), StepTally(trainer.device)
    for b in range(epochs):
        g = torch.Generator().manual_seed(derive_seed(cfg.seed, "burn-in", b))
        order = distributed.shard(torch.randperm(data.shape[0], generator=g), trainer.rank, trainer.world)
        order = order.to(data.index_device)
        bar = progress(
            range(0, order.numel(), bs),
            desc=f"burn-in {b + 1}/{epochs}",
            unit="step",
            enabled=cfg.train.progress and trainer.rank == 0,
        )
        for i in bar:
            loss = burn_in_loss(model, data.batch(order[i : i + bs])).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if trainer.world > 1:  # average the gradients over ranks, as DDP would
                for p in model.parameters():
                    if p.grad is not None:
                        dist.all_reduce(p.grad)
                        p.grad /= trainer.world
            # a non-finite loss or gradient skips the step, as training does (no clipping here)
            tally.add(*checked_step(optimizer, loss, list(model.parameters()), None, trainer.world))
    sums = tally.read()
    return {"burn_in_loss": sums.loss / max(sums.taken, 1), "burn_in_time_s": time.perf_counter() - start}
