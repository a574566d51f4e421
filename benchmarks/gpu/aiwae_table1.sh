#!/usr/bin/env bash
# AIWAE Table 1 (MNIST, all 60,000 training images): AIWAE K in {1, 5, 50} x T in {5, 8, 11} and IWAE-K, 3,280
# epochs each, then the NLL protocol (16 chains from q(z|x) x 10,000 temperatures x 10 leapfrog steps) on the test
# set and the table. Projected: ~80-90 GPU-h for one repeat (estimate; K = 50, T = 11 alone ~10-15 h). Rerunning
# continues: finished sweep points are reused, interrupted ones resumed.
set -euo pipefail
cd "$(dirname "$0")/../.."
vaelab sweep configs/aiwae/mnist.yaml --budget full --device cuda --no-progress \
  --grid objective.options.chains=1,5,50 --grid objective.options.temperatures=5,8,11 --out results/aiwae/mnist-grid
vaelab sweep configs/iwae_mnist.yaml --budget full --device cuda --no-progress \
  --grid objective.options.samples=1,5,50 --out results/iwae_mnist-grid
vaelab report results/aiwae/mnist-grid/*/ results/iwae_mnist-grid/*/ --evaluate --ais aiwae --out results/aiwae
