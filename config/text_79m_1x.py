# Budget overlay: config/text_79m.py at 1x Chinchilla, 1.6B tokens (20 per parameter): the same model,
# batch, learning rate and warmup as the 150x run, 1,526 steps instead of 226,021.
# Cost, 6 N D with N = 79e6, D = 1.6e9: 7.58e17 FLOPs. At 989 TFLOP/s bf16 dense peak:
#   54 % MFU (measured at 1B, one H200): 7.58e17 / (0.54 * 989e12) = 1.42e3 s = ~0.4 H200-hours
#   40 % MFU (an H100):                  7.58e17 / (0.40 * 989e12) = 1.92e3 s = ~0.5 H100-hours
# (lower bounds: a model this small reaches a lower MFU than the 1B one).
# The mixed stage starts from its milestones with --init_from=out/text_79m_1x/ckpt_080.pt
# (config/mixed_79m.py).
#   torchrun --standalone --nproc_per_node=8 train.py config/text_79m.py config/text_79m_1x.py
if stage != 'text' or (n_layer, n_embd) != (8, 512):
    raise ValueError(f"a 79M budget overlay goes after config/text_79m.py; stage is '{stage}', "
                     f"n_layer {n_layer}, n_embd {n_embd}")
out_dir = 'out/text_79m_1x'
max_iters = 1526  # round(1.6e9 / (512 * 2048))
