"""Faults and bad input in data preparation: a finished part or shard is reused only when its inputs
(path, size, modification time) and settings are those of the run; kill -9 at any moment followed by
the same command gives the output of an uninterrupted run; the manifest never disagrees with its shards;
bad manifests, shards and samples are named in one line each."""
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from prepare_data import main
from shards import ImageShards, load_text_split, read_manifest
from tokenizer import TOKENIZERS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE, POSITIONS = 16, 4  # a 16 px encoder input with 4 patches (no known encoder: positions given)
IMAGE_ARGS = ['--tokenizer=bytes', f'--image_size={SIZE}', f'--image_positions={POSITIONS}', '--workers=1']
SHAPES_SIZES = ['--n_caption=12', '--n_instruct=8', '--n_instruct_text=4', '--n_val=3', '--text_mb=0.02',
                '--n_mc=5']


def image_bytes(seed, size=(24, 20)):
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, 'PNG')
    return buf.getvalue()


def write_jsonl(path, docs):
    path.write_text(''.join(json.dumps({'text': d}) + '\n' for d in docs))


def text_inputs(tmp_path, n=3):
    raw = tmp_path / 'raw'
    raw.mkdir()
    for i in range(n):
        write_jsonl(raw / f'{i}.jsonl', [f"file {i} doc {j}" for j in range(40)])
    return raw


def caption_inputs(tmp_path, n=7):
    folder = tmp_path / 'pics'
    (folder / 'img').mkdir(parents=True)
    lines = []
    for i in range(n):
        (folder / 'img' / f'{i}.png').write_bytes(image_bytes(i))
        lines.append(json.dumps({'image': f'img/{i}.png', 'caption': f'shape {i} on grey'}))
    (folder / 'captions.jsonl').write_text('\n'.join(lines) + '\n')
    return folder


def snapshot(folder, any_mtime=False):
    """Every file under folder -> its bytes; with any_mtime the inputs' modification times recorded in
    the parts' and shards' JSONs are blanked (the shapes world is rewritten, so its times differ)."""
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            data = open(path, 'rb').read()
            if any_mtime and name.endswith('.json'):
                data = json.dumps(blank_mtimes(json.loads(data))).encode()
            files[os.path.relpath(path, folder)] = data
    return files


def blank_mtimes(value):
    if isinstance(value, dict):
        return {k: ({p: st and [st[0], 0] for p, st in v.items()} if k in ('inputs', 'image_inputs')
                    else blank_mtimes(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [blank_mtimes(v) for v in value]
    return value


def prepare(args, cwd):
    """prepare_data.py's command line, run in this process from the folder cwd."""
    here = os.getcwd()
    os.chdir(cwd)
    try:
        return main(args)
    finally:
        os.chdir(here)


def prepare_process(args, cwd):
    return subprocess.run([sys.executable, os.path.join(REPO, 'prepare_data.py')] + args, cwd=cwd,
                          capture_output=True, text=True)


def mtimes(folder):
    return {name: os.stat(folder / name).st_mtime_ns for name in os.listdir(folder)}


# -----------------------------------------------------------------------------
# Re-runs: a finished part is identified by its inputs and settings

def test_text_rerun_with_another_tokenizer_rebuilds_every_part(tmp_path):
    raw = text_inputs(tmp_path)
    common = [f'--input={raw}', '--workers=1', '--group_mb=1e-6', '--val_fraction=0.1']
    prepare(['text', '--out=out', '--tokenizer=bytes'] + common, tmp_path)
    prepare(['text', '--out=out', '--tokenizer=shapes'] + common, tmp_path)
    prepare(['text', '--out=fresh', '--tokenizer=shapes'] + common, tmp_path)
    assert snapshot(tmp_path / 'out') == snapshot(tmp_path / 'fresh')
    # other settings of the split, and of the grouping (one group instead of three: no part is left over)
    prepare(['text', '--out=out', '--tokenizer=shapes'] + common[:2] + ['--val_fraction=0.3'], tmp_path)
    prepare(['text', '--out=fresh2', '--tokenizer=shapes'] + common[:2] + ['--val_fraction=0.3'], tmp_path)
    assert snapshot(tmp_path / 'out') == snapshot(tmp_path / 'fresh2')


def test_text_rerun_after_an_input_changes_rebuilds_its_part_only(tmp_path):
    raw = text_inputs(tmp_path)
    args = ['text', f'--input={raw}', '--tokenizer=bytes', '--workers=1', '--group_mb=1e-6']
    prepare(args + ['--out=out'], tmp_path)
    before = mtimes(tmp_path / 'out')
    # the same size, another content and modification time
    edited = raw / '1.jsonl'
    stat = os.stat(edited)
    edited.write_text(edited.read_text().replace('doc 1', 'DOC 1'))
    os.utime(edited, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10 ** 9))
    assert os.path.getsize(edited) == stat.st_size
    prepare(args + ['--out=out'], tmp_path)
    prepare(args + ['--out=fresh'], tmp_path)
    assert snapshot(tmp_path / 'out') == snapshot(tmp_path / 'fresh')
    after = mtimes(tmp_path / 'out')
    assert {n for n in after if after[n] != before[n]} == {
        'part_000001.json', 'train_000001.bin', 'val_000001.bin', 'manifest.json'}


def test_caption_rerun_after_inputs_or_settings_change_rebuilds(tmp_path):
    folder = caption_inputs(tmp_path)
    args = ['captions', f'--input={folder}', '--shard_size=3', '--val_fraction=0.3'] + IMAGE_ARGS
    prepare(args + ['--out=out'], tmp_path)
    before = mtimes(tmp_path / 'out')
    # an image file replaced: the shard that read it is rebuilt, the others are kept
    (folder / 'img' / '5.png').write_bytes(image_bytes(55))
    prepare(args + ['--out=out'], tmp_path)
    prepare(args + ['--out=fresh'], tmp_path)
    assert snapshot(tmp_path / 'out') == snapshot(tmp_path / 'fresh')
    after = mtimes(tmp_path / 'out')
    assert {n.split('.')[0] for n in after if after[n] != before[n]} == {'train_000001', 'val_000001',
                                                                           'manifest'}
    # a caption edited in place (the same number of lines): the file's shards are rebuilt
    jsonl = folder / 'captions.jsonl'
    jsonl.write_text(jsonl.read_text().replace('shape 1 on', 'shape 1 in'))
    prepare(args + ['--out=out'], tmp_path)
    shutil.rmtree(tmp_path / 'fresh')
    prepare(args + ['--out=fresh'], tmp_path)
    assert snapshot(tmp_path / 'out') == snapshot(tmp_path / 'fresh')
    # other settings: four shards, then three again (nothing of the fourth is left)
    prepare(args + ['--out=out', '--shard_size=2', '--max_tokens=40'], tmp_path)
    assert (tmp_path / 'out' / 'train_000003.json').is_file()
    prepare(args + ['--out=out'], tmp_path)
    assert snapshot(tmp_path / 'out') == snapshot(tmp_path / 'fresh')


def test_stray_temporary_files_of_killed_runs_are_removed(tmp_path):
    raw, folder = text_inputs(tmp_path), caption_inputs(tmp_path)
    for out in ('text', 'captions'):
        (tmp_path / out).mkdir()
        for name in ('train_000000.images.npy.tmp4242', 'train_000001.bin.tmp17', 'manifest.json.tmp9'):
            (tmp_path / out / name).write_bytes(b'half a file')
        (tmp_path / out / 'notes.tmp').write_text('not ours')
    prepare(['text', f'--input={raw}', '--out=text', '--tokenizer=bytes', '--workers=1'], tmp_path)
    prepare(['captions', f'--input={folder}', '--out=captions'] + IMAGE_ARGS, tmp_path)
    for out in ('text', 'captions'):
        assert sorted(n for n in os.listdir(tmp_path / out) if '.tmp' in n) == ['notes.tmp']


# -----------------------------------------------------------------------------
# kill -9 at deterministic points: the child kills itself when the N-th file under --out is opened for
# writing or renamed into place (with --workers=1 every file is written by that one process, in order)

KILLER = r'''
import builtins, os, re, runpy, signal, sys
repo, kill_at, log, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], os.path.abspath(sys.argv[4])
real_open, real_replace, count = builtins.open, os.replace, [0]

def event(what, path):
    path = os.path.abspath(path)
    if not path.startswith(out + os.sep):
        return
    count[0] += 1
    with real_open(log, 'a') as f:
        f.write(f"{what} {re.sub(r'[.]tmp[0-9]+$', '.tmp', os.path.relpath(path, out))}\n")
    if count[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

def open_for_writing(file, mode='r', *args, **kwargs):
    f = real_open(file, mode, *args, **kwargs)
    if isinstance(file, (str, os.PathLike)) and set(mode) & set('wxa+'):
        event('open', file)
    return f

def replace(src, dst, *args, **kwargs):
    real_replace(src, dst, *args, **kwargs)
    event('rename', dst)

builtins.open, os.replace = open_for_writing, replace
sys.path.insert(0, repo)
sys.argv = ['prepare_data.py'] + sys.argv[5:]
runpy.run_path(os.path.join(repo, 'prepare_data.py'), run_name='__main__')
'''


def run_killed(tmp_path, args, out, kill_at):
    """Run prepare_data.py with args, killed at the kill_at-th file event under out (0: never); returns
    the events it logged."""
    log = tmp_path / 'events.log'
    log.unlink(missing_ok=True)
    result = subprocess.run([sys.executable, '-c', KILLER, REPO, str(kill_at), str(log), out] + args,
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == (-9 if kill_at else 0), result.stderr[-2000:]
    return log.read_text().splitlines()


def check_kills(tmp_path, args, pick, any_mtime=False):
    out = tmp_path / 'out'
    events = run_killed(tmp_path, args, 'out', 0)
    reference = snapshot(out, any_mtime)
    points = pick(events)
    assert len(set(points)) >= 5 and max(points) <= len(events), points
    for kill_at in points:
        shutil.rmtree(out)
        assert run_killed(tmp_path, args, 'out', kill_at)[-1] == events[kill_at - 1]
        where = f"killed at {events[kill_at - 1]} (event {kill_at})"
        try:
            prepare(args, tmp_path)  # the same command again
        except SystemExit as e:
            raise AssertionError(f"{where}: {e}") from None
        assert snapshot(out, any_mtime) == reference, where


def test_kill_anywhere_in_text_then_rerun_is_identical(tmp_path):
    raw = text_inputs(tmp_path)
    args = ['text', f'--input={raw}', '--out=out', '--tokenizer=bytes', '--val_fraction=0.1', '--workers=1',
            '--group_mb=1e-6']
    # the first temporary file, its rename, the second, a finished part, the middle, the manifest
    check_kills(tmp_path, args, lambda events: [1, 2, 3, 6, 9, len(events) - 1])


def test_kill_anywhere_in_captions_then_rerun_is_identical(tmp_path):
    folder = caption_inputs(tmp_path)
    args = ['captions', f'--input={folder}', '--out=out', '--shard_size=3', '--val_fraction=0.3'] + IMAGE_ARGS
    # two temporary image files, the first array renamed, a JSON, inside the second shard, the manifest
    check_kills(tmp_path, args, lambda events: [1, 2, 3, 13, 30, len(events) - 1])


def test_kill_anywhere_in_shapes_then_rerun_is_identical(tmp_path):
    args = ['shapes', '--out=out', '--workers=1', '--max_tokens=256'] + SHAPES_SIZES

    def pick(events):  # inside the world, its world.json (written last), then inside each of the 3 steps
        first = lambda prefix, k=0: [i for i, e in enumerate(events, 1) if e.split()[1].startswith(prefix)][k]
        return [3, first('raw/world.json') + 1, first('captions/'), first('instruct/', 2),
                first('text/'), first('text/', 4)]
    check_kills(tmp_path, args, pick, any_mtime=True)


def test_the_manifest_never_disagrees_with_its_shards(tmp_path):
    raw = text_inputs(tmp_path)
    common = [f'--input={raw}', '--workers=1', '--group_mb=1e-6']
    references = {}
    for tokenizer in ('bytes', 'shapes'):
        prepare(['text', f'--tokenizer={tokenizer}', f'--out={tokenizer}'] + common, tmp_path)
        references[tokenizer] = (tmp_path / tokenizer / 'manifest.json').read_text()
    prepare(['text', '--tokenizer=bytes', '--out=out'] + common, tmp_path)
    # another tokenizer, killed at the second file event (a shard, or the manifest, renamed into place)
    events = run_killed(tmp_path, ['text', '--tokenizer=shapes', '--out=out'] + common, 'out', 2)
    assert events[-1].startswith('rename')
    manifest_path = tmp_path / 'out' / 'manifest.json'
    if manifest_path.exists():  # then it is a whole run's, and its shards are those it lists
        manifest = json.loads(manifest_path.read_text())
        assert manifest_path.read_text() == references[manifest['tokenizer']]
        for entry in manifest['shards']['train'] + manifest['shards']['val']:
            data = (tmp_path / 'out' / entry['name']).read_bytes()
            assert hashlib.sha256(data).hexdigest() == entry['sha256'], f"{entry['name']} disagrees"


# -----------------------------------------------------------------------------
# Data folders: bad manifests and shards are named, `verify` reads every byte, a byte order mark loses nothing

def test_an_invalid_manifest_is_named(tmp_path):
    raw = text_inputs(tmp_path, n=1)
    main(['text', f'--input={raw}', f"--out={tmp_path / 'out'}", '--tokenizer=bytes', '--workers=1'])
    path = tmp_path / 'out' / 'manifest.json'
    for text, problem in [('{"kind": "text", ', 'not valid JSON'), ('[1, 2]', 'not a JSON object'),
                          ('{"kind": "text"}', "no 'tokenizer', .*'shards'")]:
        path.write_text(text)
        with pytest.raises(ValueError, match=f'^{re.escape(str(path))}: .*{problem}'):
            load_text_split(str(tmp_path / 'out'), 'train')
    path.write_text('{"kind": "captions", ')
    with pytest.raises(ValueError, match=f'^{re.escape(str(path))}: '):
        ImageShards(str(tmp_path / 'out'))


def test_a_token_shard_of_another_dtype_than_its_manifest_is_named(tmp_path):
    raw = text_inputs(tmp_path, n=1)
    main(['text', f'--input={raw}', f"--out={tmp_path / 'out'}", '--tokenizer=bytes', '--workers=1'])
    path = tmp_path / 'out' / 'manifest.json'
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps(dict(manifest, dtype='uint32')))
    with pytest.raises(ValueError, match='train_000000.bin: uint16 tokens, manifest.json says uint32'):
        load_text_split(str(tmp_path / 'out'), 'train')


def rewrite_tokens(path, offset, value):
    data = bytearray(path.read_bytes())
    data[offset:offset + 2] = np.array([value], dtype=np.uint16).tobytes()
    path.write_bytes(bytes(data))


def test_verify_checks_every_sha256_and_token_id(tmp_path):
    raw, folder = text_inputs(tmp_path), caption_inputs(tmp_path)
    prepare(['text', f'--input={raw}', '--out=text', '--tokenizer=bytes', '--workers=1', '--group_mb=1e-6'],
            tmp_path)
    prepare(['captions', f'--input={folder}', '--out=captions', '--shard_size=3'] + IMAGE_ARGS, tmp_path)
    good = prepare_process(['verify', '--data=text,captions'], tmp_path)
    assert good.returncode == 0, good.stderr
    assert 'text: 6 files verified' in good.stdout and 'captions: 30 files verified' in good.stdout
    # a flipped token (the sha256 differs) and an id beyond the vocabulary with a matching sha256
    rewrite_tokens(tmp_path / 'text' / 'train_000001.bin', 64, ord('x'))
    vocab = TOKENIZERS['bytes']['vocab_size']
    tokens = tmp_path / 'captions' / 'train_000002.tokens.npy'
    header = len(tokens.read_bytes()) - 2 * np.load(tokens).size
    rewrite_tokens(tokens, header + 2, vocab + 5)
    manifest = json.loads((tmp_path / 'captions' / 'manifest.json').read_text())
    manifest['shards']['train'][2]['files']['train_000002.tokens.npy'] = \
        hashlib.sha256(tokens.read_bytes()).hexdigest()
    (tmp_path / 'captions' / 'manifest.json').write_text(json.dumps(manifest))
    bad = prepare_process(['verify', '--data=text,captions'], tmp_path)
    assert bad.returncode == 1 and bad.stderr.count('\n') == 2, bad.stderr
    assert f"{os.path.join('text', 'train_000001.bin')}: sha256" in bad.stderr
    assert f"{os.path.join('captions', 'train_000002.tokens.npy')}: token id {vocab + 5}" in bad.stderr
    assert f'vocab_size {vocab}' in bad.stderr


def test_a_byte_order_mark_keeps_the_first_document_and_sample(tmp_path):
    bom = '\ufeff'.encode()
    (tmp_path / 'a.jsonl').write_bytes(bom + b'{"text": "first"}\n{"text": "second"}\n')
    manifest = main(['text', f"--input={tmp_path / 'a.jsonl'}", f"--out={tmp_path / 'text'}",
                     '--tokenizer=bytes', '--val_fraction=0', '--workers=1'])
    assert manifest['num_documents']['train'] == 2 and manifest['skipped']['bad_json'] == 0
    folder = caption_inputs(tmp_path, n=2)
    jsonl = folder / 'captions.jsonl'
    jsonl.write_bytes(bom + jsonl.read_bytes())
    manifest = main(['captions', f'--input={folder}', f"--out={tmp_path / 'captions'}"] + IMAGE_ARGS)
    assert sum(manifest['num_samples'].values()) == 2
    entries = [{'id': 'a', 'image': 'img/0.png', 'conversations': [
        {'from': 'human', 'value': '<image>\nWhat?'}, {'from': 'gpt', 'value': 'Noise.'}]}]
    (folder / 'mix.json').write_bytes(bom + json.dumps(entries).encode())
    manifest = main(['llava', f"--input={folder / 'mix.json'}", f"--out={tmp_path / 'instruct'}"]
                    + IMAGE_ARGS)
    assert sum(manifest['num_samples'].values()) == 1


# -----------------------------------------------------------------------------
# Image samples: paths outside --images, <image> without an image, empty captions: counted and named

def test_llava_image_paths_outside_the_images_folder_are_skipped_and_named(tmp_path, capsys):
    root = tmp_path / 'images'
    root.mkdir()
    (root / 'in.png').write_bytes(image_bytes(1))
    (tmp_path / 'secret.png').write_bytes(image_bytes(2))
    turns = [{'from': 'human', 'value': '<image>\nWhat?'}, {'from': 'gpt', 'value': 'Noise.'}]
    entries = [{'id': 'inside', 'image': 'in.png', 'conversations': turns},
               {'id': 'up', 'image': '../secret.png', 'conversations': turns},
               {'id': 'absolute', 'image': str(tmp_path / 'secret.png'), 'conversations': turns},
               {'id': 'text', 'conversations': [{'from': 'human', 'value': 'Hi <image>'},
                                                {'from': 'gpt', 'value': 'Hello.'}]}]
    (tmp_path / 'mix.json').write_text(json.dumps(entries))
    manifest = main(['llava', f"--input={tmp_path / 'mix.json'}", f'--images={root}',
                     f"--out={tmp_path / 'out'}"] + IMAGE_ARGS)
    samples = ImageShards(str(tmp_path / 'out'))
    assert [samples[i]['source'] for i in range(len(samples))] == ['inside']
    assert {r: n for r, n in manifest['skipped'].items() if n} == {'image_outside_root': 2,
                                                                    'image_in_text_only': 1}
    printed = capsys.readouterr().out
    assert '(up): image path ../secret.png' in printed and '(absolute): image path /' in printed
    assert '(text): <image> in a conversation without an image' in printed


def test_empty_captions_are_counted_and_named(tmp_path, capsys):
    folder = caption_inputs(tmp_path, n=3)
    jsonl = folder / 'captions.jsonl'
    jsonl.write_text(jsonl.read_text() + json.dumps({'image': 'img/1.png', 'caption': ' \n '}) + '\n')
    manifest = main(['captions', f'--input={folder}', f"--out={tmp_path / 'out'}"] + IMAGE_ARGS)
    assert manifest['skipped']['empty_caption'] == 1
    assert 'img/1.png: empty caption' in capsys.readouterr().out
    assert read_manifest(str(tmp_path / 'out'))['num_samples']['train'] == 3
