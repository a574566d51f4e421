#!/usr/bin/env bash
# VampPrior Table 1: PixelHVAE + VampPrior on static MNIST (paper -79.78). Projected: 3-4 h training on one GPU, IS 10-30 min (estimates; CPU: 0.17 steps/s, weeks).
set -euo pipefail
cd "$(dirname "$0")/../.."
run=results/vampprior/pixelhvae_vampprior_mnist_static
if [ -f "$run/checkpoints/latest" ]; then vaelab train --resume "$run" --device cuda --no-progress
else vaelab train configs/vampprior/pixelhvae_vampprior_mnist_static.yaml --budget full --run-dir "$run" --device cuda --no-progress; fi
