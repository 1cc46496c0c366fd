"""
Sample from a trained checkpoint: continue text, answer a question about an image, or caption it.

    python sample.py --ckpt=out/tiny_text/ckpt.pt --prompt="The " --num_samples=3
    python sample.py --ckpt out/tiny_frozen/ckpt.pt --image photo.jpg --prompt "What is in the image?"
    python sample.py --ckpt out/tiny_frozen/ckpt.pt --image photo.jpg --caption=True

Text prompts are continued as they are; `--chat=True` wraps the prompt in the chat template. With
`--image` the prompt is a user turn of the chat template after the image positions (the layout of the
instruction data and of eval.py's VQA prompts); `--caption=True` writes a caption right after the image
positions, as the caption rows of the mixed stage were trained (<|endoftext|> + image positions +
caption + <|endoftext|>); a --prompt given there is the caption's beginning. The image is resized to
the encoder's input size with vision.preprocess. Arguments are --key=value or --key value.
"""
import argparse
import os
import sys

import torch

from model import VLM, model_from_checkpoint
from prepare_data import TOKENIZERS, chat_tokens, encode, get_tokenizer


def boolean(text):
    if text.lower() in ('true', '1', 'yes'):
        return True
    if text.lower() in ('false', '0', 'no'):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--ckpt', default='out/tiny_text/ckpt.pt')
    parser.add_argument('--prompt', default=None, help="text; 'FILE:path' reads it from a file (default: a newline)")
    parser.add_argument('--chat', type=boolean, default=False, help="text only: answer the prompt as a user turn")
    parser.add_argument('--image', default=None, help="an image file to ask about (or caption)")
    parser.add_argument('--caption', type=boolean, default=False, help="with --image: caption it, no chat template")
    parser.add_argument('--num_samples', type=int, default=3)
    parser.add_argument('--max_new_tokens', type=int, default=200)
    parser.add_argument('--temperature', type=float, default=0.8, help="0 = greedy")
    parser.add_argument('--top_k', type=int, default=50)
    parser.add_argument('--seed', type=int, default=1337)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    args = parser.parse_args(argv)
    if args.caption and args.image is None:
        parser.error("--caption=True needs --image")
    return args


def prompt_tokens(enc, text, chat=False, num_patches=0, caption=False):
    """The ids to generate from and whether <|endoftext|> ends the answer."""
    ids = TOKENIZERS[enc.name]
    if caption:  # a caption row: <|endoftext|> + image positions + caption
        return [ids['eot_id']] + [ids['image_id']] * num_patches + encode(enc, text), True
    if num_patches or chat:
        return chat_tokens(enc, [('user', text)], n_image=num_patches)[0], True
    return [ids['eot_id']] + encode(enc, text), False


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    try:
        model, checkpoint = model_from_checkpoint(args.ckpt, args.device)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    enc = get_tokenizer(checkpoint['tokenizer'])
    eot = TOKENIZERS[enc.name]['eot_id']
    prompt = args.prompt
    if prompt is None:
        prompt = '' if args.image is not None else '\n'
    if prompt.startswith('FILE:'):
        if not os.path.isfile(prompt[5:]):
            sys.exit(f"error: prompt file not found: {prompt[5:]}")
        with open(prompt[5:]) as f:
            prompt = f.read()
    image = None
    if args.image is not None:
        if not isinstance(model, VLM):
            sys.exit(f"error: {args.ckpt} holds a text-only model; --image needs a VLM checkpoint")
        from vision import ImageError, preprocess
        try:
            image = torch.from_numpy(preprocess(args.image, model.vision.cfg.image_size))  # (S, S, 3) uint8
        except ImageError as e:
            sys.exit(f"error: {e}")
        if not args.caption and not prompt.strip():
            sys.exit("error: --image needs a --prompt (a question), or --caption=True")
    num_patches = model.num_patches if image is not None else 0
    ids, stops = prompt_tokens(enc, prompt, args.chat, num_patches, args.caption)
    block_size = (model.lm if isinstance(model, VLM) else model).config.block_size
    max_new = min(args.max_new_tokens, block_size - len(ids))
    if max_new < 1:
        sys.exit(f"error: the prompt is {len(ids)} tokens; block_size is {block_size}")
    idx = torch.tensor([ids] * args.num_samples, device=args.device)
    kw = dict(temperature=args.temperature, top_k=args.top_k, stop_token=eot if stops else None)
    if isinstance(model, VLM):
        images = has_image = None
        if image is not None:
            images = image[None].expand(args.num_samples, -1, -1, -1).to(args.device)  # (N, S, S, 3)
            has_image = torch.ones(args.num_samples, dtype=torch.bool, device=args.device)
        out = model.generate(idx, images, has_image, max_new, **kw)
    else:
        out = model.generate(idx, max_new, **kw)
    texts = []
    for row in out.tolist():
        row = row[:row.index(eot)] if eot in row else row
        text = enc.decode([t for t in row if t < enc.n_vocab])  # the padded rows of the vocabulary have no text
        texts.append(prompt + text if not stops or args.caption else text.strip())  # an answer follows "Assistant:"
        print(texts[-1])
        print('-' * 40)
    return texts


if __name__ == '__main__':
    main()
