# Start overlay, the default (the mixed bases hold these settings already): the mixed stage starts from
# the text run's 80 % milestone, ckpt_080.pt beside the base's init_from, and its learning rate
# continues the text schedule from there, decaying over the mixed budget: train.py takes the peak from
# the text run's schedule, with no warmup. learning_rate stays the scale of vision_lr: an unfrozen
# encoder trains at vision_lr * peak / learning_rate.
#   torchrun --standalone --nproc_per_node=8 train.py config/mixed_79m.py config/start_080.py
import os

if stage != 'mixed':
    raise ValueError(f"a start overlay goes after a mixed-stage base; stage is '{stage}'")
init_from = os.path.join(os.path.dirname(init_from), 'ckpt_080.pt')
learning_rate = 3e-3
warmup_iters = 0
