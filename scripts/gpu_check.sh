#!/usr/bin/env bash
# The checks that need a CUDA GPU, one step after another, everything teed to a log. A step that
# fails or runs past its time limit is reported and the next one still runs (one GPU session, all the
# facts).
# In order: the kernel tests, attention (dense and packed rows: Triton, FlexAttention, variable-length,
# SDPA with a mask), evaluation throughput, the 1B training steps (dense, then the mixed stage on packed
# rows with each backend, eager and compiled), then the rehearsal: the text stage and one mixed arm at
# the 1B shapes, and the whole chain at small shapes (scripts/rehearsal.sh). Estimated 14 minutes on one
# H200 (the steps up to the dense 1B steps took about 5 on 2026-11-26; the rest is not yet timed on a GPU).
#   bash scripts/gpu_check.sh            # log: out/gpu_check.log (LOG=... to change)
#   STEP_BATCH=0 bash scripts/gpu_check.sh   # bench.py step searches the largest micro-batch (slower)
#   REHEARSAL=0 bash scripts/gpu_check.sh    # without the rehearsal (estimated 8 minutes)
# Without the package index (GPT-2's ranks): GPT2_TIKTOKEN=path/to/gpt2.tiktoken (docs/data.md).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
LOG=${LOG:-out/gpu_check.log}
STEP_BATCH=${STEP_BATCH:-8}
REHEARSAL=${REHEARSAL:-1}
mkdir -p "$(dirname "$LOG")"
exec > >(tee "$LOG") 2>&1
export PYTHONUNBUFFERED=1
FAILED=()

step() {  # step <seconds> <title> <command...>
    local limit=$1 title=$2; shift 2
    echo; echo "== $title  [$(date -u +%H:%M:%S), limit ${limit}s]"
    local t0=$SECONDS
    timeout --signal=INT --kill-after=10 "$limit" "$@"
    local rc=$?
    echo "== $title: exit $rc after $((SECONDS - t0))s"
    [ $rc -eq 0 ] || FAILED+=("$title (exit $rc)")
}

echo "== $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(hostname)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
$PYTHON -c "import torch, triton; assert torch.cuda.is_available(), 'no CUDA device'
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)" || exit 1

XDIST=$($PYTHON -c "import xdist" 2>/dev/null && echo "-n 4")
step 180 "attention kernel tests compiled for the GPU (bf16, fp16, fp32; D 72 and 128; causal, full, doc_ids)" \
    $PYTHON -m pytest -q $XDIST tests/test_attention_triton.py
step 120 "attention benchmark" $PYTHON bench.py attention --iters=10
step 120 "evaluation throughput of the frozen 1B VLM: batched against one item at a time" \
    $PYTHON bench.py eval
step 110 "training step of the 1B models, SDPA" \
    $PYTHON bench.py step --batch_size="$STEP_BATCH" --warmup=2 --iters=5
step 70 "training step of the frozen 1B VLM, Triton attention" \
    $PYTHON bench.py step --batch_size="$STEP_BATCH" --warmup=2 --iters=5 --attention=triton --models=vlm_frozen_1b
step 200 "training step of the 1B text model and the frozen 1B VLM, torch.compile" \
    $PYTHON bench.py step --batch_size="$STEP_BATCH" --warmup=3 --iters=5 --compile --models=text_1b,vlm_frozen_1b
for attn in triton flex sdpa; do  # the mixed stage's rows: 8 documents per row, images in 10 % of positions
    step 150 "mixed-stage step of the frozen 1B VLM on packed rows, $attn, torch.compile" \
        $PYTHON bench.py step --models=vlm_frozen_1b --batch_size=16 --packed=8 --warmup=3 --iters=5 \
        --compile --attention=$attn
done
for attn in triton flex sdpa; do
    step 90 "mixed-stage step of the frozen 1B VLM on packed rows, $attn, eager" \
        $PYTHON bench.py step --models=vlm_frozen_1b --batch_size=16 --packed=8 --warmup=2 --iters=5 \
        --attention=$attn
done
if [ "$REHEARSAL" = 1 ]; then
    step 540 "rehearsal: text + one mixed arm at the 1B shapes, then the small chain" \
        env OUT=out/rehearsal PYTHON="$PYTHON" bash scripts/rehearsal.sh
fi

echo; echo "== done in ${SECONDS}s; ${#FAILED[@]} step(s) failed"
for f in "${FAILED[@]}"; do echo "   FAILED: $f"; done
[ ${#FAILED[@]} -eq 0 ]
