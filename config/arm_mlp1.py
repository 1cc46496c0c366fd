# Arm overlay, ablation 2: a 1-layer (linear) projector instead of the 2-layer MLP. Goes after a mixed
# or finetune base (where it names the mixed-stage run to start from), in any order with a start overlay.
#   torchrun --standalone --nproc_per_node=8 train.py config/mixed_79m.py config/arm_mlp1.py
#   torchrun --standalone --nproc_per_node=8 train.py config/finetune_79m.py config/arm_mlp1.py
projector = 'mlp1'  # a single linear layer
