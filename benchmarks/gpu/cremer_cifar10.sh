#!/usr/bin/env bash
# Cremer et al. (2018) Table 2, CIFAR-10 columns: the FFG- and Flow-trained models of Table 9 (appendix 6.1.3:
# discretized logistic, 32 latents, batch 100, Burda et al.'s lr schedule from 1e-3, warm-up over 20 epochs, early
# stopping on 5,000 held-out images), then `vaelab gaps` on 100 training points: log p(x), L[q*_Flow], L[q*_FFG],
# L[q] and the approximation and amortization gaps (paper: FFG 2.25 / 61.17, Flow 1.12 / 59.55 nats).
# Projected (estimate, not measured): 1-3 h training per model (at most 3,280 epochs of 450 steps; early stopping
# usually ends it sooner), ~10 min test IS (k = 5,000, 10,000 images), 0.5-1.5 h gaps per model; ~4-9 h for both.
# CPU, 1 thread, shared machine (measured on random tensors of CIFAR's shape; no CIFAR copy there): 3-4 training
# steps/s (~2 min an epoch, up to 4.5 days per model); 1,000 decoder passes with the gradient in z 1.6 s, so one
# step of the local fits (100 points x 100 samples) ~16 s and AIS (100 chains x 500 x 10 leapfrog) ~22 h per model.
# Needs the data on the machine (no download there): cifar-10-python.tar.gz (or cifar-10-batches-py/) in
# $VAELAB_DATA or ~/.cache/vaelab/cifar10 (`vaelab datasets --download cifar10` where there is a network).
# Rerunning continues: training from its last epoch's checkpoint, gaps from its finished batches of 20 points
# (`gaps-partial/`); a finished step (eval-test.json, gaps.json) is not redone.
set -euo pipefail
cd "$(dirname "$0")/../.."
for q in ffg flow; do
  run=results/cremer/table2_cifar10_$q
  if [ -f "$run/eval-test.json" ]; then :  # trained and evaluated (written once training is done)
  elif [ -f "$run/checkpoints/latest" ]; then vaelab train --resume "$run" --device cuda --no-progress
  else vaelab train configs/cremer/table2_cifar10_$q.yaml --budget full --run-dir "$run" --device cuda --no-progress; fi
  [ -f "$run/gaps.json" ] || vaelab gaps "$run" --batch-size 20 --device cuda --no-progress
done
