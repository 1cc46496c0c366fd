# The CPU study, step 3: instruction tuning on shapes-world conversations, loss on the answers only.
#   python train.py config/tiny_finetune.py
stage = 'finetune'
out_dir = 'out/study/frozen_mlp2'
init_from = 'out/study/mixed/frozen_mlp2/ckpt.pt'
text_data = 'data/shapes/text'
instruct_data = 'data/shapes/instruct'
freeze_vision = True
block_size = 128
batch_size = 8  # small batches, many steps: at equal tokens, 8 x 600 beat 32 x 150 by 1-2 VQA points in 3 of 3 runs
epochs = 1
max_iters = 600  # the CPU study stops here, after ~1.0 pass over the conversations (0 = from epochs and the data)
learning_rate = 1e-3
min_lr = 1e-4
vision_lr = 1e-4
warmup_iters = 80
eval_interval = 200
log_interval = 50
