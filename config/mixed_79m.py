# The mixed stage at 79M, the default recipe (the ablations' reference arm): the 80 % milestone of
# config/text_79m.py (the paper's 150x run, ~190B tokens in), frozen SigLIP-so400m/14-384 (block -2
# features), 2-layer MLP projector, 10 % image-caption tokens, T 1024 (729 image positions + caption,
# text-filled). 1.6B tokens (1x Chinchilla) from any milestone: 3,052 steps x 512 x 1024. From a milestone
# short of 100 % the learning rate starts at the text schedule's value there (3.15e-4 at 80 % of the 150x
# run) and decays to min_lr over these 1.6B tokens; from 100 % (config/start_100.py) it re-warms to 3e-3.
# Overlays after it, in any order: an arm (config/arm_*.py: encoder, projector), a start
# (config/start_*.py: milestone, learning-rate peak, warmup).
#   R="torchrun --standalone --nproc_per_node=8"
#   $R train.py config/mixed_79m.py                           # the default recipe
#   $R train.py config/mixed_79m.py config/arm_unfrozen.py    # ablation 1: the encoder trains
#   $R train.py config/mixed_79m.py config/arm_mlp1.py        # ablation 2: a linear projector
#   $R train.py config/mixed_79m.py config/start_100.py       # the paper's baseline: after the text stage
# From the 1x text run (config/text_79m_1x.py) instead: override init_from, before any start overlay
# (which takes its folder), and out_dir, so the two runs' folders stay apart:
#   $R train.py config/mixed_79m.py --init_from=out/text_79m_1x/ckpt_080.pt \
#     --out_dir='out/mixed_79m_1x/{start}_{vision}_{projector}' [config/start_100.py] [config/arm_*.py]
# out_dir: out/mixed_79m/{start}_{vision}_{projector}, filled in by train.py from init_from's milestone,
# freeze_vision and projector: out/mixed_79m/080_frozen_mlp2, 080_unfrozen_mlp2, 080_frozen_mlp1,
# 100_frozen_mlp2 ...
stage = 'mixed'
out_dir = 'out/mixed_79m/{start}_{vision}_{projector}'
# the default start, config/start_080.py's settings: the 80 % milestone, the text schedule continued
init_from = 'out/text_79m/ckpt_080.pt'
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
max_iters = 3052  # round(1.6e9 / (512 * 1024)), from any milestone
min_lr = 1e-4
fsdp = False
eval_interval = 1000
eval_iters = 20
