# The CPU study, step 3: instruction tuning on shapes-world conversations, loss on the answers only, of
# a config/tiny_mixed.py model: by default the default recipe's; an arm overlay picks that arm's.
#   python train.py config/tiny_finetune.py [config/arm_unfrozen.py | config/arm_mlp1.py]
# init_from: out/study/mixed/080_{vision}_{projector}/ckpt.pt and out_dir: out/study/{parent} ({parent}
# the folder of init_from), filled in by train.py; study.py gives its own,
# --init_from=OUT/mixed/ARM_seedN/ckpt.pt and --out_dir=OUT/ARM_seedN.
# Steps: max_iters is the default study plan's (study.py reads it here; --fast and --budget pass their own).
stage = 'finetune'
out_dir = 'out/study/{parent}'
init_from = 'out/study/mixed/080_{vision}_{projector}/ckpt.pt'
text_data = 'data/shapes/text'
instruct_data = 'data/shapes/instruct'
freeze_vision = True
projector = 'mlp2'  # names the mixed-stage run in init_from; the model's projector is the checkpoint's
block_size = 128
# small batches, many steps: at equal tokens, 8 x 600 beat 32 x 150 by 1-2 VQA points in 3 of 3 runs
batch_size = 8
epochs = 1
# the study stops here, after ~1.0 pass over the conversations (0 = from epochs and the data)
max_iters = 600
learning_rate = 1e-3
min_lr = 1e-4
vision_lr = 1e-4  # used only by the unfrozen arm (config/arm_unfrozen.py)
warmup_iters = 80
eval_interval = 200
log_interval = 50
