# The CPU study, step 2 (the default recipe): from the 80 % text milestone of config/tiny_text.py,
# frozen tiny SigLIP tower, 2-layer MLP projector, 10 % image-caption positions. The arm overlays
# (config/arm_*.py) and start overlays (config/start_*.py) apply as to the 1B and 79M bases.
#   python tower.py --captions=data/shapes/captions --out=out/study/tower
#   python train.py config/tiny_mixed.py [config/arm_unfrozen.py | config/arm_mlp1.py]
# out_dir: out/study/mixed/{start}_{vision}_{projector}, filled in by train.py from init_from's
# milestone, freeze_vision and projector (out/study/mixed/080_frozen_mlp2, ...); study.py gives its own,
# --out_dir=OUT/mixed/ARM_seedN.
# Steps: max_iters is the default study plan's (study.py reads it here; --fast and --budget pass their own).
stage = 'mixed'
out_dir = 'out/study/mixed/{start}_{vision}_{projector}'
init_from = 'out/study/text/ckpt_080.pt'
text_data = 'data/shapes/text'
caption_data = 'data/shapes/captions'
vision_init = 'out/study/tower'
freeze_vision = True
projector = 'mlp2'
image_ratio = 0.1
block_size = 128
batch_size = 32
max_iters = 90
# learning_rate and warmup_iters are used only from the 0 % or 100 % milestone (from 80 % the text
# schedule continues; learning_rate still scales vision_lr). The study's after-text arm runs with
# these (--init_from=OUT/text/ckpt_100.pt), not with config/start_100.py, whose 9 % rule would give
# 8 of the 90 steps
learning_rate = 3e-3
warmup_iters = 30
min_lr = 3e-4
vision_lr = 3e-4  # used only by the unfrozen arm (config/arm_unfrozen.py)
eval_interval = 100
log_interval = 25
