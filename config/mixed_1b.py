# The mixed stage at 1B, the default recipe (the ablations' reference arm): the 80 % milestone of
# config/text_1b.py (the paper's 150x run, ~3.44T tokens in), frozen SigLIP-so400m/14-384 (block -2
# features), 2-layer MLP projector, 10 % image-caption tokens, T 1024 (729 image positions + caption,
# text-filled). 28B tokens (1x Chinchilla) from any milestone: 53,406 steps x 512 x 1024. From a milestone
# short of 100 % the learning rate starts at the text schedule's value there (1.05e-3 at 80 % of the 150x
# run) and decays to min_lr over these 28B tokens; from 100 % (config/start_100.py) it re-warms to 3e-3.
# Cost per arm: about the 1x text run's (~122 H200-hours at 54 % MFU, ~165 H100-hours at 40 %) plus the
# encoder (~0.67 TFLOP per image forward; three times that when it trains).
# Overlays after it, in any order: an arm (config/arm_*.py: encoder, projector), a start
# (config/start_*.py: milestone, learning-rate peak, warmup).
#   R="torchrun --nnodes=4 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=$HEAD:29500"
#   $R train.py config/mixed_1b.py                            # the default recipe
#   $R train.py config/mixed_1b.py config/arm_unfrozen.py     # ablation 1: the encoder trains
#   $R train.py config/mixed_1b.py config/arm_mlp1.py         # ablation 2: a linear projector
#   $R train.py config/mixed_1b.py config/start_100.py        # the paper's baseline: after the text stage
# From the 1x text run (config/text_1b_1x.py) instead: override init_from, before any start overlay
# (which takes its folder), and out_dir, so the two runs' folders stay apart:
#   $R train.py config/mixed_1b.py --init_from=out/text_1b_1x/ckpt_080.pt \
#     --out_dir='out/mixed_1b_1x/{start}_{vision}_{projector}' [config/start_100.py] [config/arm_*.py]
# out_dir: out/mixed_1b/{start}_{vision}_{projector}, filled in by train.py from init_from's milestone,
# freeze_vision and projector: out/mixed_1b/080_frozen_mlp2, 080_unfrozen_mlp2, 080_frozen_mlp1,
# 100_frozen_mlp2 ...
stage = 'mixed'
out_dir = 'out/mixed_1b/{start}_{vision}_{projector}'
# the default start, config/start_080.py's settings: the 80 % milestone, the text schedule continued
init_from = 'out/text_1b/ckpt_080.pt'
learning_rate = 3e-3
warmup_iters = 0
text_data = 'data/dclm_gpt2'
caption_data = 'data/captions_384'
vision_init = 'weights/siglip-so400m-patch14-384'
freeze_vision = True
projector = 'mlp2'
vision_lr = 1e-5  # used only by the unfrozen arm (config/arm_unfrozen.py)
image_ratio = 0.1
image_row_fill = 'text'
attention = 'triton'  # document masking for the text after each caption
block_size = 1024
batch_size = 16  # per GPU
gradient_accumulation_steps = 32  # 512 rows x 1024 tokens per step, over all GPUs
max_iters = 53406  # round(28e9 / (512 * 1024)), from any milestone
min_lr = 1e-4
fsdp = True
eval_interval = 1000
eval_iters = 20
