"""
The tokenizers, their special tokens and the chat template: what every stage agrees on.

  gpt2    tiktoken's GPT-2 (r50k) ranks, exact GPT-2 ids; <|image|> takes the first padded id
  bytes   the 256 bytes
  shapes  the 256 bytes, then one token per word piece of the shapes world (assets/shapes_words.json)
  neox    an HF byte-level BPE tokenizer.json (GPT-NeoX-20B's, which DCLM-1B uses), read into tiktoken:
          get_tokenizer('neox', tokenizer_file=path); <|image|> takes the first id past the file's

Every tokenizer has <|endoftext|> (document separator and BOS) and <|image|> (an image position).
Special-token strings inside a document stay plain text. docs/design.md lists the ids.
encode(enc, text) is the one way in for text: for neox it also applies the file's NFC normaliser and
splits out its added tokens (GPT-NeoX's runs of spaces) as HF does. token_ids(enc) gives the ids.
"""
import base64
import glob
import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import unicodedata

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


# -----------------------------------------------------------------------------
# GPT-NeoX: an HF byte-level BPE tokenizer.json read into a tiktoken Encoding
# tiktoken merges the adjacent pair whose concatenation has the lowest rank and takes a piece found whole
# in the vocabulary; HF applies the file's merges in list order. The two agree when every merge makes a
# new token, the merges make tokens in rank order, and HF's merges turn each token's own bytes into that
# token (then every pair HF can meet whose concatenation is a token is that token's merge). The reader
# checks all three and refuses anything else it cannot reproduce exactly, naming the file and the piece.

NEOX_PAD_MULTIPLE = 64  # vocab_size rounds image_id + 1 up to this; token_ids(enc, vocab_size=) pads further
UTF8_NEVER = frozenset([0xC0, 0xC1, *range(0xF5, 0x100)])  # bytes no UTF-8 text contains: may be absent


def byte_level_alphabet():
    """GPT-2's byte-level characters -> bytes: printable bytes stand for themselves, the others move to
    U+0100 onwards (the strings of a byte-level vocabulary and its merges)."""
    kept = [*range(ord('!'), ord('~') + 1), *range(ord('¡'), ord('¬') + 1),
            *range(ord('®'), ord('ÿ') + 1)]
    moved = [b for b in range(256) if b not in kept]
    return {**{chr(b): b for b in kept}, **{chr(256 + i): b for i, b in enumerate(moved)}}


def hf_fail(path, what):
    raise ValueError(f"{path}: {what}")


def check_hf_pipeline(path, cfg):
    """The normaliser, pre-tokenizer, decoder, post-processor and model settings: those that convert
    exactly, or one line naming the first that does not. Returns whether to apply NFC."""
    norm, pre = cfg.get('normalizer'), cfg.get('pre_tokenizer')
    if norm is not None and (not isinstance(norm, dict) or norm.get('type') != 'NFC'):
        hf_fail(path, f"normalizer {json.dumps(norm)[:120]} is not supported (only NFC or none converts)")
    if (not isinstance(pre, dict) or pre.get('type') != 'ByteLevel' or pre.get('add_prefix_space', False)
            or not pre.get('use_regex', True)):
        hf_fail(path, f"pre_tokenizer {json.dumps(pre)[:120]} is not supported (only ByteLevel with "
                      f"add_prefix_space=false and use_regex=true converts)")
    for key in ('decoder', 'post_processor'):
        part = cfg.get(key)
        if part is not None and (not isinstance(part, dict) or part.get('type') != 'ByteLevel'):
            hf_fail(path, f"{key} {json.dumps(cfg[key])[:120]} is not supported (only ByteLevel or none)")
    model = cfg.get('model')
    if not isinstance(model, dict) or model.get('type') != 'BPE':
        kind = model.get('type') if isinstance(model, dict) else model
        hf_fail(path, f"model type {kind!r} is not supported (only a byte-level BPE converts)")
    for key, allowed in (('dropout', (None,)), ('continuing_subword_prefix', (None, '')),
                         ('end_of_word_suffix', (None, '')), ('byte_fallback', (None, False)),
                         ('ignore_merges', (None, False))):
        if model.get(key) not in allowed:
            hf_fail(path, f"model {key}={model[key]!r} is not supported (only {allowed[-1]!r} converts)")
    return norm is not None


def hf_added_tokens(path, cfg, nfc):
    """The added tokens: {content: id} for the special ones (plain text inside a document), and the
    non-special ones HF matches before the BPE, split into those matched on the raw text and those matched
    on the normalised text (their content normalised too, as HF does)."""
    special, raw, normalised = {}, {}, {}
    for tok in cfg.get('added_tokens') or []:
        content, i = (tok.get('content'), tok.get('id')) if isinstance(tok, dict) else (None, None)
        if not isinstance(content, str) or not content or not isinstance(i, int) or i < 0:
            hf_fail(path, f"added token {json.dumps(tok)[:120]} needs a non-empty content and an id")
        flags = [k for k in ('lstrip', 'rstrip', 'single_word') if tok.get(k)]
        if flags:
            hf_fail(path, f"added token {content!r} sets {', '.join(flags)}, which is not supported")
        if tok.get('special'):
            special[content] = i
        elif tok.get('normalized', True) and nfc:
            normalised[unicodedata.normalize('NFC', content)] = i
        else:
            raw[content] = i
    every = {**special, **raw, **normalised}
    if len(set(every.values())) != len(every) or len(every) != len(cfg.get('added_tokens') or []):
        hf_fail(path, "two added tokens share a content or an id")
    return special, raw, normalised


def hf_vocab_bytes(path, model, added_ids):
    """The BPE vocabulary as {bytes: id}, without the entries of added tokens; the merges as byte pairs."""
    alphabet, ranks = byte_level_alphabet(), {}
    vocab, merges = model.get('vocab'), model.get('merges')
    if not isinstance(vocab, dict) or not isinstance(merges, list):
        hf_fail(path, "model has no vocab or merges")
    for text, i in vocab.items():
        if i in added_ids:
            continue  # an added token's entry: it is matched (or kept as text) before the BPE
        if not isinstance(i, int) or i < 0:
            hf_fail(path, f"vocab token {text!r} has the id {i!r}, not a non-negative integer")
        if not text or any(c not in alphabet for c in text):
            hf_fail(path, f"vocab token {text!r} (id {i}) is not byte-level")
        ranks[bytes(alphabet[c] for c in text)] = i
    if len(set(ranks.values())) != len(ranks):
        hf_fail(path, "two vocab tokens share an id")
    pairs = []
    for m in merges:
        parts = m.split(' ') if isinstance(m, str) else m
        if len(parts) != 2 or any(not isinstance(p, str) or p not in vocab or vocab[p] in added_ids
                                  for p in parts):
            hf_fail(path, f"merge {m!r} is not a pair of vocab tokens")
        pairs.append(tuple(bytes(alphabet[c] for c in p) for p in parts))
    return ranks, pairs


def hf_bpe(piece, merge_order):
    """HF's BPE on one piece: apply the lowest merge in list order (leftmost first) until none applies."""
    parts = [piece[i:i + 1] for i in range(len(piece))]
    while len(parts) > 1:
        order, at = min((merge_order.get((a, b), len(merge_order)), j)
                        for j, (a, b) in enumerate(zip(parts, parts[1:])))
        if order == len(merge_order):
            break
        parts[at:at + 2] = [parts[at] + parts[at + 1]]
    return parts


def check_hf_merges(path, ranks, pairs):
    """Every merge makes a new vocab token, in rank order, and every token is reached through its merges."""
    missing = sorted(b for b in set(range(256)) - UTF8_NEVER if bytes([b]) not in ranks)
    if missing:
        hf_fail(path, f"the vocabulary lacks the byte 0x{missing[0]:02x}, so some text has no tokens")
    merge_order, made, last = {}, set(), -1
    for order, (a, b) in enumerate(pairs):
        token = a + b
        if token not in ranks or token in made or ranks[token] <= last:
            why = ('is not a BPE vocab token' if token not in ranks else 'is made by an earlier merge too'
                   if token in made else f'has a lower id ({ranks[token]}) than an earlier merge\'s result')
            hf_fail(path, f"merge {order} makes token {token.decode('utf-8', 'replace')!r}, which {why}")
        merge_order[(a, b)], last = order, ranks[token]
        made.add(token)
    for token, i in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) > 1 and (token not in made or hf_bpe(token, merge_order) != [token]):
            hf_fail(path, f"vocab token {token.decode('utf-8', 'replace')!r} (id {i}) is not reached "
                          f"through its merges, so tiktoken would not tokenise as the file does")


def read_hf_tokenizer(path):
    """An HF tokenizer.json -> dict(ranks, specials, raw_added, normalised_added, nfc, eot_id, image_id,
    vocab_size), or one line naming the file and the first construct that does not convert exactly."""
    try:
        with open(path, encoding='utf-8') as f:
            cfg = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        hf_fail(path, f"cannot read a tokenizer.json ({type(e).__name__}: {str(e).splitlines()[0]})")
    if not isinstance(cfg, dict):
        hf_fail(path, "is not a tokenizer.json (not a JSON object)")
    nfc = check_hf_pipeline(path, cfg)
    special, raw, normalised = hf_added_tokens(path, cfg, nfc)
    added_ids = {**special, **raw, **normalised}
    ranks, pairs = hf_vocab_bytes(path, cfg['model'], set(added_ids.values()))
    if '<|image|>' in added_ids:
        hf_fail(path, "already has an <|image|> added token (<|image|> takes the first id past the file's)")
    by_id, alphabet = {i: t for t, i in added_ids.items()}, byte_level_alphabet()
    for text, i in cfg['model']['vocab'].items():
        if i in by_id and by_id[i].encode() not in (text.encode(), bytes(alphabet.get(c, 0) for c in text)):
            hf_fail(path, f"vocab token {text!r} has the id {i} of the added token {by_id[i]!r}")
    check_hf_merges(path, ranks, pairs)
    if '<|endoftext|>' not in added_ids:
        hf_fail(path, "has no <|endoftext|> added token (the document separator)")
    image_id = max([*ranks.values(), *added_ids.values()]) + 1
    return dict(ranks=ranks, specials=special, raw_added=raw, normalised_added=normalised, nfc=nfc,
                eot_id=added_ids['<|endoftext|>'], image_id=image_id,
                vocab_size=(image_id + NEOX_PAD_MULTIPLE) // NEOX_PAD_MULTIPLE * NEOX_PAD_MULTIPLE)


def added_splitter(tokens):
    """A regex whose split keeps the added tokens: longest first, so the leftmost-longest match wins as in
    HF's added-token trie (a run of 30 spaces: 24, then 6)."""
    if not tokens:
        return None
    return re.compile('(' + '|'.join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)) + ')')


def neox_encoding(path):
    """The tiktoken Encoding of a tokenizer.json, and what encode() needs beside it."""
    hf = read_hf_tokenizer(path)
    specials = {**hf['specials'], **hf['raw_added'], **hf['normalised_added'], '<|image|>': hf['image_id']}
    enc = tiktoken.Encoding(name='neox', pat_str=GPT2_PATTERN, mergeable_ranks=hf['ranks'],
                            special_tokens=specials)
    info = dict(ids=dict(eot_id=hf['eot_id'], image_id=hf['image_id'], vocab_size=hf['vocab_size']),
                nfc=hf['nfc'], raw=added_splitter(hf['raw_added']), raw_ids=hf['raw_added'],
                normalised=added_splitter(hf['normalised_added']), normalised_ids=hf['normalised_added'])
    return enc, info


def split_added(pattern, added_ids, text):
    """[(piece, None) | (None, id)]: the text cut around its added tokens (the pieces may be empty)."""
    if pattern is None:
        return [(text, None)]
    parts = pattern.split(text)  # text, token, text, token, ..., text
    return [(p, None) if k % 2 == 0 else (None, added_ids[p]) for k, p in enumerate(parts)]


def encode_neox(enc, info, text):
    ids = []
    for raw, raw_id in split_added(info['raw'], info['raw_ids'], text):
        if raw_id is not None:
            ids.append(raw_id)
            continue
        normal = unicodedata.normalize('NFC', raw) if info['nfc'] else raw
        for piece, piece_id in split_added(info['normalised'], info['normalised_ids'], normal):
            ids += [piece_id] if piece_id is not None else enc.encode_ordinary(piece)
    return ids


_tokenizer_cache = {}
_neox_info = {}  # id(Encoding) -> its ids and added-token splitters (the Encodings are kept)


def get_tokenizer(name, tokenizer_file=None):
    """A tiktoken Encoding with the special tokens of the contracts: 'gpt2' (exact GPT-2 ids), 'bytes',
    'shapes' (bytes + the shapes world's words) or 'neox' (tokenizer_file: an HF byte-level BPE
    tokenizer.json, the same ids as HF's tokenizers; one per file content). Encode with encode()."""
    if name == 'neox':
        if not tokenizer_file:
            raise ValueError("the neox tokenizer needs its tokenizer.json: pass tokenizer_file")
        if not os.path.isfile(tokenizer_file):
            raise ValueError(f"{tokenizer_file}: no such tokenizer.json")
        key = ('neox', sha256_file(tokenizer_file))
        if key not in _tokenizer_cache:
            enc, info = neox_encoding(tokenizer_file)
            _neox_info[id(enc)] = info
            _tokenizer_cache[key] = enc
        return _tokenizer_cache[key]
    if name not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {name!r}; known: {sorted(TOKENIZERS) + ['neox']}")
    if tokenizer_file:
        raise ValueError(f"tokenizer {name!r} takes no tokenizer_file (only neox reads one)")
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


def token_ids(enc, vocab_size=None):
    """dict(eot_id, image_id, vocab_size) of an Encoding from get_tokenizer (TOKENIZERS' entry, or the
    file's for neox). vocab_size: pad further, to the rows of an embedding being loaded (DCLM-1B: 50,432);
    it must hold every id."""
    ids = dict(_neox_info[id(enc)]['ids'] if id(enc) in _neox_info else TOKENIZERS[enc.name])
    if vocab_size is not None:
        if vocab_size <= ids['image_id']:
            raise ValueError(f"vocab_size {vocab_size} does not hold the {enc.name} tokenizer's "
                             f"{ids['image_id'] + 1} ids")
        ids['vocab_size'] = vocab_size
    return ids


def stored_tokenizer_file(data):
    """The bytes of a tokenizer.json kept in a checkpoint -> a file holding them (in the cache, named by
    their sha256) for get_tokenizer('neox', tokenizer_file=...): a checkpoint carries its file, so eval
    and sampling need no other."""
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(cache_dir(), 'tokenizers', f'{digest}.json')
    if not os.path.isfile(path) or sha256_file(path) != digest:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write_bytes(path, data)
    return path


def encode(enc, text):
    """Ordinary text -> ids; special-token strings inside the text are encoded as plain text. For neox: the
    file's NFC normaliser, then its added tokens (runs of spaces) split out before the BPE, as HF does."""
    info = _neox_info.get(id(enc))
    return enc.encode_ordinary(text) if info is None else encode_neox(enc, info, text)


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
    ids = token_ids(enc)
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
