"""
The on-disk formats of prepared data and their readers; prepare_data.py writes them, train.py reads them.

A data folder holds a manifest.json (written last) and the shards it lists.

Token shards (kind 'text'): {split}_{k:06d}.bin, one per split and group of input files:
    bytes 0-7    magic b'VLMTOKS\\0'
    bytes 8-11   format version (uint32, little-endian), 1
    bytes 12-15  bytes per token (uint32): 2 (uint16) or 4 (uint32, for vocabularies over 65536)
    bytes 16-23  token count (uint64)
    bytes 24-63  zero
    then the tokens, little-endian; every document starts with <|endoftext|>.

Image shards (kinds 'captions' and 'instruct'): per shard index k and split, .npy arrays that the
loader memory-maps (no image decoding at training time), and a JSON written last, which marks the
shard finished:
    {split}_{k:06d}.images.npy       (M, S, S, 3) uint8, preprocessed at the encoder's input size S
    {split}_{k:06d}.tokens.npy       (T,) uint16 (uint32 for vocabularies over 65536), samples back to back
    {split}_{k:06d}.offsets.npy      (N+1,) int64: sample i is tokens[offsets[i]:offsets[i+1]]
    {split}_{k:06d}.mask.npy         (T,) uint8: 1 where the token is trained on
    {split}_{k:06d}.image_index.npy  (N,) int32: the sample's row in images, -1 for a text-only sample
    {split}_{k:06d}.json             name, job, num_samples, num_tokens, num_images, files (sha256 of
                                     each array), input (what was read and skipped), sources (N ids)

manifest.json, every kind: kind, format_version, tokenizer, vocab_size, eot_id, image_id, dtype (of
the tokens), num_tokens {split: n}, shards {split: [entry]}, sources (the input files), skipped
{reason: n}.
    text:    num_documents {split: n}; shard entry {name, num_tokens, sha256}
    images:  image_size, image_positions, max_tokens, val_fraction, num_samples, num_images
             {split: n}, shortened {reason: n}, skipped_by_source {path: {reason: n}}, boxes {reason: n}
             (the 665K mix's Visual Genome boxes converted, clamped, unparsed, kept or dropped);
             shard entry {name (without extension), num_samples, num_tokens, num_images, files}

Writing (prepare_data.py): every file is written under a temporary name (`NAME.tmp<pid>`) and renamed.
A part (a text group's part_NNNNNN.json, an image shard's JSON) is written after its shards and marks
them finished; it records what they were made from: each input file's path, size and modification time
(in ns), and the settings (tokenizer and the sha256 of its file, val_fraction, group / shard size, image
settings). A re-run into the same folder keeps the parts whose inputs and settings are unchanged and
rebuilds the others; before it rewrites anything it removes manifest.json and the parts it will redo
(start_rebuild), so the manifest never lists a shard it does not describe, and it writes the manifest
last. A kill -9 at any moment followed by the same command gives the files of an uninterrupted run;
the temporary files a killed run leaves are removed at the start of the next (remove_leftovers). Not
guaranteed: a power loss (directories are not fsynced), and two runs writing into one folder at once.

Reading checks the manifest, and each shard's header and size against it (cheap: no file is read
whole); verify_folder (`python prepare_data.py verify --data=DIR`) also checks every file's sha256
against the manifest and every token id against its vocab_size (it reads every byte).
"""
import bisect
import hashlib
import io
import json
import os
import re
import struct

import numpy as np


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path, data):
    """Write to a temporary name, fsync, rename: a reader never sees half a file, and a file that
    exists is complete (every artefact that is "done" when it exists is written this way)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, 'wb') as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)



SPLITS = ('train', 'val')
IMAGE_KINDS = ('captions', 'instruct')

# -----------------------------------------------------------------------------
# Token shards: a 64-byte header (magic, version, dtype code, token count) + the tokens

SHARD_MAGIC = b'VLMTOKS\0'
SHARD_VERSION = 1
HEADER_BYTES = 64
DTYPES = {2: np.uint16, 4: np.uint32}


def token_dtype(vocab_size):
    return np.uint16 if vocab_size <= 2 ** 16 else np.uint32


def write_token_shard(path, tokens):
    tokens = np.asarray(tokens)
    header = struct.pack('<8sIIQ', SHARD_MAGIC, SHARD_VERSION, tokens.dtype.itemsize, tokens.size)
    atomic_write_bytes(path, header.ljust(HEADER_BYTES, b'\0') + tokens.tobytes())


def read_token_shard(path):
    """Memory-map a token shard after checking its header and size."""
    size = os.path.getsize(path)
    if size < HEADER_BYTES:
        raise ValueError(f"{path}: truncated token shard ({size} bytes, smaller than the header)")
    with open(path, 'rb') as f:
        magic, version, itemsize, count = struct.unpack('<8sIIQ', f.read(24))
    if magic != SHARD_MAGIC:
        raise ValueError(f"{path}: not a token shard (bad magic {magic!r})")
    if version != SHARD_VERSION or itemsize not in DTYPES:
        raise ValueError(f"{path}: unsupported shard version {version} / item size {itemsize}")
    expected = HEADER_BYTES + count * itemsize
    if size != expected:
        raise ValueError(f"{path}: truncated or corrupt token shard: header says {count} tokens "
                         f"({expected} bytes), file has {size} bytes")
    return np.memmap(path, dtype=DTYPES[itemsize], mode='r', offset=HEADER_BYTES, shape=(count,))


MANIFEST_KEYS = ('kind', 'tokenizer', 'vocab_size', 'eot_id', 'image_id', 'dtype', 'num_tokens', 'shards')
IMAGE_MANIFEST_KEYS = ('image_size', 'image_positions', 'num_samples')
ENTRY_KEYS = {'text': ('name', 'num_tokens', 'sha256'),
              'images': ('name', 'num_samples', 'num_tokens', 'num_images', 'files')}


def manifest_problem(manifest):
    """What makes a parsed manifest.json unusable, or None."""
    if not isinstance(manifest, dict):
        return "not a JSON object"
    image = manifest.get('kind') in IMAGE_KINDS
    missing = [k for k in MANIFEST_KEYS + (IMAGE_MANIFEST_KEYS if image else ()) if k not in manifest]
    if missing:
        return f"no {', '.join(map(repr, missing))} (not a manifest prepare_data.py wrote, or a damaged one)"
    if manifest['kind'] not in ('text',) + IMAGE_KINDS:
        return f"unknown kind {manifest['kind']!r}"
    if manifest['dtype'] not in [np.dtype(t).name for t in DTYPES.values()]:
        return f"unknown token dtype {manifest['dtype']!r}"
    shards = manifest['shards']
    if not isinstance(shards, dict) or not all(isinstance(shards.get(s), list) for s in SPLITS):
        return f"'shards' must hold a list of shard entries for each of {', '.join(SPLITS)}"
    keys = ENTRY_KEYS['images' if image else 'text']
    for split in SPLITS:
        for i, entry in enumerate(shards[split]):
            where = f"shard entry {i} of '{split}'"
            if not isinstance(entry, dict) or any(k not in entry for k in keys):
                return f"{where} is not an object with {', '.join(keys)}"
            if image and not isinstance(entry['files'], dict):
                return f"{where}: 'files' must map file names to sha256"
            names = [entry['name']] + (list(entry['files']) if image else [])
            if any(not isinstance(n, str) or n in ('', '.', '..') or os.path.basename(n) != n for n in names):
                return f"{where}: a shard is a file of the folder, not {names}"
    return None


def read_manifest(folder, kind=None):
    """A data folder's manifest.json, checked; a bad one is a ValueError naming the file."""
    path = os.path.join(folder, 'manifest.json')
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{folder}: no manifest.json (prepare the data with prepare_data.py first)")
    try:
        with open(path, 'rb') as f:
            manifest = json.loads(f.read().decode('utf-8'))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e}); prepare the data again") from None
    problem = manifest_problem(manifest)
    if problem:
        raise ValueError(f"{path}: {problem}")
    if kind is not None and manifest['kind'] != kind:
        raise ValueError(f"{path}: expected kind '{kind}' data, found '{manifest['kind']}'")
    return manifest


# -----------------------------------------------------------------------------
# Writing a data folder so that a kill at any moment leaves nothing that looks finished and is not

TMP_NAME = re.compile(r'\.tmp\d+$')  # the temporary names of atomic_write_bytes, prepare_data.ShardWriter
PART_NAME = re.compile(r'^(?:part|train|val)_(\d{6})\.')  # the files of part / shard NNNNNN


def remove_leftovers(folder):
    """The temporary files of an interrupted run (ours by their name), at the start of the next."""
    stray = sorted(name for name in os.listdir(folder) if TMP_NAME.search(name))
    for name in stray:
        os.remove(os.path.join(folder, name))
    if stray:
        print(f"{folder}: removed {len(stray)} temporary files of an interrupted run")


def start_rebuild(folder, n_parts, redo):
    """Before a shard is rewritten: remove manifest.json, then the JSONs (`redo`) that mark the parts
    to redo as finished, then every file of the parts beyond this run's n_parts, their JSONs first.
    Killed anywhere in between, the folder holds no manifest, and no part that disagrees with its shards."""
    beyond = [name for name in os.listdir(folder)
              if PART_NAME.match(name) and int(PART_NAME.match(name)[1]) >= n_parts]
    if not redo and not beyond:
        return
    beyond.sort(key=lambda name: (not name.endswith('.json'), name))
    for name in ['manifest.json'] + list(redo) + beyond:
        if os.path.exists(os.path.join(folder, name)):
            os.remove(os.path.join(folder, name))


def write_manifest(folder, manifest):
    """manifest.json, written last; left untouched when a re-run found nothing to change."""
    path, data = os.path.join(folder, 'manifest.json'), json.dumps(manifest, indent=1).encode()
    if os.path.isfile(path):
        with open(path, 'rb') as f:
            if f.read() == data:
                return
    atomic_write_bytes(path, data)


def load_text_split(folder, split):
    """The shards of one split of a text data folder, as a list of memmaps, checked against the manifest."""
    manifest = read_manifest(folder, kind='text')
    shards = []
    for entry in manifest['shards'][split]:
        path = os.path.join(folder, entry['name'])
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{folder}: shard {entry['name']} listed in manifest.json is missing")
        tokens = read_token_shard(path)
        if tokens.dtype != np.dtype(manifest['dtype']):
            raise ValueError(f"{path}: {tokens.dtype.name} tokens, manifest.json says {manifest['dtype']}")
        if tokens.size != entry['num_tokens']:
            raise ValueError(f"{path}: {tokens.size} tokens, manifest.json says {entry['num_tokens']}")
        if tokens.size:
            shards.append(tokens)
    if not shards:
        raise ValueError(f"{folder}: the '{split}' split holds no tokens")
    return manifest, shards


# -----------------------------------------------------------------------------
# Image shards: .npy arrays, checked when the folder opens, then random access from memory maps

ARRAYS = ('images', 'tokens', 'offsets', 'mask', 'image_index')


def npy_header(dtype, shape):
    """The .npy header np.save writes; numpy pads it so that the first dimension can grow to 21
    digits, so its length does not depend on the count."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {'descr': np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                               'fortran_order': False, 'shape': tuple(shape)})
    return buf.getvalue()


def save_npy(path, array):
    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue())


def open_npy(path, dtype, shape_tail):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: shard file listed in manifest.json is missing")
    try:
        array = np.load(path, mmap_mode='r')
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path}: truncated or not a .npy file ({e})") from None
    if array.dtype != dtype or array.shape[1:] != tuple(shape_tail) or array.ndim != 1 + len(shape_tail):
        expected = str(('N',) + tuple(shape_tail)).replace("'", '')
        raise ValueError(f"{path}: expected a {np.dtype(dtype).name} {expected} array, "
                         f"found {array.dtype.name} {array.shape}")
    if os.path.getsize(path) != array.offset + array.nbytes:
        raise ValueError(f"{path}: {os.path.getsize(path)} bytes, its header says "
                         f"{array.offset + array.nbytes}")
    return array


def open_image_shard(folder, entry, manifest):
    """The arrays of one shard, checked against each other, its JSON and the manifest."""
    path = os.path.join(folder, entry['name'])
    S, dtype = manifest['image_size'], np.dtype(manifest['dtype'])
    images = open_npy(f"{path}.images.npy", np.uint8, (S, S, 3))
    tokens = open_npy(f"{path}.tokens.npy", dtype, ())
    offsets = np.array(open_npy(f"{path}.offsets.npy", np.int64, ()))  # small: kept in memory
    mask = open_npy(f"{path}.mask.npy", np.uint8, ())
    image_index = np.array(open_npy(f"{path}.image_index.npy", np.int32, ()))
    try:
        with open(f"{path}.json") as f:
            sources = json.load(f)['sources']
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{path}.json: missing or unreadable, the shard was not finished ({e})") from None
    n = entry['num_samples']
    problem = None
    if len(offsets) != n + 1:
        problem = f"offsets.npy has {len(offsets)} entries for {n} samples (manifest.json), expected {n + 1}"
    elif offsets[0] != 0 or offsets[-1] != len(tokens) or np.any(np.diff(offsets) < 0):
        problem = (f"offsets.npy (from {offsets[0]} to {offsets[-1]}) does not divide the {len(tokens)} "
                   f"tokens of tokens.npy")
    elif len(tokens) != entry['num_tokens']:
        problem = f"tokens.npy holds {len(tokens)} tokens, manifest.json says {entry['num_tokens']}"
    elif len(mask) != len(tokens):
        problem = f"mask.npy holds {len(mask)} values for {len(tokens)} tokens"
    elif len(image_index) != n:
        problem = f"image_index.npy holds {len(image_index)} entries for {n} samples"
    elif len(images) != entry['num_images']:
        problem = f"images.npy holds {len(images)} images, manifest.json says {entry['num_images']}"
    elif np.any((image_index < -1) | (image_index >= len(images))):
        problem = f"image_index.npy points outside the {len(images)} images of images.npy"
    elif len(sources) != n:
        problem = f"{entry['name']}.json lists {len(sources)} sources for {n} samples"
    if problem:
        raise ValueError(f"{path}: mismatched shard: {problem}")
    return dict(images=images, tokens=tokens, offsets=offsets, mask=mask, image_index=image_index,
                sources=sources)


class ImageShards:
    """One split of a captions / instruct folder. shards[i] -> dict(tokens, loss_mask, image, source):
    read-only views into the memory maps (copy before writing), image (S, S, 3) uint8 or None."""

    def __init__(self, folder, split='train'):
        self.manifest = manifest = read_manifest(folder)
        if manifest.get('kind') not in IMAGE_KINDS:
            raise ValueError(f"{folder}/manifest.json: expected image data ({' or '.join(IMAGE_KINDS)}), "
                             f"found kind '{manifest.get('kind')}'")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.shards = [open_image_shard(folder, entry, manifest) for entry in manifest['shards'][split]]
        self.starts = [0]  # cumulative sample counts: shard k holds samples starts[k]..starts[k+1]-1
        for shard in self.shards:
            self.starts.append(self.starts[-1] + len(shard['image_index']))
        if self.starts[-1] != manifest['num_samples'][split]:
            raise ValueError(f"{folder}/manifest.json: says {manifest['num_samples'][split]} '{split}' "
                             f"samples, its shards hold {self.starts[-1]}")

    def __len__(self):
        return self.starts[-1]

    def __getitem__(self, i):
        if not -len(self) <= i < len(self):
            raise IndexError(f"sample {i} out of range ({len(self)} samples)")
        i %= len(self)
        k = bisect.bisect_right(self.starts, i) - 1
        shard, j = self.shards[k], i - self.starts[k]
        a, b = shard['offsets'][j], shard['offsets'][j + 1]
        row = shard['image_index'][j]
        return dict(tokens=np.asarray(shard['tokens'][a:b]), loss_mask=np.asarray(shard['mask'][a:b]),
                    image=np.asarray(shard['images'][row]) if row >= 0 else None, source=shard['sources'][j])

    def lengths(self):
        """Token count of every sample, in order (for the loader's packing)."""
        return np.concatenate([np.diff(s['offsets']) for s in self.shards] + [np.zeros(0, dtype=np.int64)])


# -----------------------------------------------------------------------------
# Verification: every byte against the manifest's sha256, every token id against its vocab_size

def scan(path, offset=None, dtype=None):
    """(sha256 of the file, largest value of the array of dtype that starts at offset, or None), in one
    pass. The bytes after offset must be a whole number of items (the readers check sizes first)."""
    h, top = hashlib.sha256(), None
    with open(path, 'rb') as f:
        if offset is not None:
            h.update(f.read(offset))
        for chunk in iter(lambda: f.read(1 << 24), b''):  # a multiple of every item size
            h.update(chunk)
            if offset is not None and chunk:
                top = max(top if top is not None else 0, int(np.frombuffer(chunk, dtype=dtype).max()))
    return h.hexdigest(), top


def verify_folder(folder):
    """Check every shard file of a data folder: its header and size (the readers' checks), its sha256
    against manifest.json, and its token ids against the manifest's vocab_size. Returns (a line per bad
    file, the number of files checked, the vocab_size); a bad manifest raises ValueError."""
    manifest = read_manifest(folder)
    vocab_size, dtype, problems, checked = manifest['vocab_size'], np.dtype(manifest['dtype']), [], 0
    for entry in manifest['shards']['train'] + manifest['shards']['val']:
        text = manifest['kind'] == 'text'
        files, bad_files = {entry['name']: entry['sha256']} if text else entry['files'], 0
        for name, expected in files.items():
            path, checked = os.path.join(folder, name), checked + 1
            problem = verify_file(path, expected, entry, dtype, vocab_size)
            if problem:
                problems.append(problem)
                bad_files += 1
        if not text and not bad_files:
            try:  # the arrays against each other, the shard's JSON and the manifest
                open_image_shard(folder, entry, manifest)
            except (OSError, ValueError) as e:
                problems.append(str(e))
    return problems, checked, vocab_size


def verify_file(path, expected, entry, dtype, vocab_size):
    """One line naming the file and what is wrong with it, or None."""
    if not os.path.isfile(path):
        return f"{path}: shard file listed in manifest.json is missing"
    try:
        offset = None
        if path.endswith('.bin'):
            tokens = read_token_shard(path)
            if tokens.dtype != dtype or tokens.size != entry['num_tokens']:
                return (f"{path}: {tokens.size} {tokens.dtype.name} tokens, manifest.json says "
                        f"{entry['num_tokens']} {dtype.name}")
            offset = HEADER_BYTES
        elif path.endswith('.tokens.npy'):
            offset = open_npy(path, dtype, ()).offset
        digest, top = scan(path, offset, dtype)
    except (OSError, ValueError) as e:
        return str(e) if str(e).startswith(path) else f"{path}: {e}"
    bad = [] if digest == expected else ["sha256 differs from manifest.json's (the file changed after it "
                                         "was prepared)"]
    if top is not None and top >= vocab_size:
        bad.append(f"token id {top} at or above the vocab_size {vocab_size} of manifest.json")
    return f"{path}: " + "; ".join(bad) if bad else None


def verify_data(folders):
    """verify_folder for each folder, or when it holds no manifest.json for each subfolder that does (the
    shapes world's root). Returns (a line per good folder, a line per bad file or manifest)."""
    good, bad = [], []
    for folder in folders:
        found = []
        if os.path.isdir(folder) and not os.path.isfile(os.path.join(folder, 'manifest.json')):
            found = sorted(os.path.join(folder, name) for name in os.listdir(folder)
                           if os.path.isfile(os.path.join(folder, name, 'manifest.json')))
        for data in found or [folder]:
            try:
                problems, checked, vocab_size = verify_folder(data)
            except (OSError, ValueError) as e:  # no manifest, or a bad one
                problems = [str(e)]
            bad += problems
            if not problems:
                good.append(f"{data}: {checked} files verified: sha256 as in manifest.json, token ids below "
                            f"its vocab_size {vocab_size}")
    return good, bad
