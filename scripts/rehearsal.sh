#!/usr/bin/env bash
# The 1B chain rehearsed end to end: the README's commands, through its configs, on small data made in
# every real format (scripts/rehearsal_data.py), from preparing the raw files to comparing the arms.
#
#   bash scripts/rehearsal.sh --small   # CPU, tiny shapes (CI runs it: tests/test_rehearsal.py)
#   bash scripts/rehearsal.sh           # one GPU: the text stage and one mixed arm at the 1B shapes, a
#                                       # full checkpoint written, read back, timed and deleted; then the
#                                       # whole chain again at the small shapes on the GPU
#
# Everything runs from the rehearsal folder ($OUT, default out/rehearsal_small or out/rehearsal), so the
# configs' relative paths (data/..., weights/..., out/...) land there and nothing of a real run is touched.
# Only sizes, step counts and the device are overridden; each override is named below. The log of every
# stage (step time, tokens/s, MFU, peak memory, checkpoint write and read seconds) goes to
# $OUT/rehearsal.log, with a summary at its end. Env: OUT, PYTHON, TORCHRUN; on a machine without the
# package index, GPT2_TIKTOKEN names a copy of GPT-2's ranks file (docs/data.md). Optional packages that
# are missing (zstandard, transformers, tokenizers, lm-eval) are said in the log, and what needs them is
# done without them or skipped. The GPU run needs about 45 GB of disk at its peak.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
SMALL=0
for arg in "$@"; do
    case $arg in
        --small) SMALL=1 ;;
        *) echo "usage: bash scripts/rehearsal.sh [--small]" >&2; exit 2 ;;
    esac
done
PYTHON=${PYTHON:-python}
TORCHRUN=${TORCHRUN:-torchrun}
if [ $SMALL = 1 ]; then OUT=${OUT:-out/rehearsal_small}; else OUT=${OUT:-out/rehearsal}; fi
rm -rf "$OUT" && mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
exec > >(tee "$OUT/rehearsal.log") 2>&1
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
cd "$OUT"
C=$REPO/config
RUN="$TORCHRUN --standalone --nproc_per_node=1"  # the README's launcher, one process (FSDP2 included)
SUMMARY=()

stage() {  # stage <title> <command...>: run it, time it, keep its log lines about speed and checkpoints
    local title=$1; shift
    echo; echo "== $title  [$(date -u +%H:%M:%S)]"; echo "\$ $*"
    local t0=$SECONDS
    "$@" 2>&1 | tee "$OUT/stage.log" || { summary "FAILED at '$title'"; exit 1; }
    local last ckpt
    last=$(grep -E '^step [0-9]+/[0-9]+:' "$OUT/stage.log" | tail -1 | sed 's/^step [^:]*: //' || true)
    ckpt=$(grep -E ': (written|read) in ' "$OUT/stage.log" | sed "s|$OUT/||" | tail -2 | tr '\n' ';' || true)
    SUMMARY+=("$(printf '%-34s %4ss  %s %s' "$title" $((SECONDS - t0)) "${last:+last step: $last}" "$ckpt")")
}

summary() {
    echo; echo "== $1 after ${SECONDS}s on $DEVICE_NAME"
    for line in "${SUMMARY[@]}"; do echo "   $line"; done
}
DEVICE_NAME=$($PYTHON -c "import torch
print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU')")

# The overrides. Sizes and step counts only, besides the device: on the CPU, attention = 'sdpa' (the
# Triton kernel runs there only under its interpreter, far too slow for a rehearsal).
if [ $SMALL = 1 ]; then
    SHAPE="--n_layer=2 --n_head=2 --n_embd=64 --block_size=128 --batch_size=4 --gradient_accumulation_steps=1"
    TEXT="$SHAPE --max_iters=12 --warmup_iters=2 --eval_interval=6 --eval_iters=2 --log_interval=3"
    MIXED="$SHAPE --max_iters=4 --eval_interval=4 --eval_iters=2 --log_interval=2"
    FINETUNE="--block_size=256 --batch_size=4 --gradient_accumulation_steps=1 --max_iters=4 --eval_interval=4
              --eval_iters=2 --log_interval=2"
    IMAGES="--image_size=48"  # the tiny tower's input (9 image positions)
    LLAVA_TOKENS="--max_tokens=256"
    EVAL="--limit=4 --batch_size=8 --max_new_tokens=8"  # a seeded subset of each task, short answers
    SAMPLE="--max_new_tokens=16"
    DEVICE=$([ "$DEVICE_NAME" = CPU ] && echo --attention=sdpa || true)
else
    TEXT="--max_iters=20 --warmup_iters=5 --eval_interval=10 --eval_iters=2 --log_interval=1
          --gradient_accumulation_steps=1 --milestones=(0.8,)"
    MIXED="--max_iters=10 --eval_interval=100 --eval_iters=2 --log_interval=1 --gradient_accumulation_steps=1"
    IMAGES="--image_size=384"
    DEVICE=""
    SAMPLE=""
fi

# --- the data, in the real formats ------------------------------------------------------------------
SIZE_FLAG=$([ $SMALL = 1 ] && echo --small || true)
stage "make the raw data" $PYTHON "$REPO/scripts/rehearsal_data.py" --root=. $SIZE_FLAG
stage "prepare_data.py text" $PYTHON "$REPO/prepare_data.py" text --input=data/raw/dclm --out=data/dclm_gpt2 \
    --tokenizer=gpt2
stage "prepare_data.py captions" $PYTHON "$REPO/prepare_data.py" captions --input='data/raw/laion/*.tar' \
    --out=data/captions_384 $IMAGES
stage "prepare_data.py llava" $PYTHON "$REPO/prepare_data.py" llava --input=data/raw/llava_v1_5_mix665k.json \
    --images=data/llava_images --out=data/llava_665k $IMAGES ${LLAVA_TOKENS:---max_tokens=2048}

if [ $SMALL = 0 ]; then
    # --- the 1B shapes on one GPU: the text stage, cut at step 10 and resumed, against an uncut run ----
    stage "text 1B, to step 10" $RUN "$REPO/train.py" "$C/text_1b.py" $TEXT --stop_at_step=10
    stage "text 1B, resumed to 20" $RUN "$REPO/train.py" "$C/text_1b.py" $TEXT --init_from=resume
    stage "text 1B, uncut (reference)" $RUN "$REPO/train.py" "$C/text_1b.py" $TEXT \
        --out_dir=out/text_1b_uncut \
        --milestones="()"  # disk: ~17 GB per ckpt.pt with Adam's state, 5.7 GB per milestone
    stage "resume gives identical losses" $PYTHON "$REPO/scripts/rehearsal_check.py" losses \
        out/text_1b/log.jsonl out/text_1b_uncut/log.jsonl
    rm -rf out/text_1b_uncut
    stage "mixed 1B, frozen mlp2" $RUN "$REPO/train.py" "$C/mixed_1b.py" $MIXED
    rm -rf out  # 1B checkpoints: about 17 GB with Adam's state; the small chain follows
    summary "the 1B shapes done"
    OUT=$OUT/small exec bash "$0" --small
fi

# --- the chain: text -> four mixed arms -> four finetunes -> both suites -> comparison -> samples ------
stage "text" $RUN "$REPO/train.py" "$C/text_1b.py" $TEXT $DEVICE
stage "text, cut at step 6" $RUN "$REPO/train.py" "$C/text_1b.py" $TEXT $DEVICE --out_dir=out/text_1b_cut \
    --stop_at_step=6
stage "text, resumed" $RUN "$REPO/train.py" "$C/text_1b.py" $TEXT $DEVICE --out_dir=out/text_1b_cut \
    --init_from=resume
stage "resume gives identical losses" $PYTHON "$REPO/scripts/rehearsal_check.py" losses \
    out/text_1b/log.jsonl out/text_1b_cut/log.jsonl
RUNS=(080_frozen_mlp2 080_unfrozen_mlp2 080_frozen_mlp1 100_frozen_mlp2)  # the README's four arms
MIXED_ARMS=("" "$C/arm_unfrozen.py" "$C/arm_mlp1.py" "$C/start_100.py")
FINETUNE_ARMS=("" "$C/arm_unfrozen.py" "$C/arm_mlp1.py" "--init_from=out/mixed_1b/100_frozen_mlp2/ckpt.pt")
for i in 0 1 2 3; do  # MIXED before the overlay: start_100 sizes its warmup from max_iters
    stage "mixed ${RUNS[$i]}" $RUN "$REPO/train.py" "$C/mixed_1b.py" $MIXED $DEVICE ${MIXED_ARMS[$i]}
done
for i in 0 1 2 3; do
    stage "finetune ${RUNS[$i]}" $RUN "$REPO/train.py" "$C/finetune_1b.py" $FINETUNE $DEVICE \
        ${FINETUNE_ARMS[$i]}
done
IMAGE=data/eval/vqav2/val2014/COCO_val2014_000000000042.jpg  # a VQAv2 image, for sample.py
TEXT_SUITE=$([ -d data/lm_eval ] && echo ,text_suite || true)  # lm-eval installed (rehearsal_data.py)
for run in out/finetune_1b/*/; do
    stage "eval.py $(basename "$run")" $PYTHON "$REPO/eval.py" --ckpt="$run/ckpt.pt" \
        --tasks=vision_suite$TEXT_SUITE --data_root=data/eval --lm_eval_tasks=data/lm_eval $EVAL
done
stage "eval.py --compare" $PYTHON "$REPO/eval.py" --compare='out/finetune_1b/*' --plot=out/ablations_1b.png
stage "sample.py: a question" $PYTHON "$REPO/sample.py" --ckpt=out/finetune_1b/080_frozen_mlp2/ckpt.pt \
    --image=$IMAGE --prompt="What colour is the box?" $SAMPLE
stage "sample.py: a caption" $PYTHON "$REPO/sample.py" --ckpt=out/finetune_1b/080_frozen_mlp2/ckpt.pt \
    --image=$IMAGE --caption $SAMPLE
stage "sample.py: text" $PYTHON "$REPO/sample.py" --ckpt=out/text_1b/ckpt.pt --prompt="The old city" $SAMPLE

# --- the DCLM-1B route (docs/data.md): NeoX-tokenised data, a DCLM-layout folder, an arm started from it ---
# The folder is this rehearsal's own: a text run on the NeoX data, exported in DCLM-1B's layout beside the
# NeoX-style tokenizer.json that rehearsal_data.py trained (the real folder is a 5.8 GB download).
if [ -f weights/DCLM-1B/tokenizer.json ]; then
    N="--tokenizer=neox --tokenizer_file=weights/DCLM-1B/tokenizer.json"
    stage "prepare_data.py text, NeoX" $PYTHON "$REPO/prepare_data.py" text --input=data/raw/dclm \
        --out=data/dclm_neox $N
    stage "prepare_data.py captions, NeoX" $PYTHON "$REPO/prepare_data.py" captions \
        --input='data/raw/laion/*.tar' --out=data/captions_384_neox $IMAGES $N
    stage "prepare_data.py llava, NeoX" $PYTHON "$REPO/prepare_data.py" llava \
        --input=data/raw/llava_v1_5_mix665k.json --images=data/llava_images --out=data/llava_665k_neox \
        $IMAGES ${LLAVA_TOKENS:---max_tokens=2048} $N
    stage "text, NeoX (for the folder)" $RUN "$REPO/train.py" "$C/text_1b.py" $TEXT $DEVICE \
        --text_data=data/dclm_neox --out_dir=out/text_neox
    stage "model.py export: weights/DCLM-1B" $PYTHON "$REPO/model.py" export --ckpt=out/text_neox/ckpt.pt \
        --out=weights/DCLM-1B
    stage "mixed from_dclm_1b arm_unfrozen" $RUN "$REPO/train.py" "$C/mixed_1b.py" $MIXED $DEVICE \
        "$C/from_dclm_1b.py" "$C/arm_unfrozen.py"
    stage "finetune from_dclm_1b arm_unfrozen" $RUN "$REPO/train.py" "$C/finetune_1b.py" $FINETUNE $DEVICE \
        "$C/from_dclm_1b.py" "$C/arm_unfrozen.py"
    stage "eval.py DCLM-1B_unfrozen_mlp2" $PYTHON "$REPO/eval.py" \
        --ckpt=out/finetune_1b/DCLM-1B_unfrozen_mlp2/ckpt.pt --tasks=vision_suite$TEXT_SUITE \
        --data_root=data/eval --lm_eval_tasks=data/lm_eval $EVAL
    stage "sample.py: DCLM-1B arm" $PYTHON "$REPO/sample.py" \
        --ckpt=out/finetune_1b/DCLM-1B_unfrozen_mlp2/ckpt.pt \
        --image=$IMAGE --prompt="What colour is the box?" $SAMPLE
else
    echo "== the DCLM-1B route: skipped (no NeoX-style tokenizer: HF tokenizers is not installed)"
fi
rm -f "$OUT/stage.log"
summary "the rehearsal (small shapes) done"
