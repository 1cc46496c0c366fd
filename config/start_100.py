# Start overlay, the paper's baseline: the mixed stage starts after the text stage, from its last
# milestone (ckpt_100.pt beside the base's init_from), re-warmed to a peak of 3e-3 and decayed over the
# mixed budget. The warmup is DCLM's 1B-1x schedule's: 5,000 steps of about 0.5M tokens, which is
# 5000 / 53406 (9 %) of the 1B mixed budget; a base of another size gets the same fraction of its
# max_iters, computed here from the base's max_iters (so a --max_iters given later does not move it).
#   torchrun --standalone --nproc_per_node=8 train.py config/mixed_79m.py config/start_100.py
import os

if stage != 'mixed':
    raise ValueError(f"a start overlay goes after a mixed-stage base; stage is '{stage}'")
init_from = os.path.join(os.path.dirname(init_from), 'ckpt_100.pt')
learning_rate = 3e-3
warmup_iters = round(5000 * max_iters / 53406)  # 5000 at 1B, 286 at 79M
