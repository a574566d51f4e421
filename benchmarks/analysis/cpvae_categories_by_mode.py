"""Which mode of the 1-D CP-VAE toy each category decodes to, and what that does to generation.

For a trained toy run (default results/cpvae/toy_k150), draws `--draws` z ~ p(z | c = k) for every category k,
decodes E[x | z, k], and counts a draw for the mode (0.1 or 1, toy_mixture1d's MEANS) it is nearer. Prints the
categories per mode, the mass each mode gets under c ~ uniform and under c ~ q(c) (the run's
aggregated_posterior.json), and q(c)'s mean weight per category of each mode: the measured cause of Fig. 4's skew.

    VAELAB_DATA=... python benchmarks/analysis/cpvae_categories_by_mode.py results/cpvae/toy_k150
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from vaelab.app.runs import open_run
from vaelab.data.toy_mixture1d import MEANS
from vaelab.models.cpvae import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", default="results/cpvae/toy_k150")
    parser.add_argument("--draws", type=int, default=200, help="z draws per category")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = open_run(args.run_dir).model.eval()
    q = torch.tensor(json.loads((Path(args.run_dir) / "aggregated_posterior.json").read_text())["q_c"])
    k = q.numel()
    x = generate(model, torch.arange(k).repeat_interleave(args.draws)).reshape(k, args.draws).cpu()
    means = torch.tensor(MEANS, dtype=x.dtype)
    nearest = (x.unsqueeze(-1) - means).abs().argmin(-1)  # [K, draws]
    share = torch.stack([(nearest == m).double().mean(1) for m in range(len(means))], -1)  # [K, modes]
    owner = share.argmax(-1)
    both = int(((share > 0.05) & (share < 0.95)).any(-1).sum())
    print(f"{args.run_dir}: {k} categories, {args.draws} draws each; {both} decode to more than one mode (5-95%)")
    for m, mean in enumerate(MEANS):
        mine = owner == m
        print(
            f"mode {mean}: {int(mine.sum())} categories; mass under c ~ uniform {float(share[:, m].mean()):.3f}, "
            f"under c ~ q(c) {float((q.double() * share[:, m]).sum()):.3f}; "
            f"mean q(c) per category {float(q[mine].mean()) if mine.any() else 0.0:.4f}"
        )


if __name__ == "__main__":
    main()
