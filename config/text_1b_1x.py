# Budget overlay: config/text_1b.py at 1x Chinchilla, 28B tokens (~20 per parameter), the run a lab can
# afford: the same model, batch, learning rate and warmup as the 150x run, 53,406 steps instead of 8.2M.
# Cost, 6 N D with N = 1.4e9, D = 28e9: 2.35e20 FLOPs. At 989 TFLOP/s bf16 dense peak:
#   54 % MFU (measured, compiled, one H200): 2.35e20 / (0.54 * 989e12) = 4.40e5 s = ~122 H200-hours
#   40 % MFU (an H100):                      2.35e20 / (0.40 * 989e12) = 5.95e5 s = ~165 H100-hours
# The mixed stage starts from its milestones with --init_from=out/text_1b_1x/ckpt_080.pt (config/mixed_1b.py).
#   torchrun --nnodes=4 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=$HEAD:29500 \
#     train.py config/text_1b.py config/text_1b_1x.py
if stage != 'text' or (n_layer, n_embd) != (24, 2048):
    raise ValueError(f"a 1B budget overlay goes after config/text_1b.py; stage is '{stage}', "
                     f"n_layer {n_layer}, n_embd {n_embd}")
out_dir = 'out/text_1b_1x'
max_iters = 53406  # round(28e9 / (256 * 2048))
