# Text pre-training of the 1.4B ("1B") model (paper Table 2, the DCLM-1B shape): d 2048, 24 layers,
# 16 heads of 128, T 2048. 256 sequences x 2048 tokens per step; 28B tokens (1x Chinchilla).
# Milestones ckpt_000.pt ... ckpt_100.pt in out_dir; config/mixed_1b.py starts from ckpt_080.pt.
#   torchrun --nnodes=4 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=$HEAD:29500 \
#     train.py config/text_1b.py
# out_dir: fixed, out/text_1b (one text run per size).
out_dir = 'out/text_1b'
text_data = 'data/dclm_gpt2'
n_layer = 24
n_head = 16
n_embd = 2048
block_size = 2048
batch_size = 8  # per GPU
gradient_accumulation_steps = 32  # 8 x 32 = 256 sequences per step, over all GPUs
max_iters = 53406  # 28e9 / (256 * 2048)
learning_rate = 1e-2
min_lr = 1e-4
warmup_iters = 5000
weight_decay = 0.033
z_loss = 1e-4
eval_interval = 1000
eval_iters = 20
