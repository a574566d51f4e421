#!/usr/bin/env bash
# SIWAE Fig. C.7: the full-image VAE, SELBO and SIWAE over K x T in {1, 2, 5, 10}^2 (app. C.5, D.3). Projected:
# 20-40 GPU-h (estimate); rerunning continues the sweep.
set -euo pipefail
cd "$(dirname "$0")/../.."
vaelab sweep configs/siwae/vae_mnist_2d.yaml --budget full --device cuda --no-progress \
  --grid posterior.components=1,2,5,10 --grid objective.options.samples=1,2,5,10 --objectives selbo,siwae \
  --metrics siwae_log_likelihood --out results/siwae/vae_mnist_2d
