#!/usr/bin/env bash
# SIWAE Fig. 5 / C.6: the column VAE (encoder sees the centre column, decoder the image), SELBO and SIWAE over
# K x T in {1, 2, 5, 10}^2, app. D.3's lr 1e-4 halved every 15,000 steps, 100 epochs. Projected: 65-90 GPU-h for
# the 32 runs (estimate); rerunning continues the sweep.
set -euo pipefail
cd "$(dirname "$0")/../.."
vaelab sweep configs/siwae/vae_mnist_column_2d.yaml --budget full --device cuda --no-progress \
  --grid posterior.components=1,2,5,10 --grid objective.options.samples=1,2,5,10 --objectives selbo,siwae \
  --metrics siwae_log_likelihood --out results/siwae/vae_mnist_column_2d
