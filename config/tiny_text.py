# The CPU study, step 1: a tiny LM (d 128, 4 layers; the shapes tokenizer: bytes + one token per world
# word) on the shapes-world text corpus. Milestones ckpt_000.pt ... ckpt_100.pt in out_dir.
#   python prepare_data.py shapes --out=data/shapes --max_tokens=256
#   python train.py config/tiny_text.py
# out_dir: fixed, out/study/text (study.py gives its own, --out_dir=OUT/text).
# Steps: max_iters is the default study plan's (study.py reads it here; --fast and --budget pass their own).
out_dir = 'out/study/text'
text_data = 'data/shapes/text'
n_layer = 4
n_head = 4
n_embd = 128
block_size = 128
batch_size = 32
max_iters = 300  # ~1.2M tokens, about 1.6 passes over the corpus (~740K tokens)
learning_rate = 3e-3
min_lr = 3e-4
warmup_iters = 50
eval_interval = 250
log_interval = 50
