# Ablation 1 at 79M: the default recipe with the SigLIP encoder trained (vision_lr): the 80 % milestone of config/text_79m.py,
# SigLIP-so400m/14-384 (block -2 features), 2-layer MLP projector, 10 % image-caption tokens,
# 1.6B tokens (1x Chinchilla) at T 1024 (729 image positions + caption, text-filled).
#   torchrun --standalone --nproc_per_node=8 train.py config/unfrozen_79m.py
stage = 'mixed'
out_dir = 'out/unfrozen_79m'
init_from = 'out/text_79m/ckpt_080.pt'
text_data = 'data/dclm_gpt2'
caption_data = 'data/captions_384'
vision_init = 'weights/siglip-so400m-patch14-384'
freeze_vision = False  # the encoder trains at vision_lr
projector = 'mlp2'
image_ratio = 0.1
image_row_fill = 'text'
attention = 'triton'  # document masking for the text after each caption
block_size = 1024
batch_size = 16  # per GPU
gradient_accumulation_steps = 32  # 512 rows x 1024 tokens per step, over all GPUs
max_iters = 3018  # 1.6e9 / (512 * 1024): 1x Chinchilla at 79M
min_lr = 1e-4
vision_lr = 1e-5
fsdp = False
eval_interval = 1000
eval_iters = 20
