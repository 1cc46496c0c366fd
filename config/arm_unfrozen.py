# Arm overlay, ablation 1: the vision encoder trains, at the base's vision_lr (a per-size, per-stage
# value, so the bases hold it), on the base's schedule shape. Goes after a mixed or finetune base, in
# any order with a start overlay.
#   torchrun --standalone --nproc_per_node=8 train.py config/mixed_79m.py config/arm_unfrozen.py
#   torchrun --standalone --nproc_per_node=8 train.py config/finetune_79m.py config/arm_unfrozen.py
freeze_vision = False
