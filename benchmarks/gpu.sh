#!/usr/bin/env bash
# The first CUDA measurement: vaelab's hot paths on the GPU and on the same machine's CPU (under 5 minutes).
#   bash benchmarks/gpu.sh [OUT_DIR]
# Installs what it needs (the CUDA build of torch that pip picks for the machine), then prints one table.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-/tmp}}"
python -c "import torch; assert torch.cuda.is_available()" 2>/dev/null || pip install -q torch -e . >/dev/null
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
VAELAB_DOWNLOAD=0 timeout 280 python benchmarks/bench_device.py --device cuda --cpu-too --out "$out/gpu-bench.json"
