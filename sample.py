"""
Sample from a trained checkpoint: continue text, answer a question about an image, or caption it.

    python sample.py --ckpt=out/tiny_text/ckpt.pt --prompt="The " --num_samples=3
    python sample.py --ckpt=out/tiny_frozen/ckpt.pt --image=photo.jpg --prompt="What is in the image?"
    python sample.py --ckpt=out/tiny_frozen/ckpt.pt --image=photo.jpg --caption

Text prompts are continued as they are; `--chat` wraps the prompt in the chat template. With
`--image` the prompt is a user turn of the chat template after the image positions (the layout of the
instruction data and of eval.py's VQA prompts); `--caption` writes a caption right after the image
positions, as the caption rows of the mixed stage were trained (<|endoftext|> + image positions +
caption + <|endoftext|>); a --prompt given there is the caption's beginning. The image is resized to
the encoder's input size with vision.preprocess. Settings are config files and --key=value, as in
every script (configurator.py); a bare --chat or --caption sets it to True.
"""
import os
import sys

import torch

import configurator
from model import VLM, model_from_checkpoint
from tokenizer import chat_tokens, decode, encode, get_tokenizer, token_ids

DEFAULTS = {
    'ckpt': 'out/tiny_text/ckpt.pt',  # the checkpoint to sample from
    'prompt': '',  # text, or 'FILE:path' to read it from a file; empty: a newline (nothing with --image)
    'chat': False,  # text only: answer the prompt as a user turn of the chat template
    'image': '',  # an image file to ask about (or caption)
    'caption': False,  # with --image: caption it, no chat template
    'num_samples': 3,  # samples drawn, each printed
    'max_new_tokens': 200,  # at most, and no further than the block size
    'temperature': 0.8,  # 0 = greedy
    'top_k': 50,  # sample among the k likeliest tokens only
    'seed': 1337,  # torch's seed, for samples that repeat
    'device': 'cuda' if torch.cuda.is_available() else 'cpu',  # a GPU where there is one
}


def parse_settings(argv=None):
    """DEFAULTS updated by argv, checked; a bad combination exits with one line."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if '--help' in argv or '-h' in argv:
        print(__doc__)  # the three ways to sample; configurator lists the keys after it
    settings = configurator.parse(DEFAULTS, argv, 'sample.py')
    if settings['caption'] and not settings['image']:
        sys.exit("config error: --caption needs --image=FILE")
    if settings['num_samples'] < 1 or settings['max_new_tokens'] < 1:
        sys.exit("config error: --num_samples and --max_new_tokens must be >= 1")
    return settings


def prompt_tokens(enc, text, chat=False, num_patches=0, caption=False):
    """The ids to generate from and whether <|endoftext|> ends the answer."""
    ids = token_ids(enc)
    if caption:  # a caption row: <|endoftext|> + image positions + caption
        return [ids['eot_id']] + [ids['image_id']] * num_patches + encode(enc, text), True
    if num_patches or chat:
        return chat_tokens(enc, [('user', text)], n_image=num_patches)[0], True
    return [ids['eot_id']] + encode(enc, text), False


def main(argv=None):
    settings = parse_settings(argv)
    device, num_samples, caption = settings['device'], settings['num_samples'], settings['caption']
    torch.manual_seed(settings['seed'])
    try:
        model, checkpoint = model_from_checkpoint(settings['ckpt'], device)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    enc = get_tokenizer(checkpoint['tokenizer'], tokenizer_file=checkpoint.get('tokenizer_file'))
    eot = token_ids(enc)['eot_id']
    prompt = settings['prompt'] or ('' if settings['image'] else '\n')
    if prompt.startswith('FILE:'):
        if not os.path.isfile(prompt[5:]):
            sys.exit(f"error: prompt file not found: {prompt[5:]}")
        with open(prompt[5:]) as f:
            prompt = f.read()
    image = None
    if settings['image']:
        if not isinstance(model, VLM):
            sys.exit(f"error: {settings['ckpt']} holds a text-only model; --image needs a VLM checkpoint")
        from vision import ImageError, preprocess
        try:
            pixels = preprocess(settings['image'], model.vision.cfg.image_size)
            image = torch.from_numpy(pixels)  # (S, S, 3) uint8
        except ImageError as e:
            sys.exit(f"error: {e}")
        if not caption and not prompt.strip():
            sys.exit("error: --image needs a --prompt (a question), or --caption")
    num_patches = model.num_patches if image is not None else 0
    ids, stops = prompt_tokens(enc, prompt, settings['chat'], num_patches, caption)
    block_size = (model.lm if isinstance(model, VLM) else model).config.block_size
    max_new = min(settings['max_new_tokens'], block_size - len(ids))
    if max_new < 1:
        sys.exit(f"error: the prompt is {len(ids)} tokens; block_size is {block_size}")
    idx = torch.tensor([ids] * num_samples, device=device)
    kw = dict(temperature=settings['temperature'], top_k=settings['top_k'], stop_token=eot if stops else None)
    if isinstance(model, VLM):
        images = has_image = None
        if image is not None:
            images = image[None].expand(num_samples, -1, -1, -1).to(device)  # (N, S, S, 3)
            has_image = torch.ones(num_samples, dtype=torch.bool, device=device)
        out = model.generate(idx, images, has_image, max_new, **kw)
    else:
        out = model.generate(idx, max_new, **kw)
    texts = []
    for row in out.tolist():
        row = row[:row.index(eot)] if eot in row else row
        text = decode(enc, row)
        # an answer follows "Assistant:": its leading space goes
        texts.append(prompt + text if not stops or caption else text.strip())
        print(texts[-1])
        print('-' * 40)
    return texts


if __name__ == '__main__':
    main()
