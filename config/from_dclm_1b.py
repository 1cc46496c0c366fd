# Start overlay: the mixed stage starts from TRI's public DCLM-1B (huggingface.co/TRI-ML/DCLM-1B), the
# paper's text run finished: its 100 % point. As from config/start_100.py, the schedule is spent, so
# the stage re-warms to a peak of 3e-3 over DCLM's 5,000 warmup steps (the same fraction of another
# base's max_iters) and decays over the mixed budget. The model is the folder's: its config.json sets
# the shape and its vocab_size (50,432 rows, GPT-NeoX ids padded); the base's model keys are unused.
# DCLM-1B reads GPT-NeoX ids: the text and caption data must be NeoX-tokenised, e.g.
#   $R train.py config/mixed_1b.py config/from_dclm_1b.py config/arm_unfrozen.py \
#     --text_data=data/dclm_neox --caption_data=data/captions_384_neox
# (R: the torchrun launch of config/mixed_1b.py). init_from is the downloaded folder: config.json,
# model.safetensors.index.json, model-00001-of-00002.safetensors, model-00002-of-00002.safetensors (and
# tokenizer.json, GPT-NeoX's, for the data):
#   huggingface-cli download TRI-ML/DCLM-1B --local-dir weights/DCLM-1B
# out_dir's {start} is the folder's name: out/mixed_1b/DCLM-1B_frozen_mlp2, DCLM-1B_unfrozen_mlp2 ...
if stage != 'mixed':
    raise ValueError(f"a start overlay goes after a mixed-stage base; stage is '{stage}'")
init_from = 'weights/DCLM-1B'
learning_rate = 3e-3
warmup_iters = round(5000 * max_iters / 53406)  # 5000 at 1B
