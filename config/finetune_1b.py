# Instruction tuning at 1B of a config/mixed_1b.py model on LLaVA v1.5's 665K mix, 3 epochs, loss on
# the answers. By default the default recipe's model; an arm overlay (config/arm_*.py) picks that
# arm's model, --init_from any other (the after-text baseline's: out/mixed_1b/100_frozen_mlp2/ckpt.pt).
#   python prepare_data.py llava --input=llava_v1_5_mix665k.json --images=data/llava_images \
#     --out=data/llava_665k --image_size=384 --max_tokens=2048
#   R="torchrun --standalone --nproc_per_node=8"
#   $R train.py config/finetune_1b.py                            # the default recipe
#   $R train.py config/finetune_1b.py config/arm_unfrozen.py     # ablation 1: the encoder trains
#   $R train.py config/finetune_1b.py config/arm_mlp1.py         # ablation 2: a linear projector
#   $R train.py config/finetune_1b.py --init_from=out/mixed_1b/100_frozen_mlp2/ckpt.pt
# The 1x chain's runs (config/text_1b_1x.py, config/mixed_1b.py's 1x command) are the same with
#   --init_from='out/mixed_1b_1x/080_{vision}_{projector}/ckpt.pt' --out_dir='out/finetune_1b_1x/{parent}'
# init_from: out/mixed_1b/080_{vision}_{projector}/ckpt.pt, filled in by train.py from freeze_vision
# and projector; out_dir: out/finetune_1b/{parent}, {parent} the folder of init_from (so
# out/finetune_1b/080_frozen_mlp2, ..., 100_frozen_mlp2: one folder per mixed-stage run).
stage = 'finetune'
out_dir = 'out/finetune_1b/{parent}'
init_from = 'out/mixed_1b/080_{vision}_{projector}/ckpt.pt'
text_data = 'data/dclm_gpt2'
instruct_data = 'data/llava_665k'
freeze_vision = True
projector = 'mlp2'  # names the mixed-stage run in init_from; the model's projector is the checkpoint's
vision_lr = 2e-6  # used only by the unfrozen arm (config/arm_unfrozen.py)
block_size = 2048
batch_size = 8  # per GPU
gradient_accumulation_steps = 16  # 128 conversations per step
epochs = 3
max_iters = 0  # from epochs and the data
learning_rate = 2e-5
min_lr = 0.0
warmup_iters = 300
fsdp = True
attention = 'triton'
eval_interval = 1000
