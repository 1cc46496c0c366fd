# Ablation 1 at 1B: the default recipe with the SigLIP encoder trained (vision_lr): the 80 % milestone of config/text_1b.py,
# SigLIP-so400m/14-384 (block -2 features), 2-layer MLP projector, 10 % image-caption tokens,
# 28B tokens (1x Chinchilla) at T 1024 (729 image positions + caption, text-filled).
#   torchrun --nnodes=4 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=$HEAD:29500 train.py config/unfrozen_1b.py
stage = 'mixed'
out_dir = 'out/unfrozen_1b'
init_from = 'out/text_1b/ckpt_080.pt'
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
max_iters = 53406  # 28e9 / (512 * 1024)
min_lr = 1e-4
vision_lr = 1e-5
fsdp = True
eval_interval = 1000
eval_iters = 20
