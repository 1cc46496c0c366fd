# Start overlay: the chain starts from TRI's public DCLM-1B (huggingface.co/TRI-ML/DCLM-1B), the paper's
# text run finished: its 100 % point. The whole route, with its downloads and cost: docs/data.md.
# After a mixed base: as from config/start_100.py, the schedule is spent, so the stage re-warms to a peak
# of 3e-3 over DCLM's 5,000 warmup steps (the same fraction of another base's max_iters) and decays over
# the mixed budget. The model is the folder's: its config.json sets the shape and its vocab_size (50,432
# rows, GPT-NeoX ids padded); the base's model keys are unused. init_from is the downloaded folder:
# config.json, model.safetensors.index.json, model-00001-of-00002.safetensors,
# model-00002-of-00002.safetensors and tokenizer.json (GPT-NeoX's, which the data are prepared with):
#   huggingface-cli download TRI-ML/DCLM-1B --local-dir weights/DCLM-1B
#   $R train.py config/mixed_1b.py config/from_dclm_1b.py [config/arm_*.py]
# After a finetune base: the DCLM-1B mixed run of the same arm, tuned on the NeoX-tokenised 665K mix:
#   $F train.py config/finetune_1b.py config/from_dclm_1b.py [config/arm_*.py]
# (R, F: the torchrun launches of config/mixed_1b.py and config/finetune_1b.py.) DCLM-1B reads GPT-NeoX
# ids, so this overlay also names the NeoX-tokenised data folders (docs/data.md prepares them).
# out_dir's {start} is the folder's name: out/mixed_1b/DCLM-1B_frozen_mlp2, DCLM-1B_unfrozen_mlp2 ...;
# the finetune runs: out/finetune_1b/DCLM-1B_frozen_mlp2 ...
import os

if stage == 'mixed':
    init_from = 'weights/DCLM-1B'
    learning_rate = 3e-3
    warmup_iters = round(5000 * max_iters / 53406)  # 5000 at 1B
    caption_data = 'data/captions_384_neox'
elif stage == 'finetune':  # the mixed run of this arm, beside the base's default one
    init_from = os.path.join(os.path.dirname(os.path.dirname(init_from)), 'DCLM-1B_{vision}_{projector}',
                             'ckpt.pt')
    instruct_data = 'data/llava_665k_neox'
else:
    raise ValueError(f"config/from_dclm_1b.py goes after a mixed or finetune base; stage is '{stage}'")
text_data = 'data/dclm_neox'
