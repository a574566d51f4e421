#!/usr/bin/env bash
# VampPrior Table 1: ConvHVAE + VampPrior on static MNIST (paper -81.09 nats). Projected: 2-3 h training on one
# GPU, IS (k = 5,000, 10,000 test images) 10-30 min (estimates; CPU: 0.26 steps/s, weeks).
set -euo pipefail
cd "$(dirname "$0")/../.."
run=results/vampprior/convhvae_vampprior_mnist_static
if [ -f "$run/checkpoints/latest" ]; then vaelab train --resume "$run" --device cuda --no-progress
else vaelab train configs/vampprior/convhvae_vampprior_mnist_static.yaml --budget full --run-dir "$run" --device cuda --no-progress; fi
