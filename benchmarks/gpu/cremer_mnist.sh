#!/usr/bin/env bash
# Cremer et al. (2018) Table 2, MNIST columns at the paper's full protocol: the Flow-trained model (appendix 6.1.2,
# configs/cremer/table2_mnist_flow.yaml), then `vaelab gaps` on the paper's 1,000 training points for both the FFG
# model (weights shipped in results/cremer/table2_mnist_ffg) and the Flow model (paper: approximation / amortization
# 1.43 / 1.34 nats for FFG, 1.44 / 1.41 for Flow). The CPU ledger rows use the first 100 points.
# CPU, 1 thread (measured on this project's machine): Flow training about 7.8 h; the gaps 82-87 min per batch of 25
# points (q*_FFG 12,000-12,700 steps in 9 min, q*_Flow 21,500-23,300 steps in 66 min, AIS 4 min), so about 55 h per model for
# 1,000 points before stopped points left the computation (about 28% less since, projected from batch 0's steps).
# One GPU (estimate, not measured): training 2-3 h (about 2 M steps, launch-bound); gaps in batches of 500 points,
# each about 12,700 + 23,300 optimisation steps of 2-10 ms and AIS, about 0.5-1 h per model; 3-5 h in all.
# Rerunning continues: training from its last checkpoint, gaps from finished batches (`gaps-1000/gaps-partial/`).
set -euo pipefail
cd "$(dirname "$0")/../.."
flow=results/cremer/table2_mnist_flow
if [ -f "$flow/eval-test.json" ]; then :  # trained and evaluated (written once training is done)
elif [ -f "$flow/checkpoints/latest" ]; then vaelab train --resume "$flow" --device cuda --no-progress
else vaelab train configs/cremer/table2_mnist_flow.yaml --budget full --run-dir "$flow" --device cuda --no-progress; fi
for run in results/cremer/table2_mnist_ffg "$flow"; do
  [ -f "$run/gaps-1000/gaps.json" ] || vaelab gaps "$run" --subset 1000 --batch-size 500 --out "$run/gaps-1000" \
    --device cuda --no-progress
done
