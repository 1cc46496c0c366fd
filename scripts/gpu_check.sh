#!/usr/bin/env bash
# The checks that need a CUDA GPU, one step after another, everything teed to a log.
# Under 5 minutes on one H100 with a cold Triton cache (most of it compiling kernels).
#   bash scripts/gpu_check.sh            # log: out/gpu_check.log (LOG=... to change)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
LOG=${LOG:-out/gpu_check.log}
mkdir -p "$(dirname "$LOG")"
exec > >(tee "$LOG") 2>&1
export PYTHONUNBUFFERED=1

echo "== $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(hostname)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
$PYTHON -c "import torch, triton; assert torch.cuda.is_available(), 'no CUDA device'
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"

echo "== attention kernel tests, compiled for the GPU (bf16, fp16, fp32; D 72 and 128; causal, full, doc_ids)"
$PYTHON -m pytest -q tests/test_attention_triton.py

echo "== attention benchmark"
$PYTHON bench.py attention

echo "== training step of the 1B models (largest micro-batch that fits), SDPA then the Triton kernel"
$PYTHON bench.py step
$PYTHON bench.py step --attention triton --models vlm_frozen_1b

echo "== done in ${SECONDS}s"
