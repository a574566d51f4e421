"""Run by tests/test_distributed.py under torchrun (2 ranks, gloo): `python ddp_worker.py OUT` on each rank.

Through the command line (`vaelab.app.cli.main`, the process group started from torchrun's environment): a 2-epoch
run `OUT/full`, and a 1-epoch run `OUT/part` resumed to 2 epochs, on 601 examples (uneven over 2 ranks). Through
the trainer: AIWAE with a VampPrior (`OUT/aiwae`) and SIWAE with burn-in (`OUT/burn_in`), one epoch each; every
rank saves its weights and AIWAE's step sizes to `OUT/<name>-rank<r>.pt` (outside the run directories); and a CP-VAE
on the labelled toy (`OUT/cpvae`), each rank saving its validation columns too.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from helpers import TINY

from vaelab import distributed
from vaelab.app.cli import main
from vaelab.config import load_config
from vaelab.recording import build_run
from vaelab.train.trainer import Trainer

UNEVEN = [*TINY, "--set", "data.subset=601", "--set", "data.valid_subset=101"]
#: `TINY` as `key=value` overrides for `load_config`.
SETTINGS = [*(TINY[i + 1] for i in range(0, len(TINY), 2) if TINY[i] == "--set"), "train.progress=false"]
#: A CP-VAE on the labelled 1-D toy: 101 validation points in blocks of 51 and 50, batches of 20.
CPVAE = [
    "data.name=toy_mixture1d", "data.subset=201", "data.valid_subset=101", "data.eval_batch_size=20",
    "model.posterior={type: categorical_gaussian, categories: 2, hidden: 16}", "model.prior={type: conditional}",
    "model.likelihood={type: gaussian, variance: learned, sigma: 0.1}", "objective.type=cpvae",
]  # fmt: skip


def cli(*args: str) -> None:
    status = main(list(args))
    assert status == 0, f"vaelab {' '.join(args)} exited with {status}"


def train_and_save(out: Path, name: str, overrides: list[str], validate: bool = False) -> None:
    """Train one epoch through `Trainer` into `out/name`; save this rank's weights (and AIWAE's step sizes; with
    `validate`, what this rank's `Trainer.validate` gives after training)."""
    cfg = load_config(None, [*SETTINGS, *overrides])
    run_dir = out / name
    distributed.on_rank0(lambda: run_dir.mkdir())
    run = build_run(cfg, run_dir, "cpu")
    trainer = Trainer(cfg, run_dir, run.model, run.dataset, run.device)
    trainer.fit()
    saved = {"weights": run.model.state_dict(), **trainer.objective.state_dict()}
    if validate:
        saved["validate"] = trainer.validate()
    torch.save(saved, out / f"{name}-rank{distributed.world()[0]}.pt")


def run(out: Path) -> None:
    cli("train", *UNEVEN, "--set", "train.epochs=2", "--run-dir", str(out / "full"))
    cli("train", *UNEVEN, "--run-dir", str(out / "part"))
    cli("train", "--resume", str(out / "part"), "--set", "train.epochs=2", "--no-progress", "--no-eval")
    train_and_save(
        out,
        "aiwae",
        [
            "objective.type=aiwae",
            "objective.options={chains: 2, temperatures: 3, leapfrog_steps: 1}",
            "model.prior={type: vampprior, components: 5}",
            "data.subset=201",
        ],
    )
    train_and_save(
        out,
        "burn_in",
        [
            "objective.type=siwae",
            "objective.options={samples: 2, burn_in_epochs: 1}",
            "model.posterior={type: gaussian_mixture, components: 2}",
            "data.subset=201",
        ],
    )

    train_and_save(out, "cpvae", CPVAE, validate=True)


if __name__ == "__main__":
    run(Path(sys.argv[1]))
