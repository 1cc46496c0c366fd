"""The GPT-NeoX route through the data and the checkpoints: a small byte-level BPE configured as GPT-NeoX's
prepares text and captions, trains two steps, and its checkpoint samples with the data folder gone."""
import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from prepare_data import main as prepare
from shards import load_text_split
from tokenizer import encode, get_tokenizer, token_ids
from test_tokenizer_neox import corpus, neox_like

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NANO = ['--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32', '--batch_size=2', '--eval_iters=1',
        '--warmup_iters=1', '--learning_rate=1e-2', '--min_lr=1e-3', '--device=cpu', '--compile=False']


def sha256(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def run(script, args, env, check=True):
    result = subprocess.run([sys.executable, script] + args, cwd=ROOT, capture_output=True, text=True,
                            env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"{script} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    """A cache of its own, so a checkpoint's stored tokenizer.json is written where the test can see it."""
    return dict(os.environ, XDG_CACHE_HOME=str(tmp_path_factory.mktemp('cache')))


@pytest.fixture(scope='module')
def neox(tmp_path_factory):
    """(the tokenizer.json, its text data folder) from a folder of documents."""
    root = tmp_path_factory.mktemp('neox')
    path = neox_like(root / 'tokenizer.json')
    raw = root / 'raw'
    raw.mkdir()
    with open(raw / 'corpus.jsonl', 'w') as f:
        for doc in corpus(7, 120, 40):
            f.write(json.dumps({'text': doc}) + '\n')
    text = root / 'text'
    prepare(['text', f'--input={raw}', f'--out={text}', '--tokenizer=neox', f'--tokenizer_file={path}',
             '--val_fraction=0.1', '--workers=2', '--group_mb=0.01'])
    return path, str(text)


def test_text_data_carries_the_file_and_its_ids(neox):
    path, text = neox
    manifest = json.load(open(os.path.join(text, 'manifest.json')))
    ids = token_ids(get_tokenizer('neox', tokenizer_file=path))
    assert manifest['tokenizer'] == 'neox' and manifest['tokenizer_sha256'] == sha256(path)
    assert sha256(os.path.join(text, 'tokenizer.json')) == sha256(path)
    assert (manifest['vocab_size'], manifest['eot_id'], manifest['image_id']) == \
        (ids['vocab_size'], ids['eot_id'], ids['image_id'])
    part = json.load(open(os.path.join(text, 'part_000000.json')))
    assert part['settings']['tokenizer_sha256'] == sha256(path) and 'vocab_size' not in part['settings']
    docs = [json.loads(line)['text'] for line in open(os.path.dirname(text) + '/raw/corpus.jsonl')]
    enc = get_tokenizer('neox', tokenizer_file=path)
    want = sorted([ids['eot_id']] + encode(enc, d) for d in docs)
    got = []
    for split in ('train', 'val'):
        for shard in load_text_split(text, split)[1]:
            ends = [i for i, t in enumerate(np.asarray(shard).tolist()) if t == ids['eot_id']] + [len(shard)]
            got += [np.asarray(shard[a:b]).tolist() for a, b in zip(ends, ends[1:])]
    assert sorted(got) == want  # every document, as the file's ids
    assert prepare(['verify', f'--data={text}'])


def test_a_changed_file_rebuilds_and_the_same_file_keeps(neox, tmp_path, capsys):
    path, text = neox
    data = tmp_path / 'text'
    shutil.copytree(text, data)
    args = ['text', f'--input={os.path.dirname(text)}/raw', f'--out={data}', '--tokenizer=neox',
            '--val_fraction=0.1', '--workers=1', '--group_mb=0.01']
    again = prepare(args + [f'--tokenizer_file={path}'])
    assert 'already finished, kept' in capsys.readouterr().out
    assert again['tokenizer_sha256'] == sha256(path)
    other = tmp_path / 'other.json'  # the same tokens, another file: another sha256
    other.write_text(json.dumps(json.load(open(path)), indent=1))
    rebuilt = prepare(args + [f'--tokenizer_file={other}'])
    assert 'already finished' not in capsys.readouterr().out
    assert rebuilt['tokenizer_sha256'] == sha256(other) == sha256(data / 'tokenizer.json')
    assert rebuilt['num_tokens'] == again['num_tokens']


def write_captions(folder, n=12):
    folder.mkdir()
    rng = np.random.default_rng(0)
    with open(folder / 'captions.jsonl', 'w') as f:
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / f'{i}.png')
            caption = f'a   picture  of    thing {i} café'  # runs of spaces: GPT-NeoX's added tokens
            f.write(json.dumps({'image': f'{i}.png', 'caption': caption}) + '\n')


def test_captions_take_the_file_and_a_padded_vocabulary(neox, tmp_path):
    path, _ = neox
    write_captions(tmp_path / 'raw')
    out = tmp_path / 'captions'
    manifest = prepare(['captions', f"--input={tmp_path / 'raw'}", f'--out={out}', '--tokenizer=neox',
                        f'--tokenizer_file={path}', '--vocab_size=1536', '--image_size=48',
                        '--image_positions=4', '--max_tokens=64', '--workers=1', '--shard_size=6'])
    ids = token_ids(get_tokenizer('neox', tokenizer_file=path))
    assert manifest['tokenizer'] == 'neox' and manifest['tokenizer_sha256'] == sha256(path)
    assert manifest['vocab_size'] == 1536 and manifest['image_id'] == ids['image_id']
    assert sha256(out / 'tokenizer.json') == sha256(path)
    tokens = [t for split in ('train', 'val') for t in np.load(out / f'{split}_000000.tokens.npy').tolist()]
    assert tokens[:5] == [ids['eot_id']] + [ids['image_id']] * 4
    enc = get_tokenizer('neox', tokenizer_file=path)
    caption = encode(enc, 'a   picture  of    thing 0 café')
    assert tokens[5:5 + len(caption)] == caption
    info = json.load(open(out / 'train_000000.json'))
    assert info['job']['vocab_size'] == 1536 and info['job']['tokenizer_sha256'] == sha256(path)
    # a vocab_size that does not hold the ids is one line
    args = ['captions', f"--input={tmp_path / 'raw'}", f"--out={tmp_path / 'small'}", '--tokenizer=neox',
            f'--tokenizer_file={path}', '--vocab_size=100', '--image_size=48', '--image_positions=4']
    result = run('prepare_data.py', args, dict(os.environ), check=False)
    assert result.returncode == 1 and result.stderr.count('\n') == 1 and 'vocab_size 100' in result.stderr


def test_neox_needs_its_file_in_one_line(tmp_path):
    args = ['text', f'--input={tmp_path}', f"--out={tmp_path / 'o'}", '--tokenizer=neox']
    result = run('prepare_data.py', args, dict(os.environ), check=False)
    assert result.returncode == 1 and result.stderr.count('\n') == 1 and 'tokenizer_file' in result.stderr
    assert not os.path.exists(tmp_path / 'o')  # nothing written


def test_train_checkpoint_carries_the_file_and_samples_alone(neox, tmp_path, env):
    path, text = neox
    data = tmp_path / 'text'
    shutil.copytree(text, data)
    out = tmp_path / 'run'
    run('train.py', NANO + [f'--text_data={data}', f'--out_dir={out}', '--max_iters=2', '--eval_interval=2'],
        env)
    ckpt = torch.load(out / 'ckpt.pt', weights_only=True)
    with open(path, 'rb') as f:
        assert ckpt['tokenizer'] == 'neox' and ckpt['tokenizer_json'] == f.read()
    assert ckpt['tokenizer_sha256'] == sha256(path) and ckpt['step'] == 2
    shutil.rmtree(data)  # the checkpoint alone
    result = run('sample.py', [f'--ckpt={out / "ckpt.pt"}', '--prompt=the cat', '--num_samples=1',
                               '--max_new_tokens=5', '--device=cpu', '--temperature=0'], env)
    assert result.stdout.startswith('the cat')
    stored = os.path.join(env['XDG_CACHE_HOME'], 'vlm-pretrain', 'tokenizers', sha256(path) + '.json')
    assert sha256(stored) == sha256(path)


def test_a_checkpoint_and_data_of_other_files_is_one_line(neox, tmp_path, env):
    path, text = neox
    out = tmp_path / 'run'
    run('train.py', NANO + [f'--text_data={text}', f'--out_dir={out}', '--max_iters=2', '--eval_interval=2'],
        env)
    other = tmp_path / 'other.json'  # the same tokens, another file: another sha256
    other.write_text(json.dumps(json.load(open(path)), indent=1))
    prepare(['text', f'--input={os.path.dirname(text)}/raw', f"--out={tmp_path / 'text'}", '--tokenizer=neox',
             f'--tokenizer_file={other}', '--val_fraction=0.1', '--workers=1'])
    result = run('train.py', NANO + [f"--text_data={tmp_path / 'text'}", f"--out_dir={tmp_path / 'again'}",
                                     f"--init_from={out / 'ckpt.pt'}", '--max_iters=2'], env, check=False)
    assert result.returncode != 0 and 'sha256' in result.stderr
    line = [ln for ln in result.stderr.splitlines() if 'sha256' in ln]
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert sha256(path)[:12] in line[0] and sha256(str(other))[:12] in line[0]
    # a checkpoint whose file does not match its sha256 is refused in one line by model_from_checkpoint
    ckpt = torch.load(out / 'ckpt.pt', weights_only=True)
    ckpt['tokenizer_json'] += b' '
    torch.save(ckpt, tmp_path / 'bad.pt')
    result = run('sample.py', [f"--ckpt={tmp_path / 'bad.pt'}", '--device=cpu'], env, check=False)
    assert result.returncode == 1 and result.stderr.count('\n') == 1 and 'tokenizer_json' in result.stderr
