# The CPU study, step 1: a tiny LM (d 128, 4 layers, byte vocabulary) on the shapes-world text corpus.
#   python prepare_data.py shapes --out data/shapes --max_tokens 256
#   python train.py config/tiny_text.py
out_dir = 'out/study/text'
text_data = 'data/shapes/text'
n_layer = 4
n_head = 4
n_embd = 128
block_size = 256
batch_size = 16
max_iters = 700  # ~2.9M tokens, about one pass over the corpus
learning_rate = 3e-3
min_lr = 3e-4
warmup_iters = 50
eval_interval = 250
log_interval = 50
