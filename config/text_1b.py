# Text pre-training of the 1.4B ("1B") model as the paper ran it, DCLM-1B's main schedule (paper Table 2):
# d 2048, 24 layers, 16 heads of 128, T 2048; 256 sequences x 2048 tokens per step, learning rate 1e-2,
# 5,000 warmup steps; 4.3T tokens, 150x Chinchilla (20 tokens per parameter: 28.8B at 1.44B parameters).
# The 80 % milestone is ~3.44T tokens in. For the 1x run (28B tokens) add config/text_1b_1x.py.
# DCLM-1B's model card gives other figures: 2,048 sequences per step, weight decay 1e-2, on
# DCLM-Baseline + StarCoder + ProofPile2; these configs follow Table 2 and read DCLM-Baseline only.
# Cost, 6 N D with N = 1.4e9, D = 4.3e12: 3.61e22 FLOPs. At 989 TFLOP/s bf16 dense peak:
#   54 % MFU (measured, compiled, one H200): 3.61e22 / (0.54 * 989e12) = 6.76e7 s = ~18,800 H200-hours
#   40 % MFU (an H100):                      3.61e22 / (0.40 * 989e12) = 9.13e7 s = ~25,400 H100-hours
# Milestones ckpt_000.pt ... ckpt_100.pt in out_dir; config/mixed_1b.py starts from ckpt_080.pt.
#   torchrun --nnodes=4 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=$HEAD:29500 \
#     train.py config/text_1b.py
# out_dir: fixed, out/text_1b (one text run per size and budget; the 1x overlay writes out/text_1b_1x).
out_dir = 'out/text_1b'
text_data = 'data/dclm_gpt2'
n_layer = 24
n_head = 16
n_embd = 2048
block_size = 2048
batch_size = 8  # per GPU
gradient_accumulation_steps = 32  # 8 x 32 = 256 sequences per step, over all GPUs
max_iters = 8201599  # round(4.3e12 / (256 * 2048))
learning_rate = 1e-2
min_lr = 1e-4
warmup_iters = 5000
weight_decay = 0.033
z_loss = 1e-4
eval_interval = 1000
eval_iters = 20
