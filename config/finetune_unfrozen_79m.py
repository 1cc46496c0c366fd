# Instruction tuning of the unfrozen_79m mixed-stage model on LLaVA v1.5's 665K mix, 3 epochs, loss on answers.
#   python prepare_data.py llava --input llava_v1_5_mix665k.json --images data/llava_images --out data/llava_665k --image_size 384 --max_tokens 2048
#   torchrun --standalone --nproc_per_node=8 train.py config/finetune_unfrozen_79m.py
stage = 'finetune'
out_dir = 'out/finetune_unfrozen_79m'
init_from = 'out/unfrozen_79m/ckpt.pt'
text_data = 'data/dclm_gpt2'
instruct_data = 'data/llava_665k'
freeze_vision = False
block_size = 2048
batch_size = 8  # per GPU
gradient_accumulation_steps = 16  # 128 conversations per step
epochs = 3
max_iters = 0  # from epochs and the data
learning_rate = 2e-5
min_lr = 0.0
vision_lr = 2e-6
warmup_iters = 300
fsdp = False
attention = 'triton'
eval_interval = 1000
