"""Run by tests/test_distributed.py under torchrun (2 ranks, gloo): `python fit_worker.py OUT` on each rank, in OUT.

`vaelab.fit` of `helpers.tiny_vae` on 201 `binary_images` (uneven over 2 ranks), 2 epochs, batch 20, into the default
run directory (`runs/fit-<rank 0's timestamp>`, each rank seeding its model differently: DDP starts them from rank 0's
weights); again into that directory (refused on every rank: `OUT/refused-rank<r>.txt` holds the error); then resumed
to 3 epochs; and 3 epochs uninterrupted from the same start into `OUT/full`. Every rank saves its final weights and its
`model.run_dir` to `OUT/fit-rank<r>.pt`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from helpers import binary_images, tiny_vae

import vaelab
from vaelab import distributed
from vaelab.errors import RunDirError


def run(out: Path) -> None:
    rank = int(os.environ["RANK"])
    x = binary_images(201)

    def start() -> torch.nn.Module:
        torch.manual_seed(100 + rank)  # different initial weights on each rank
        return tiny_vae()

    model = vaelab.fit(start(), "elbo", x, epochs=2, batch_size=20, lr=1e-2, progress=False)
    assert distributed.world() == (rank, 2)
    run_dir = model.run_dir
    try:
        vaelab.fit(tiny_vae(), "elbo", x, epochs=2, batch_size=20, run_dir=run_dir, progress=False)
    except RunDirError as err:
        (out / f"refused-rank{rank}.txt").write_text(str(err))
    model = vaelab.fit(tiny_vae(), "elbo", x, epochs=3, batch_size=20, lr=1e-2, run_dir=run_dir, resume=True,
                       progress=False)  # fmt: skip
    torch.save({"weights": model.state_dict(), "run_dir": str(model.run_dir)}, out / f"fit-rank{rank}.pt")
    vaelab.fit(start(), "elbo", x, epochs=3, batch_size=20, lr=1e-2, run_dir=out / "full", progress=False)


if __name__ == "__main__":
    run(Path(sys.argv[1]))
