"""
Raw sources -> token shards and image shards (their formats and readers: shards.py).

    python prepare_data.py text --input='data/raw/*.jsonl.zst' --out=data/text --tokenizer=gpt2
    python prepare_data.py captions --input='data/laion/*.tar' --out=data/captions --image_size=384
    python prepare_data.py llava --input=llava_v1_5_mix665k.json --images=data/llava --out=data/instruct
    python prepare_data.py shapes --out=data/shapes --seed=0     # the synthetic world, all three kinds
    python prepare_data.py verify --data=data/text,data/captions  # every sha256 and token id

Every command takes config files and --key=value (configurator.py); `python prepare_data.py text --help`
lists a command's keys. --input is a comma-separated list of files, globs and folders.

Text sources: .jsonl / .jsonl.zst / .jsonl.zstd (a `text` field per line; DCLM-baseline shards),
.txt (one document per file), .parquet (a `text` column); globs and directories.
Output: train_NNNNNN.bin / val_NNNNNN.bin token shards, one pair per group of input files, and a
manifest.json.

Image sources (captions): webdataset / img2dataset tars (KEY.jpg|jpeg|png|webp + KEY.txt), a
LLaVA-Pretrain JSON (the gpt turn is the caption), a folder with captions.jsonl ({"image", "caption"}).
Instruction data (llava): LLaVA v1.5 JSON, with text-only conversations kept as such and the boxes of
its Visual Genome samples converted to fractions of the image (--vg_boxes). The readers: image_readers.py.
Output: per shard and split, .npy arrays (images preprocessed to uint8 at the encoder's size, tokens,
offsets, loss mask, image index) and a JSON written last; shards.ImageShards reads them back with memory
maps. One shard per input tar, or per --shard_size JSON entries; the same inputs give byte-identical
shards.

A re-run into the same --out keeps the parts made from the same inputs (each file's path, size and
modification time) and settings, and rebuilds the others; a kill -9 at any moment followed by the same
command gives the files of an uninterrupted run (how: shards.py).
"""
import glob
import json
import os
import stat
import sys
import time
import zlib
from multiprocessing import Pool

import numpy as np
from tqdm import tqdm

import configurator
import shapes
import vision
from image_readers import (BOX_COUNTS, IMAGE_CUTS, IMAGE_SKIPS, VG_BOX_MODES, note,
                           read_image_source)
from shards import (ARRAYS, HEADER_BYTES, IMAGE_KINDS, SHARD_VERSION, SPLITS, atomic_write_bytes,
                    npy_header, remove_leftovers, save_npy, sha256_file, start_rebuild, token_dtype,
                    verify_data, write_manifest, write_token_shard)
from tokenizer import (GPT2_RANKS_SHA256, SHAPES_WORDS_FILE, TOKENIZERS, chat_tokens, encode, get_tokenizer,
                       token_ids)

# -----------------------------------------------------------------------------
# The commands and their settings (0 workers: one per CPU core)

TEXT = dict(
    input='',             # text files, globs or folders, comma-separated
    out='',               # the output folder
    tokenizer='gpt2',     # gpt2, bytes, shapes or neox (tokenizer.py)
    tokenizer_file='',    # neox: an HF tokenizer.json, copied into out as tokenizer.json
    vocab_size=0,         # 0: the tokenizer's padded size; more: an embedding's (50432 for DCLM-1B)
    val_fraction=0.005,   # documents in the val split, chosen by content
    workers=0,            # tokenizing processes
    group_mb=64.0,        # input megabytes per train/val shard pair
)
CAPTIONS = dict(
    input='',             # tars (files, globs, folders), folders with captions.jsonl, LLaVA-Pretrain .json
    images='',            # root of the image paths in a .json (default: its folder)
    out='',               # the output folder
    image_size=384,       # the encoder's input size in pixels
    image_positions=0,    # the encoder's patch count; 0: from the image size (IMAGE_POSITIONS)
    tokenizer='gpt2',     # gpt2, bytes, shapes or neox (tokenizer.py)
    tokenizer_file='',    # neox: an HF tokenizer.json, copied into out as tokenizer.json
    vocab_size=0,         # 0: the tokenizer's padded size; more: an embedding's (50432 for DCLM-1B)
    max_tokens=1024,      # longest sample, image positions included
    val_fraction=0.005,   # samples in the val split, chosen by source id
    workers=0,            # preparing processes
    shard_size=5000,      # JSON entries per shard (a tar is one shard)
)
LLAVA = dict(CAPTIONS, input='',  # as captions; input: LLaVA .json files (llava_v1_5_mix665k.json)
             vg_boxes='convert')  # Visual Genome boxes: convert (to fractions of the image), drop, keep
SHAPES = dict(
    out='data/shapes',    # the output folder: raw/ (the world), captions/, instruct/, text/
    seed=0,               # the world's seed
    tokenizer='shapes',   # gpt2, bytes or shapes (tokenizer.py)
    image_size=48,        # the images' size in pixels, the encoder's input size
    image_positions=0,    # the encoder's patch count; 0: from the image size (IMAGE_POSITIONS)
    max_tokens=1024,      # longest image sample, image positions included
    val_fraction=0.005,   # image samples in the val split, chosen by source id
    workers=0,            # preparing processes
    # the world's sizes; None: shapes.py's own (shapes.N_CAPTION, ...)
    n_caption=None,       # caption images
    n_instruct=None,      # instruction-tuning images
    n_instruct_text=None,  # text-only instruction conversations
    n_val=None,           # VQA val images
    val_questions_per_image=None,  # VQA val questions per image
    text_mb=None,         # text corpus size in MB
    val_text_mb=None,     # held-out text in MB (shapes.py: 5 % of text_mb, at least 0.02)
    n_mc=None,            # multiple-choice text questions
)
VERIFY = dict(
    data='',              # data folders, comma-separated; a folder without manifest.json: its subfolders
)
SHAPES_SIZES = ('n_caption', 'n_instruct', 'n_instruct_text', 'n_val', 'val_questions_per_image', 'text_mb',
                'val_text_mb', 'n_mc')

# -----------------------------------------------------------------------------
# What a part is made from: its inputs and settings (the rules of re-runs: shards.py)

def file_stat(path):
    """[size, modification time in ns] of a file, None if there is none: an input's identity (hashing
    every input at every run would cost as much as preparing it)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns] if stat.S_ISREG(st.st_mode) else None


def tokenizer_sha256(name, tokenizer_file=None):
    """The sha256 of the file a tokenizer is built from; None for 'bytes', which has none."""
    if name == 'gpt2':
        return GPT2_RANKS_SHA256  # gpt2_ranks_path() refuses a ranks file with another one
    if name == 'neox':
        return sha256_file(tokenizer_file)
    return sha256_file(SHAPES_WORDS_FILE) if name == 'shapes' else None


def data_tokenizer(out_dir, tokenizer, tokenizer_file=None, vocab_size=0):
    """The tokenizer settings every part records, checked before the workers start; neox's file is copied
    atomically into out_dir as tokenizer.json, the copy workers, training and checkpoints read."""
    copy = os.path.join(out_dir, 'tokenizer.json') if tokenizer == 'neox' else None
    get_tokenizer(tokenizer, tokenizer_file=tokenizer_file or None)  # neox without its file: one line
    os.makedirs(out_dir, exist_ok=True)
    if copy and os.path.abspath(tokenizer_file) != os.path.abspath(copy):
        with open(tokenizer_file, 'rb') as f:
            atomic_write_bytes(copy, f.read())
    settings = dict(tokenizer=tokenizer, tokenizer_sha256=tokenizer_sha256(tokenizer, copy))
    settings = dict(settings, vocab_size=vocab_size) if vocab_size else settings  # gpt2's parts as they were
    job_tokenizer(settings, out_dir)  # a vocab_size that does not hold every id: one line
    return settings


def manifest_tokenizer(settings, out_dir):
    """The manifest's tokenizer keys: its name (and for neox its tokenizer.json's sha256), ids and dtype."""
    keys = ('tokenizer', 'tokenizer_sha256') if settings['tokenizer'] == 'neox' else ('tokenizer',)
    ids = job_tokenizer(settings, out_dir)[1]
    return dict({k: settings[k] for k in keys}, vocab_size=ids['vocab_size'], eot_id=ids['eot_id'],
                image_id=ids['image_id'], dtype=np.dtype(token_dtype(ids['vocab_size'])).name)


def job_tokenizer(settings, out_dir):
    """The Encoding and its ids for settings from data_tokenizer: neox reads the data folder's copy."""
    copy = os.path.join(out_dir, 'tokenizer.json') if settings['tokenizer'] == 'neox' else None
    enc = get_tokenizer(settings['tokenizer'], tokenizer_file=copy)
    return enc, token_ids(enc, settings.get('vocab_size'))


# -----------------------------------------------------------------------------
# Text sources: each reader yields document strings and counts what it had to skip

def expand_inputs(patterns):
    files = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            matches = [os.path.join(root, name) for root, _, names in os.walk(pattern) for name in names]
        else:
            matches = glob.glob(pattern, recursive=True)
            if not matches and os.path.isfile(pattern):
                matches = [pattern]
        files += [m for m in matches if os.path.isfile(m) and text_format(m)]
    return sorted(set(files))


def text_format(path):
    for suffix in ('.jsonl.zst', '.jsonl.zstd', '.jsonl', '.txt', '.parquet'):
        if path.endswith(suffix):
            return suffix
    return None


def jsonl_lines(path, stats):
    if not path.endswith(('.zst', '.zstd')):
        with open(path, 'rb') as f:
            yield from f
        return
    try:
        import zstandard
    except ImportError:
        raise ImportError(f"reading {path} needs the 'zstandard' package: pip install zstandard") from None
    # decompress chunk by chunk and check for the end of the frame: a truncated file ends early
    decompressor, pending = zstandard.ZstdDecompressor().decompressobj(), b''
    with open(path, 'rb') as raw:
        try:
            for chunk in iter(lambda: raw.read(1 << 20), b''):
                lines = (pending + decompressor.decompress(chunk)).split(b'\n')
                pending = lines.pop()
                yield from lines
        except zstandard.ZstdError as e:
            stats['truncated'] += 1
            return
    if not decompressor.eof:
        stats['truncated'] += 1  # the last, incomplete line is dropped
        return
    if pending:
        yield pending


def read_documents(path, stats):
    fmt = text_format(path)
    if os.path.getsize(path) == 0:
        stats['empty'] += 1
        return
    if fmt == '.txt':
        try:
            with open(path, 'rb') as f:
                text = f.read().decode('utf-8-sig')  # without a byte order mark
        except UnicodeDecodeError:
            stats['bad_utf8'] += 1
            return
        if text.strip():
            yield text
        else:
            stats['empty'] += 1
        return
    if fmt == '.parquet':
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ImportError(f"reading {path} needs the 'pyarrow' package: pip install pyarrow") from None
        table = pq.read_table(path)
        if 'text' not in table.column_names:
            stats['missing_text'] += table.num_rows
            return
        for text in table.column('text').to_pylist():
            if isinstance(text, str) and text:
                yield text
            else:
                stats['missing_text'] += 1
        return
    for line in jsonl_lines(path, stats):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode('utf-8-sig'))  # a byte order mark starts some files
        except UnicodeDecodeError:
            stats['bad_utf8'] += 1
            continue
        except json.JSONDecodeError:
            stats['bad_json'] += 1
            continue
        text = record.get('text') if isinstance(record, dict) else None
        if not isinstance(text, str) or not text:
            stats['missing_text'] += 1
            continue
        yield text


# -----------------------------------------------------------------------------
# Text preparation: groups of files -> one train and one val shard each, in worker processes

SKIP_REASONS = ('bad_json', 'missing_text', 'bad_utf8', 'truncated', 'empty')


def is_val_document(text, val_fraction):
    # by content, so the split does not depend on file order or the number of workers
    return zlib.crc32(text.encode('utf-8', 'surrogatepass')) % 100_000 < val_fraction * 100_000


def group_files(files, group_bytes):
    groups, current, size = [], [], 0
    for path in files:
        current.append(path)
        size += os.path.getsize(path)
        if size >= group_bytes:
            groups.append(current)
            current, size = [], 0
    if current:
        groups.append(current)
    return groups


def part_name(index):
    return f'part_{index:06d}.json'


def finished_text_part(out_dir, job, itemsize):
    """The part of a group finished by an earlier run from the same inputs and settings, else None."""
    try:
        with open(os.path.join(out_dir, part_name(job['index']))) as f:
            part = json.load(f)
        same = all(part[key] == job[key] for key in ('files', 'val_files', 'inputs', 'settings'))
        whole = all(os.path.getsize(os.path.join(out_dir, shard['name'])) ==
                    HEADER_BYTES + shard['num_tokens'] * itemsize for shard in part['shards'].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return part if same and whole else None


def prepare_text_group(job):
    """Tokenize one group of files into train/val shards, then write the part that marks them finished."""
    index, files, out_dir, val_files = job['index'], job['files'], job['out_dir'], job['val_files']
    enc, ids = job_tokenizer(job['settings'], out_dir)
    val_fraction = job['settings']['val_fraction']
    dtype = token_dtype(ids['vocab_size'])
    splits = {'train': [], 'val': []}
    per_file, documents = {}, {'train': 0, 'val': 0}
    for path in files:
        stats = {reason: 0 for reason in SKIP_REASONS}
        try:
            for text in read_documents(path, stats):
                split = 'val' if path in val_files or is_val_document(text, val_fraction) else 'train'
                splits[split].append(np.array([ids['eot_id']] + encode(enc, text), dtype=dtype))
                documents[split] += 1
        except (OSError, ValueError) as e:  # an unreadable file (e.g. a corrupt parquet) is skipped whole
            stats['unreadable'] = 1
            stats.setdefault('errors', []).append(f"{path}: {type(e).__name__}: {e}")
        per_file[path] = stats
    shards = {}
    for split, arrays in splits.items():
        tokens = np.concatenate(arrays) if arrays else np.zeros(0, dtype=dtype)
        name = f'{split}_{index:06d}.bin'
        write_token_shard(os.path.join(out_dir, name), tokens)
        shards[split] = dict(name=name, num_tokens=int(tokens.size),
                             sha256=sha256_file(os.path.join(out_dir, name)))
    part = dict(files=files, val_files=val_files, shards=shards, documents=documents, per_file=per_file,
                inputs=job['inputs'], settings=job['settings'])
    atomic_write_bytes(os.path.join(out_dir, part_name(index)), json.dumps(part, indent=1).encode())
    return part


def prepare_text(inputs, out_dir, tokenizer='gpt2', val_fraction=0.005, workers=None, group_mb=64,
                 val_inputs=(), tokenizer_file=None, vocab_size=0):
    """val_inputs: files whose documents all go to the val split (a held-out set of its own)."""
    val_files = expand_inputs(val_inputs) if val_inputs else []
    if val_inputs and not val_files:
        raise SystemExit(f"no text files match the val inputs {val_inputs}")
    files = sorted(set(expand_inputs(inputs) + val_files))
    if not files:
        raise SystemExit(f"no text files (.jsonl, .jsonl.zst, .jsonl.zstd, .txt, .parquet) match {inputs}")
    tok = data_tokenizer(out_dir, tokenizer, tokenizer_file, vocab_size)
    remove_leftovers(out_dir)
    settings = dict(tok, val_fraction=val_fraction, group_mb=group_mb)
    itemsize = np.dtype(token_dtype(job_tokenizer(tok, out_dir)[1]['vocab_size'])).itemsize
    jobs = [dict(index=i, files=g, val_files=[f for f in g if f in val_files],
                 inputs={f: file_stat(f) for f in g}, settings=settings, out_dir=out_dir)
            for i, g in enumerate(group_files(files, group_mb * 2 ** 20))]
    parts = {job['index']: finished_text_part(out_dir, job, itemsize) for job in jobs}
    pending = [job for job in jobs if parts[job['index']] is None]
    if len(pending) < len(jobs):
        print(f"{out_dir}: {len(jobs) - len(pending)} of {len(jobs)} parts already finished, kept")
    start_rebuild(out_dir, len(jobs), [part_name(job['index']) for job in pending])
    t0, new_tokens = time.time(), 0
    done_bytes = sum(os.path.getsize(f) for job in jobs if parts[job['index']] for f in job['files'])
    with tqdm(total=sum(os.path.getsize(f) for f in files), initial=done_bytes, unit='B', unit_scale=True,
              desc='tokenizing') as bar:
        workers = min(workers or os.cpu_count() or 1, max(len(pending), 1))
        pool = Pool(workers) if workers > 1 else None
        results = pool.imap(prepare_text_group, pending) if pool else map(prepare_text_group, pending)
        for job, part in zip(pending, results):
            parts[job['index']] = part
            new_tokens += sum(s['num_tokens'] for s in part['shards'].values())
            bar.update(sum(os.path.getsize(f) for f in part['files']))
        if pool:
            pool.close()
            pool.join()
    elapsed = time.time() - t0
    return write_text_manifest(out_dir, tok, [parts[i] for i in sorted(parts)], new_tokens, elapsed)


def write_text_manifest(out_dir, tok, parts, new_tokens, elapsed):
    skipped = {reason: 0 for reason in SKIP_REASONS + ('unreadable',)}
    problems = []
    for part in parts:
        for path, stats in part['per_file'].items():
            for reason in skipped:
                skipped[reason] += stats.get(reason, 0)
            bad = {r: n for r, n in stats.items() if r != 'errors' and n}
            if bad:
                problems.append(f"  {path}: " + ", ".join(f"{n} {r}" for r, n in bad.items()))
    num_docs = {s: sum(p['documents'][s] for p in parts) for s in ('train', 'val')}
    manifest = dict(
        kind='text', format_version=SHARD_VERSION, **manifest_tokenizer(tok, out_dir),
        num_tokens={s: sum(p['shards'][s]['num_tokens'] for p in parts) for s in ('train', 'val')},
        num_documents=num_docs,
        shards={s: [p['shards'][s] for p in parts] for s in ('train', 'val')},
        sources=[f for p in parts for f in p['files']], skipped=skipped,
    )
    if sum(num_docs.values()) == 0:
        raise SystemExit("no usable documents found:\n" + "\n".join(problems))
    write_manifest(out_dir, manifest)
    total = sum(manifest['num_tokens'].values())
    train, val = manifest['num_tokens']['train'], manifest['num_tokens']['val']
    print(f"{out_dir}: {total:,} tokens ({train:,} train, {val:,} val) "
          f"from {sum(num_docs.values()):,} documents in {len(parts)} shard pairs")
    if new_tokens:
        print(f"tokenized {new_tokens:,} tokens in {elapsed:.1f}s: "
              f"{new_tokens / max(elapsed, 1e-9):,.0f} tokens/s")
    if problems:
        print(f"skipped: " + ", ".join(f"{n} {r}" for r, n in skipped.items() if n))
        print("\n".join(problems))
    return manifest

# -----------------------------------------------------------------------------
# Image samples: tokens and loss masks (the row contract: BOS, image positions, text, EOT); the reasons
# a sample is dropped or shortened are image_readers.py's

# image positions = the encoder's patch count at its input size (384 -> 729, 224 -> 196, 48 -> 9)
IMAGE_POSITIONS = {cfg.image_size: cfg.num_patches for cfg in vision.PRESETS.values()}


def default_image_positions(image_size):
    if image_size not in IMAGE_POSITIONS:
        raise ValueError(f"no known encoder takes {image_size}px images (known: {sorted(IMAGE_POSITIONS)}); "
                         f"pass --image_positions, the encoder's patch count")
    return IMAGE_POSITIONS[image_size]


def caption_sample(enc, source, caption, n_image, max_tokens, stats):
    """[EOT] + n_image x [IMAGE] + caption + [EOT], trained on the caption and its EOT; None if empty."""
    ids = token_ids(enc)
    text = encode(enc, caption.strip())
    if not text:
        note(stats, 'empty_caption', f"{source}: empty caption")
        return None
    room = max_tokens - n_image - 2
    if len(text) > room:
        text = text[:room]
        note(stats, 'caption_truncated')
    tokens = [ids['eot_id']] + [ids['image_id']] * n_image + text + [ids['eot_id']]
    return tokens, [0] * (1 + n_image) + [1] * (len(text) + 1)


def conversation_sample(enc, turns, n_image, max_tokens, stats):
    """chat_tokens of the turns, cut to max_tokens after a whole answer where possible; None without an
    answer."""
    eot = token_ids(enc)['eot_id']
    if turns and turns[-1][0] == 'user':
        turns = turns[:-1]
        note(stats, 'unanswered_question_dropped')
    if not turns:
        note(stats, 'no_answer')
        return None
    tokens, mask = chat_tokens(enc, turns, n_image)
    if len(tokens) <= max_tokens:
        return tokens, mask
    # chat_tokens appends turn after turn, so the conversation cut after an answer is a prefix
    ends = [i + 1 for i in range(max_tokens) if mask[i] and tokens[i] == eot]
    if ends:
        note(stats, 'conversation_cut')
        return tokens[:ends[-1]], mask[:ends[-1]]
    # the first question and answer alone do not fit: cut inside them and end with an EOT
    tokens, mask = tokens[:max_tokens - 1] + [eot], mask[:max_tokens - 1] + [mask[max_tokens - 2]]
    if not any(mask):
        note(stats, 'question_too_long')
        return None
    note(stats, 'conversation_truncated')
    return tokens, mask


# -----------------------------------------------------------------------------
# Writing one shard and split, and the worker that makes the shards of one job (one input tar, or
# one fixed-size group of JSON entries)

def shard_name(split, index):
    return f'{split}_{index:06d}'

class ShardWriter:
    """The samples of one shard and split. Images go to disk as they come (a shard of 10k images at
    384px is 4.4 GB), after a header that is rewritten with the count at the end."""

    def __init__(self, out_dir, name, image_size, dtype):
        self.path, self.image_size, self.dtype = os.path.join(out_dir, name), image_size, dtype
        self.image_tmp = f"{self.path}.images.npy.tmp{os.getpid()}"
        self.image_file = open(self.image_tmp, 'wb')
        self.header_bytes = self.image_file.write(npy_header(np.uint8, (0, image_size, image_size, 3)))
        self.tokens, self.mask, self.offsets, self.image_index, self.sources = [], [], [0], [], []
        self.num_images = 0

    def add(self, source, tokens, mask, image):
        self.tokens.append(np.asarray(tokens, dtype=self.dtype))
        self.mask.append(np.asarray(mask, dtype=np.uint8))
        self.offsets.append(self.offsets[-1] + len(tokens))
        self.sources.append(source)
        if image is None:
            self.image_index.append(-1)
        else:
            self.image_file.write(np.ascontiguousarray(image, dtype=np.uint8).tobytes())
            self.image_index.append(self.num_images)
            self.num_images += 1

    def finish(self, job, job_stats):
        header = npy_header(np.uint8, (self.num_images, self.image_size, self.image_size, 3))
        assert len(header) == self.header_bytes  # numpy's padding makes it so; the images start right after
        self.image_file.seek(0)
        self.image_file.write(header)
        self.image_file.flush()
        os.fsync(self.image_file.fileno())
        self.image_file.close()
        os.replace(self.image_tmp, f"{self.path}.images.npy")
        concat = lambda parts, dtype: np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
        save_npy(f"{self.path}.tokens.npy", concat(self.tokens, self.dtype))
        save_npy(f"{self.path}.offsets.npy", np.array(self.offsets, dtype=np.int64))
        save_npy(f"{self.path}.mask.npy", concat(self.mask, np.uint8))
        save_npy(f"{self.path}.image_index.npy", np.array(self.image_index, dtype=np.int32))
        name = os.path.basename(self.path)
        info = dict(name=name, job=job, num_samples=len(self.sources), num_tokens=int(self.offsets[-1]),
                    num_images=self.num_images,
                    files={f"{name}.{a}.npy": sha256_file(f"{self.path}.{a}.npy") for a in ARRAYS},
                    input=job_stats, sources=self.sources)
        # last: the shard is finished
        atomic_write_bytes(f"{self.path}.json", json.dumps(info, indent=1).encode())
        return info


def job_identity(job):
    """What a finished shard must have been made from: the settings and the input file's path, size and
    modification time (the entries themselves are in that file; the image files read are in 'input')."""
    return {k: v for k, v in job.items() if k not in ('entries', 'out_dir')}


def prepare_image_shard(job):
    """Read one job's samples, tokenize them, preprocess their images, and write its train and val shards."""
    enc, ids = job_tokenizer(job, job['out_dir'])
    dtype = token_dtype(ids['vocab_size'])
    size, n_image, max_tokens = job['image_size'], job['image_positions'], job['max_tokens']
    writers = {split: ShardWriter(job['out_dir'], shard_name(split, job['index']), size, dtype)
               for split in SPLITS}
    stats = dict(counts={reason: 0 for reason in IMAGE_SKIPS + IMAGE_CUTS + BOX_COUNTS}, errors=[])
    written, image_inputs = 0, {}  # the image files read, as file_stat gives them (None: missing)
    for source, image, text in read_image_source(job, stats):
        if job['kind'] == 'captions':
            sample = caption_sample(enc, source, text, n_image, max_tokens, stats)
        else:
            sample = conversation_sample(enc, text, n_image if image is not None else 0, max_tokens, stats)
        if sample is None:
            continue
        pixels = None
        if image is not None:
            if isinstance(image, str):
                image_inputs[image] = file_stat(image)
            if isinstance(image, str) and image_inputs[image] is None:
                note(stats, 'missing_image', f"{source}: image file {image} not found")
                continue
            try:
                pixels = vision.preprocess(image, size)  # (size, size, 3) uint8
            except vision.ImageError as e:
                note(stats, 'bad_image', f"{source}: {e}")
                continue
        split = 'val' if is_val_document(source, job['val_fraction']) else 'train'  # by id: order-free
        writers[split].add(source, *sample, pixels)
        written += 1
    counts = stats['counts']
    job_stats = dict(path=job['path'], samples=written, errors=stats['errors'],
                     skipped={r: counts[r] for r in IMAGE_SKIPS},
                     shortened={r: counts[r] for r in IMAGE_CUTS}, boxes={r: counts[r] for r in BOX_COUNTS},
                     image_inputs=image_inputs)
    return [writers[split].finish(job_identity(job), job_stats) for split in SPLITS]


def finished_image_shard(out_dir, job):
    """The two shard infos of a job finished by an earlier run from the same inputs (the input file and
    every image file it read, unchanged) and settings, else None."""
    infos = []
    for split in SPLITS:
        path = os.path.join(out_dir, shard_name(split, job['index']) + '.json')
        try:
            with open(path) as f:
                info = json.load(f)
            complete = all(os.path.isfile(os.path.join(out_dir, n)) for n in info['files'])
            images = info['input']['image_inputs']
            unchanged = all(file_stat(p) == st for p, st in images.items()) if not infos else True
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        if not complete or not unchanged or info.get('job') != job_identity(job):
            return None
        infos.append(info)
    return infos


# -----------------------------------------------------------------------------
# Image preparation: inputs -> jobs -> shards in worker processes -> manifest.json

IMAGE_READERS = {('instruct', '.json'): 'llava', ('captions', '.tar'): 'tar',  # (kind, extension) -> reader
                 ('captions', '.jsonl'): 'folder', ('captions', '.json'): 'pretrain'}


def image_sources(kind, inputs, images_root=None):
    """(reader, path, image root) per input file, sorted. Caption inputs: tars (files, globs, folders of
    tars), a folder holding captions.jsonl (or the .jsonl), a LLaVA-Pretrain .json; instruct: LLaVA .json.
    Image paths in JSON files are relative to images_root (default: the JSON file's folder)."""
    found = set()
    for pattern in inputs:
        if os.path.isdir(pattern):
            jsonl = os.path.join(pattern, 'captions.jsonl')
            tars = os.path.join(pattern, '**', '*.tar')
            paths = [jsonl] if os.path.isfile(jsonl) else glob.glob(tars, recursive=True)
            if not paths:
                raise SystemExit(f"{pattern}: a folder without captions.jsonl or .tar files")
        else:
            paths = glob.glob(pattern, recursive=True)
            if not paths:
                raise SystemExit(f"{pattern}: no such file")
        for path in paths:
            path = os.path.normpath(path)
            reader = IMAGE_READERS.get((kind, os.path.splitext(path)[1]))
            if reader is None:
                expected = ('a LLaVA .json' if kind == 'instruct' else
                            '.tar, a folder with captions.jsonl, or a LLaVA-Pretrain .json')
                raise SystemExit(f"{path}: not a {kind} source (expected {expected})")
            root = os.path.dirname(path) if reader == 'folder' or not images_root else images_root
            found.add((reader, path, None if reader == 'tar' else root))  # JSON image paths: from its folder
    return sorted(found)


def load_entries(reader, path):
    if reader == 'folder':  # lines stay bytes here; the worker parses them and notes the bad ones
        with open(path, 'rb') as f:
            return [line for line in f.read().split(b'\n') if line.strip()]
    try:
        with open(path, 'rb') as f:
            entries = json.loads(f.read().decode('utf-8-sig'))  # a byte order mark starts some files
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SystemExit(f"{path}: not valid JSON ({type(e).__name__}: {e})") from None
    if not isinstance(entries, list):
        raise SystemExit(f"{path}: expected a JSON list of samples, found a {type(entries).__name__}")
    return entries


def image_jobs(kind, sources, out_dir, shard_size, **settings):
    """One job per output shard: a whole tar, or shard_size consecutive entries of a JSON / JSONL file."""
    jobs = []
    for reader, path, root in sources:
        base = dict(kind=kind, reader=reader, path=path, root=root, **settings, out_dir=out_dir,
                    inputs={path: file_stat(path)}, shard_size=None if reader == 'tar' else shard_size)
        if reader == 'tar':
            jobs.append(dict(base, first=0, count=None, entries=None))
            continue
        entries = load_entries(reader, path)
        for first in range(0, len(entries), shard_size):
            group = entries[first:first + shard_size]
            jobs.append(dict(base, first=first, count=len(group), entries=group))
    for index, job in enumerate(jobs):
        job['index'] = index
    return jobs


def prepare_images(kind, inputs, out_dir, images=None, tokenizer='gpt2', image_size=384, image_positions=None,
                   max_tokens=1024, val_fraction=0.005, workers=None, shard_size=5000, tokenizer_file=None,
                   vocab_size=0, vg_boxes='convert'):
    """kind 'captions' (image-caption pairs) or 'instruct' (LLaVA conversations) -> image shards in
    out_dir. vg_boxes: what becomes of the boxes of the 665K mix's Visual Genome samples
    (image_readers.vg_boxes)."""
    if kind not in IMAGE_KINDS:
        raise ValueError(f"kind must be one of {IMAGE_KINDS}, got {kind!r}")
    if vg_boxes not in VG_BOX_MODES:
        raise ValueError(f"vg_boxes must be one of {', '.join(VG_BOX_MODES)}, got {vg_boxes!r}")
    image_positions = image_positions or default_image_positions(image_size)
    if max_tokens < image_positions + 3:
        raise ValueError(f"max_tokens {max_tokens} leaves no room for text after {image_positions} "
                         f"image positions")
    get_tokenizer(tokenizer, tokenizer_file=tokenizer_file or None)  # a bad file fails before any writing
    sources = image_sources(kind, inputs, images)
    tok = data_tokenizer(out_dir, tokenizer, tokenizer_file, vocab_size)
    remove_leftovers(out_dir)
    # only instruct jobs name vg_boxes, so caption shards made before it existed are still found finished
    instruct_only = dict(vg_boxes=vg_boxes) if kind == 'instruct' else {}
    jobs = image_jobs(kind, sources, out_dir, shard_size, **tok, image_size=image_size,
                      image_positions=image_positions, max_tokens=max_tokens, val_fraction=val_fraction,
                      **instruct_only)
    results, pending = {}, []
    for job in jobs:
        done = finished_image_shard(out_dir, job)
        if done:
            results[job['index']] = done
        else:
            pending.append(job)
    if results:
        print(f"{out_dir}: {len(results)} of {len(jobs)} shards already finished, kept")
    start_rebuild(out_dir, len(jobs), [shard_name(split, job['index']) + '.json'
                                       for job in pending for split in SPLITS])
    t0, new_images = time.time(), 0
    total = None if any(job['reader'] == 'tar' for job in pending) else sum(job['count'] for job in pending)
    if pending:
        workers = min(workers or os.cpu_count() or 1, len(pending))
        with tqdm(total=total, unit='samples', desc=f'preparing {kind}') as bar:
            pool = Pool(workers) if workers > 1 else None
            done = (pool.imap_unordered(prepare_image_shard, pending) if pool else
                    map(prepare_image_shard, pending))
            for infos in done:
                results[infos[0]['job']['index']] = infos
                new_images += sum(info['num_images'] for info in infos)
                stats = infos[0]['input']
                read = stats['samples'] + sum(stats['skipped'].values())
                bar.update(read - stats['skipped']['truncated_tar'])
            if pool:
                pool.close()
                pool.join()
    elapsed = time.time() - t0
    manifest = write_image_manifest(out_dir, kind, [results[i] for i in sorted(results)], tok,
                                    image_size, image_positions, max_tokens, val_fraction)
    if new_images:
        print(f"prepared {new_images:,} images in {elapsed:.1f}s: "
              f"{new_images / max(elapsed, 1e-9):,.1f} images/s")
    return manifest


def write_image_manifest(out_dir, kind, results, tok, image_size, image_positions, max_tokens,
                         val_fraction):
    keys = ('name', 'num_samples', 'num_tokens', 'num_images', 'files')
    shards = {split: [{k: infos[n][k] for k in keys} for infos in results] for n, split in enumerate(SPLITS)}
    skipped = {reason: 0 for reason in IMAGE_SKIPS}
    shortened = {reason: 0 for reason in IMAGE_CUTS}
    boxes = {reason: 0 for reason in BOX_COUNTS}
    by_source, errors = {}, {}
    for infos in results:
        stats = infos[0]['input']  # the job's input statistics, stored with both splits
        counts = by_source.setdefault(stats['path'], {})
        found = [*stats['skipped'].items(), *stats['shortened'].items(),
                 *stats.get('boxes', {}).items()]  # caption shards made before box counts have none
        for reason, n in found:
            (skipped if reason in skipped else shortened if reason in shortened else boxes)[reason] += n
            if n:
                counts[reason] = counts.get(reason, 0) + n
        errors.setdefault(stats['path'], []).extend(stats['errors'])
    manifest = dict(
        kind=kind, format_version=SHARD_VERSION, **manifest_tokenizer(tok, out_dir),
        image_size=image_size, image_positions=image_positions, max_tokens=max_tokens,
        val_fraction=val_fraction,
        num_samples={s: sum(e['num_samples'] for e in shards[s]) for s in SPLITS},
        num_tokens={s: sum(e['num_tokens'] for e in shards[s]) for s in SPLITS},
        num_images={s: sum(e['num_images'] for e in shards[s]) for s in SPLITS},
        shards=shards, skipped=skipped, shortened=shortened, boxes=boxes, sources=list(by_source),
        skipped_by_source={path: counts for path, counts in by_source.items() if counts},
    )
    total = sum(manifest['num_samples'].values())
    report = []
    for path, counts in manifest['skipped_by_source'].items():
        report.append(f"  {path}: " + ", ".join(f"{n} {r}" for r, n in counts.items()))
        report += [f"    {message}" for message in errors[path][:5]]
    if total == 0:
        raise SystemExit(f"{out_dir}: no usable samples found:\n" + "\n".join(report))
    write_manifest(out_dir, manifest)
    n, t = manifest['num_samples'], manifest['num_tokens']
    print(f"{out_dir}: {total:,} {kind} samples ({n['train']:,} train, {n['val']:,} val), "
          f"{sum(manifest['num_images'].values()):,} images, {sum(t.values()):,} tokens "
          f"in {len(results)} shards")
    if report:
        kinds = [('skipped', skipped), ('shortened', shortened)] + [('boxes', boxes)] * any(boxes.values())
        print("; ".join(f"{name}: " + (", ".join(f"{n} {r}" for r, n in counts.items() if n) or "none")
                        for name, counts in kinds))
        print("\n".join(report))
    return manifest

# -----------------------------------------------------------------------------
# The shapes world end to end: write it, then run the real pipeline on what it wrote

def prepare_shapes(out_dir, seed=0, tokenizer='shapes', image_size=48, image_positions=None, max_tokens=1024,
                   val_fraction=0.005, workers=None, **sizes):
    """out/raw (the world, as shapes.write_world writes it; eval reads raw/vqa and raw/text_mc),
    out/captions, out/instruct (image shards) and out/text (token shards). A world already written is
    kept; each step keeps its finished shards and rebuilds those made from other settings."""
    sizes = {k: v for k, v in sizes.items() if v is not None}
    unknown = set(sizes) - set(SHAPES_SIZES)
    if unknown:
        raise ValueError(f"unknown shapes world sizes {sorted(unknown)}; known: {SHAPES_SIZES}")
    raw = os.path.join(out_dir, 'raw')
    world = shapes.kept_world(raw, seed=seed, image_size=image_size, **sizes)
    if world is not None:
        print(f"{raw}: world already written, kept")
    else:
        world = shapes.write_world(raw, seed=seed, image_size=image_size, overwrite=True, verbose=True,
                                   **sizes)
    settings = dict(tokenizer=tokenizer, image_size=image_size, image_positions=image_positions,
                    max_tokens=max_tokens, val_fraction=val_fraction, workers=workers)
    manifests = {}
    for step in ('captions', 'instruct', 'text'):
        out = os.path.join(out_dir, step)
        if step == 'captions':
            manifests[step] = prepare_images('captions', [os.path.join(raw, 'captions')], out, **settings)
        elif step == 'instruct':
            manifests[step] = prepare_images('instruct', [os.path.join(raw, 'instruct', 'llava.json')], out,
                                             images=os.path.join(raw, 'instruct'), **settings)
        else:  # the world's held-out documents are the val split
            manifests[step] = prepare_text([os.path.join(raw, 'text', 'corpus.jsonl')], out,
                                           tokenizer=tokenizer, val_fraction=0.0, workers=workers,
                                           val_inputs=[os.path.join(raw, 'text', 'val.jsonl')])
    print(f"\nshapes world (seed {seed}) in {out_dir}:")
    for step, m in manifests.items():
        count = m.get('num_samples', m.get('num_documents'))
        print(f"  {step:<9} {count['train']:>7,} train {count['val']:>6,} val   "
              f"{sum(m['num_tokens'].values()):>11,} tokens   {os.path.join(out_dir, step)}")
    print(f"  eval      {os.path.join(raw, 'vqa')} (VQAv2 layout), "
          f"{os.path.join(raw, 'text_mc', 'arc_shapes.jsonl')}")
    return manifests


# -----------------------------------------------------------------------------
# The command line

def shapes_sizes(settings):
    """The world's sizes given on the command line (their keys default to None, so unchecked there)."""
    sizes = {k: settings[k] for k in SHAPES_SIZES if settings[k] is not None}
    for key, value in sizes.items():
        number = key.endswith('_mb')
        if type(value) not in ((int, float) if number else (int,)):
            sys.exit(f"config error: --{key} expects {'a number' if number else 'an integer'}, got {value!r}")
    return sizes


def main(argv=None):
    commands = dict(text=TEXT, captions=CAPTIONS, llava=LLAVA, shapes=SHAPES, verify=VERIFY)
    command, s = configurator.parse_command(commands, argv, script='prepare_data.py')
    if command == 'verify':  # every sha256 against the manifest, every token id against its vocab_size
        configurator.require(s, 'data')
        good, bad = verify_data([p.strip() for p in s['data'].split(',') if p.strip()])
        for line in good:
            print(line)
        if bad:
            sys.exit("\n".join(bad))
        return good
    configurator.require(s, 'out', *(() if command == 'shapes' else ('input',)))
    if s['tokenizer'] not in TOKENIZERS and (s['tokenizer'] != 'neox' or command == 'shapes'):
        sys.exit(f"config error: --tokenizer must be one of {', '.join(TOKENIZERS)}, got {s['tokenizer']!r}"
                 + ("" if command == 'shapes' else "; or neox, with --tokenizer_file=tokenizer.json"))
    inputs = [p.strip() for p in s.get('input', '').split(',') if p.strip()]
    sizes = shapes_sizes(s) if command == 'shapes' else {}
    try:
        get_tokenizer(s['tokenizer'], tokenizer_file=s.get('tokenizer_file') or None)  # GPT-2's: fetched
    except (OSError, RuntimeError, ValueError) as e:
        sys.exit(f"error: tokenizer '{s['tokenizer']}': {e}")
    settings = {k: s[k] for k in ('tokenizer', 'tokenizer_file', 'vocab_size', 'image_size',
                                  'image_positions', 'max_tokens', 'val_fraction', 'workers', 'vg_boxes')
                if k in s}
    try:
        if command == 'text':
            return prepare_text(inputs, s['out'], group_mb=s['group_mb'], **settings)
        if command == 'shapes':
            return prepare_shapes(s['out'], seed=s['seed'], **settings, **sizes)
        kind = 'captions' if command == 'captions' else 'instruct'
        return prepare_images(kind, inputs, s['out'], images=s['images'] or None, shard_size=s['shard_size'],
                              **settings)
    except (OSError, ValueError) as e:  # bad settings or input files (bad samples are skipped and counted)
        sys.exit(f"error: {e}")


if __name__ == '__main__':
    main()
