#!/usr/bin/env bash
# All CUDA/TensorRT checks and GPU benchmarks in one call (under 8 minutes), for a lent GPU machine:
#   run(command="bash scripts/gpu-check.sh", timeout_s=540)
# The lent machines reach no package index: this uses the image's python3 (which holds PyTorch, onnx, onnxruntime,
# transformers, typer, safetensors, pytest) and installs edgeseq itself with --no-deps --no-index.
# Writes env.txt, gpu-tests.txt and gpu-train.md under $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/edgeseq-gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  $PY --version
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
  $PY -c "import tensorrt; print('tensorrt', tensorrt.__version__)" 2>/dev/null || echo "tensorrt: not installed"
  $PY -c "import mamba_ssm; print('mamba_ssm', mamba_ssm.__version__)" 2>/dev/null || echo "mamba_ssm: not installed"
} 2>&1 | tee "$OUT/env.txt"
$PY -m pip install -q --no-deps --no-index --no-build-isolation -e . 2>&1 | tail -3
PYTHONUNBUFFERED=1 timeout 300 $PY -m pytest -q -p no:cacheprovider -m "cuda or tensorrt" -rs $(grep -rlE "mark\.(cuda|tensorrt)" tests) 2>&1 | tee "$OUT/gpu-tests.txt"
echo "exit: ${PIPESTATUS[0]}" | tee -a "$OUT/gpu-tests.txt"
PYTHONUNBUFFERED=1 timeout 150 $PY benchmarks/gpu_train.py --out "$OUT/gpu-train.md" 2>&1 | tail -12
