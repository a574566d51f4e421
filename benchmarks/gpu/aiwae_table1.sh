#!/usr/bin/env bash
# AIWAE Table 1 (MNIST, all 60,000 training images): AIWAE K in {1, 5, 50} x T in {5, 8, 11} and IWAE-K, 3,280
# epochs each, then the NLL protocol (16 chains from q(z|x) x 10,000 temperatures x 10 leapfrog steps) on the test
# set, and the table. Run directories are the ledger's (results/ledger.yaml, AIWAE section): results/aiwae/mnist/kK_tT
# and results/iwae_mnist/kK. Projected: ~80-200 GPU-h for the grid (estimate, not measured; K = 50, T = 11 alone
# ~10-15 h). Rerunning continues: a trained and evaluated run is skipped, an interrupted one resumed from its last
# checkpoint, an interrupted AIS evaluation from its saved batches.
set -euo pipefail
cd "$(dirname "$0")/../.."
train() {  # train CONFIG RUN [--set ...]: train, or resume, or skip a finished run; then its AIS and IS evaluations
  local config=$1 run=$2; shift 2
  if [ -f "$run/eval-test.json" ]; then :
  elif [ -f "$run/checkpoints/latest" ]; then vaelab train --resume "$run" --device cuda --no-progress
  else vaelab train "$config" --budget full --run-dir "$run" --device cuda --no-progress "$@"; fi
  [ -f "$run/eval-test-ais.json" ] || vaelab evaluate "$run" --ais aiwae --device cuda --no-progress
}
for k in 1 5 50; do
  train configs/iwae_mnist.yaml "results/iwae_mnist/k$k" --set "objective.options.samples=$k"
  for t in 5 8 11; do
    train configs/aiwae/mnist.yaml "results/aiwae/mnist/k${k}_t$t" \
      --set "objective.options.chains=$k" --set "objective.options.temperatures=$t"
  done
done
vaelab report results/aiwae/mnist/*/ results/iwae_mnist/*/ --out results/aiwae
vaelab ledger build
