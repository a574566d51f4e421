#!/usr/bin/env bash
# The first CUDA measurement: vaelab's hot paths on the GPU and on the same machine's CPU (under 5 minutes):
# training steps/s (reading the device back at the epoch's end, and every step as before), IS pairs/s and AIS
# gradient evaluations/s, each with its ratio to the CPU figure, and whether a training step synchronises the host.
#   bash benchmarks/gpu.sh [OUT_DIR]        # PYTHON=... to choose the interpreter (default: python)
# It runs this checkout's vaelab (installing its dependencies with pip if they are missing). A GPU that torch cannot
# use (a CPU build of torch) is an error that says so; with no GPU at all it says so and runs the CPU figures as a
# quick smoke check (about a minute).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-/tmp}}"
py="${PYTHON:-python}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's vaelab
has_cuda() { "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; }
"$py" -c "import vaelab.train.trainer" 2>/dev/null || "$py" -m pip install -q -e . >/dev/null
if ! has_cuda && command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu.sh: this machine has a GPU but $("$py" -c 'import torch; print("torch", torch.__version__)') has no CUDA;" \
    "install torch's CUDA build (https://pytorch.org/get-started/locally/) and run again" >&2
  exit 1
fi
if ! has_cuda; then
  echo "gpu.sh: no CUDA device here (the figures need one); smoke check on the CPU instead (--device cpu --quick)" >&2
  VAELAB_DOWNLOAD=0 timeout 280 "$py" benchmarks/bench_device.py --device cpu --quick --repeats 1 \
    --out "$out/gpu-bench-cpu-smoke.json"
  exit 0
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
VAELAB_DOWNLOAD=0 timeout 280 "$py" benchmarks/bench_device.py --device cuda --cpu-too --out "$out/gpu-bench.json"
