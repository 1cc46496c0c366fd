# The CPU study, step 2 (the default recipe): from the 80 % text milestone, frozen tiny SigLIP tower,
# 2-layer MLP projector, 10 % image-caption positions. Arms override freeze_vision / projector.
#   python vision.py pretrain --captions data/shapes/captions --out out/study/tower
#   python train.py config/tiny_mixed.py
stage = 'mixed'
out_dir = 'out/study/mixed/frozen_mlp2'
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
learning_rate = 3e-3  # used only when starting from the 0 % or 100 % milestone (with warmup)
min_lr = 3e-4
vision_lr = 3e-4
warmup_iters = 30
eval_interval = 100
log_interval = 25
