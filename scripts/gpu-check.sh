#!/usr/bin/env bash
# All CUDA/TensorRT checks in one call (under 8 minutes), for a lent GPU machine:
#   run(command="bash scripts/gpu-check.sh", timeout_s=540)
# Installs from the project's own files, runs the tests marked cuda/tensorrt and writes results under $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/edgeseq-gpu}
mkdir -p "$OUT"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  python3 --version
} 2>&1 | tee "$OUT/env.txt"
python3 -m venv /tmp/gpu-venv && . /tmp/gpu-venv/bin/activate
pip install -q "torch>=2.6" && pip install -q -e ".[onnx,dev,importers]" 2>&1 | tail -2
# mamba_ssm builds against the CUDA toolkit (minutes); tried, and its test skips, saying so, if it does not install
timeout 120 pip install -q --no-build-isolation "mamba-ssm>=2.2" 2>&1 | tail -2 || true
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/env.txt"
PYTHONUNBUFFERED=1 timeout 300 python -m pytest -q -p no:cacheprovider -m "cuda or tensorrt" -rs tests 2>&1 | tee "$OUT/gpu-tests.txt"
echo "exit: ${PIPESTATUS[0]}" | tee -a "$OUT/gpu-tests.txt"
