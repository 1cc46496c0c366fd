# Text pre-training of the 79M model as the paper ran it (paper Table 2): d 512, 8 layers, 4 heads of
# 128, T 2048; 512 sequences x 2048 tokens per step, learning rate 3e-3; 237B tokens, 150x Chinchilla
# (20 tokens per parameter: 1.58B at 78.8M parameters). For the 1x run (1.6B tokens) add
# config/text_79m_1x.py.
# Cost, 6 N D with N = 79e6, D = 237e9: 1.12e20 FLOPs. At 989 TFLOP/s bf16 dense peak:
#   54 % MFU (measured at 1B, one H200): 1.12e20 / (0.54 * 989e12) = 2.10e5 s = ~58 H200-hours
#   40 % MFU (an H100):                  1.12e20 / (0.40 * 989e12) = 2.84e5 s = ~79 H100-hours
# A model this small reaches a lower MFU than the 1B one, so these are lower bounds.
# Milestones ckpt_000.pt ... ckpt_100.pt in out_dir; config/mixed_79m.py starts from ckpt_080.pt.
#   torchrun --standalone --nproc_per_node=8 train.py config/text_79m.py
# out_dir: fixed, out/text_79m (one text run per size and budget; the 1x overlay writes out/text_79m_1x).
out_dir = 'out/text_79m'
text_data = 'data/dclm_gpt2'
n_layer = 8
n_head = 4
n_embd = 512
block_size = 2048
batch_size = 16  # per GPU
gradient_accumulation_steps = 32  # 16 x 32 = 512 sequences per step, over all GPUs
max_iters = 226021  # round(237e9 / (512 * 2048))
learning_rate = 3e-3
min_lr = 3e-5
warmup_iters = 400
weight_decay = 0.033
z_loss = 1e-4
eval_interval = 250
eval_iters = 20
