"""
The tokenizers, their special tokens and the chat template: what every stage agrees on.

  gpt2    tiktoken's GPT-2 (r50k) ranks, exact GPT-2 ids; <|image|> takes the first padded id
  bytes   the 256 bytes
  shapes  the 256 bytes, then one token per word piece of the shapes world (assets/shapes_words.json)

Every tokenizer has <|endoftext|> (document separator and BOS) and <|image|> (an image position).
Special-token strings inside a document stay plain text. docs/design.md lists the ids.
"""
import base64
import glob
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile

import tiktoken

from shards import atomic_write_bytes, sha256_file

# the short-answer sentence of LLaVA's VQA data, which the VQA prompts of evaluation repeat
VQA_INSTRUCTION = 'Answer the question using a single word or phrase.'

# -----------------------------------------------------------------------------
# Tokenizers and special tokens

# GPT-2 has only <|endoftext|>: it is also BOS and document separator. <|image|> takes the first
# padded id, so its embedding row exists but is never used (the VLM puts patches there).
# 'shapes' (the CPU study): the 256 bytes, then one token per word of the shapes world, so a tiny model
# reads a question in ~8 tokens instead of ~35 and answers in one; other text falls back to bytes.
SHAPES_WORDS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'assets', 'shapes_words.json')


def shapes_words():
    """The shapes world's word pieces, as shapes.vocabulary() lists them (a test keeps the file current)."""
    with open(SHAPES_WORDS_FILE) as f:
        return json.load(f)


SHAPES_WORDS = len(shapes_words())
TOKENIZERS = {
    'gpt2': dict(eot_id=50256, image_id=50257, vocab_size=50304),
    'bytes': dict(eot_id=256, image_id=257, vocab_size=320),
    'shapes': dict(eot_id=256 + SHAPES_WORDS, image_id=257 + SHAPES_WORDS,
                   vocab_size=(258 + SHAPES_WORDS + 63) // 64 * 64),
}
# tiktoken's r50k regex, the pre-tokenizer of GPT-2
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
# The GPT-2 ranks as tiktoken writes them (identical to its r50k_base file); the openai-whisper
# source distribution on the package index ships this file as whisper/assets/gpt2.tiktoken.
GPT2_RANKS_SHA256 = '306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930'
GPT2_RANKS_PACKAGE = 'openai-whisper==20250625'
GPT2_RANKS_MEMBER = 'whisper/assets/gpt2.tiktoken'


def cache_dir():
    root = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(root, 'vlm-pretrain')


def fetch_gpt2_ranks(dest):
    """Obtain the GPT-2 ranks from the openai-whisper sdist on the package index (pip download)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, '-m', 'pip', 'download', '--quiet', '--no-deps', '--no-binary', ':all:',
               '--dest', tmp, GPT2_RANKS_PACKAGE]
        result = subprocess.run(cmd, capture_output=True, text=True)
        archives = glob.glob(os.path.join(tmp, '*.tar.gz'))
        if result.returncode != 0 or not archives:
            raise RuntimeError(f"could not download {GPT2_RANKS_PACKAGE} to get the GPT-2 ranks "
                               f"({result.stderr.strip()[-300:]}); download a gpt2.tiktoken / "
                               f"r50k_base.tiktoken file yourself and point GPT2_TIKTOKEN at it")
        with tarfile.open(archives[0]) as tar:
            member = next((m for m in tar.getmembers() if m.name.endswith(GPT2_RANKS_MEMBER)), None)
            if member is None:
                raise RuntimeError(f"{archives[0]} has no {GPT2_RANKS_MEMBER}")
            data = tar.extractfile(member).read()
    if hashlib.sha256(data).hexdigest() != GPT2_RANKS_SHA256:
        raise RuntimeError(f"{GPT2_RANKS_MEMBER} from {GPT2_RANKS_PACKAGE} has an unexpected sha256")
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    atomic_write_bytes(dest, data)


def gpt2_ranks_path():
    """A verified GPT-2 ranks file: $GPT2_TIKTOKEN, else the cache, else fetched into the cache."""
    path = os.environ.get('GPT2_TIKTOKEN')
    if path:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"GPT2_TIKTOKEN points to a missing file: {path}")
    else:
        path = os.path.join(cache_dir(), 'gpt2.tiktoken')
        if not os.path.isfile(path):
            fetch_gpt2_ranks(path)
    if sha256_file(path) != GPT2_RANKS_SHA256:
        raise ValueError(f"{path} is not the GPT-2 ranks file (sha256 mismatch)")
    return path


def load_ranks(path):
    with open(path, 'rb') as f:
        pairs = (line.split() for line in f if line.strip())
        return {base64.b64decode(token): int(rank) for token, rank in pairs}


_tokenizer_cache = {}


def get_tokenizer(name):
    """A tiktoken Encoding with the special tokens of the contracts: 'gpt2' (exact GPT-2 ids), 'bytes' or
    'shapes' (bytes + the shapes world's words)."""
    if name not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {name!r}; known: {sorted(TOKENIZERS)}")
    if name in _tokenizer_cache:
        return _tokenizer_cache[name]
    ids = TOKENIZERS[name]
    specials = {'<|endoftext|>': ids['eot_id'], '<|image|>': ids['image_id']}
    if name == 'gpt2':
        ranks = load_ranks(gpt2_ranks_path())
    else:
        ranks = {bytes([i]): i for i in range(256)}
        if name == 'shapes':  # tiktoken looks a whole piece up before merging, so no merge rules are needed
            ranks.update({word.encode(): 256 + i for i, word in enumerate(shapes_words())})
    enc = tiktoken.Encoding(name=name, pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens=specials)
    _tokenizer_cache[name] = enc
    return enc


def encode(enc, text):
    """Ordinary text -> ids; special-token strings inside the text are encoded as plain text."""
    return enc.encode_ordinary(text)


def decode(enc, ids):
    """ids -> text, as enc.decode, for every id: ids past the tokenizer's (the vocabulary's padded rows)
    have no text, and a byte whose rank a one-byte word piece took over ('A', 'I' and 's' in shapes) is
    still that byte, where enc.decode fails. Invalid UTF-8 is replaced."""
    pieces = []
    for t in ids:
        if t < enc.n_vocab:
            try:
                pieces.append(enc.decode_single_token_bytes(t))
            except KeyError:
                pieces.append(bytes([t]) if t < 256 else b'')
    return b''.join(pieces).decode('utf-8', errors='replace')


# -----------------------------------------------------------------------------
# The chat template (finetune data, eval prompts, sample.py)

def chat_tokens(enc, turns, n_image=0):
    """
    turns: [(role, text)] with role 'user' or 'assistant', alternating from 'user'.
    Returns (tokens, loss_mask): <|endoftext|> + n_image x <|image|> + "User: q\\nAssistant: a<|endoftext|>"
    per turn; the mask is 1 on the answers and their <|endoftext|> only. When the last turn is the
    user's, the tokens end with "Assistant:" — the prompt to generate from.
    """
    ids = TOKENIZERS[enc.name]
    tokens = [ids['eot_id']] + [ids['image_id']] * n_image
    mask = [0] * len(tokens)
    for i, (role, text) in enumerate(turns):
        if role == 'user':
            prefix = '' if i == 0 else '\n'
            part = encode(enc, f"{prefix}User: {text.strip()}\nAssistant:")
            tokens += part
            mask += [0] * len(part)
        elif role == 'assistant':
            part = encode(enc, ' ' + text.strip()) + [ids['eot_id']]
            tokens += part
            mask += [1] * len(part)
        else:
            raise ValueError(f"chat turn role must be 'user' or 'assistant', got {role!r}")
    return tokens, mask


def vqa_prompt(enc, question, num_patches):
    """<|endoftext|> + num_patches x <|image|> + "User: <question>\\n<VQA_INSTRUCTION>\\nAssistant:"."""
    return chat_tokens(enc, [('user', f"{question}\n{VQA_INSTRUCTION}")], n_image=num_patches)[0]
