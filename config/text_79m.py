# Text pre-training of the 79M model (paper Table 2): d 512, 8 layers, 4 heads of 128, T 2048.
# 512 sequences x 2048 tokens per step; ~1.6B tokens (20 tokens per parameter, Chinchilla).
# Milestones ckpt_000.pt ... ckpt_100.pt in out_dir; config/mixed_79m.py starts from ckpt_080.pt.
#   torchrun --standalone --nproc_per_node=8 train.py config/text_79m.py
# out_dir: fixed, out/text_79m (one text run per size).
out_dir = 'out/text_79m'
text_data = 'data/dclm_gpt2'
n_layer = 8
n_head = 4
n_embd = 512
block_size = 2048
batch_size = 16  # per GPU
gradient_accumulation_steps = 32  # 16 x 32 = 512 sequences per step, over all GPUs
max_iters = 1526  # 1.6e9 / (512 * 2048)
learning_rate = 3e-3
min_lr = 3e-5
warmup_iters = 400
weight_decay = 0.033
z_loss = 1e-4
eval_interval = 250
eval_iters = 20
