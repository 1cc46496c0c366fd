"""train.py under faults and bad input, as a careless or unlucky user meets them: a divergence, a full
disk, a second signal, a killed run resumed, a bad value, data that does not fit. Each ends in one line
naming the file or key, and the last good checkpoint stays in place."""
import json
import os
import resource
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import one_line_error
from shards import read_manifest, read_token_shard, write_token_shard

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NANO = ['--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32', '--batch_size=4', '--eval_iters=2',
        '--warmup_iters=2', '--learning_rate=1e-2', '--min_lr=1e-3', '--log_interval=1']


def run_train(args, check=True, **kw):
    result = subprocess.run([sys.executable, 'train.py'] + args, cwd=ROOT, capture_output=True, text=True, **kw)
    if check and result.returncode != 0:
        raise AssertionError(f"train.py failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def read_log(out_dir):
    with open(os.path.join(out_dir, 'log.jsonl')) as f:
        return [json.loads(line) for line in f]


def file_bytes(path):
    with open(path, 'rb') as f:
        return f.read()


# -----------------------------------------------------------------------------
# a divergence never replaces the last good checkpoint

def test_divergence_at_an_evaluation_step_keeps_the_good_checkpoint(text_data, tmp_path):
    out = str(tmp_path / 'run')
    args = NANO + [f'--text_data={text_data}', f'--out_dir={out}', '--eval_interval=1']
    run_train(args + ['--max_iters=2'])
    # every step is an evaluation step: the exploded weights are first met by the evaluation
    result = run_train(args + ['--max_iters=20', '--init_from=resume', '--learning_rate=1e6',
                               '--warmup_iters=0', '--grad_clip=0.0'], check=False)
    one_line_error(result, 'non-finite', 'val loss', os.path.join(out, 'ckpt.pt'))
    saved = torch.load(os.path.join(out, 'ckpt.pt'), weights_only=True)
    assert all(torch.isfinite(t).all() for t in saved['model'].values())
    # and the run resumes from it at the normal learning rate
    run_train(args + ['--max_iters=4', '--init_from=resume'])


def test_divergence_before_any_checkpoint_says_there_is_none(text_data, tmp_path):
    out = str(tmp_path / 'run')
    result = run_train(NANO + [f'--text_data={text_data}', f'--out_dir={out}', '--eval_interval=1',
                               '--max_iters=20', '--learning_rate=1e6', '--warmup_iters=0', '--grad_clip=0.0'],
                       check=False)
    one_line_error(result, 'non-finite', 'no ckpt.pt')
    assert not os.path.exists(os.path.join(out, 'ckpt.pt'))


# -----------------------------------------------------------------------------
# one validation pass over the config, before anything trains

BAD_VALUES = [
    (['--eval_interval=0'], 'eval_interval'),
    (['--batch_size=0'], 'batch_size'),
    (['--gradient_accumulation_steps=0'], 'gradient_accumulation_steps'),
    (['--max_iters=-5'], 'max_iters'),
    (['--eval_iters=0'], 'eval_iters'),
    (['--log_interval=0'], 'log_interval'),
    (['--attention=flash'], 'attention'),
    (['--projector=mlp3'], 'projector'),
    (['--dtype=float8'], 'dtype'),
    (['--milestones=(0.5, 1.5)'], 'milestones'),
    (['--image_ratio=1.5'], 'image_ratio'),
    (['--stage=pretrain'], 'stage'),
]
if not torch.cuda.is_available():
    BAD_VALUES.append((['--device=cuda'], 'cuda'))


@pytest.mark.parametrize('args,word', BAD_VALUES, ids=[a[0][0] for a in BAD_VALUES])
def test_a_bad_value_is_one_line_naming_the_key(text_data, tmp_path, args, word):
    out = str(tmp_path / 'run')
    result = run_train(NANO + [f'--text_data={text_data}', f'--out_dir={out}', '--max_iters=4'] + args,
                       check=False)
    one_line_error(result, word)
    assert not os.path.exists(os.path.join(out, 'log.jsonl'))


def test_out_dir_naming_a_file_is_one_line(text_data, tmp_path):
    path = tmp_path / 'a_file'
    path.write_text('not a folder')
    result = run_train(NANO + [f'--text_data={text_data}', f'--out_dir={path}', '--max_iters=2'], check=False)
    one_line_error(result, str(path))


@pytest.fixture(scope='module')
def stopped_run(text_data, tmp_path_factory):
    """A text run stopped at step 4 of 8, with ckpt.pt there."""
    out = str(tmp_path_factory.mktemp('stopped') / 'run')
    run_train(NANO + [f'--text_data={text_data}', f'--out_dir={out}', '--max_iters=8', '--eval_interval=4',
                      '--stop_at_step=4'])
    return out


@pytest.mark.parametrize('args,word', [(['--block_size=64'], 'block_size'), (['--stage=finetune'], 'stage')])
def test_resuming_with_another_block_size_or_stage_is_one_line(text_data, stopped_run, tmp_path, args, word):
    out = str(tmp_path / 'run')
    shutil.copytree(stopped_run, out)
    result = run_train(NANO + [f'--text_data={text_data}', f'--out_dir={out}', '--max_iters=8',
                               '--eval_interval=4', '--init_from=resume', '--instruct_data=x'] + args, check=False)
    one_line_error(result, word, os.path.join(out, 'ckpt.pt'))


def test_a_checkpoint_without_model_args_is_one_line(text_data, stopped_run, tmp_path):
    out = str(tmp_path / 'run')
    shutil.copytree(stopped_run, out)
    ckpt = torch.load(os.path.join(out, 'ckpt.pt'), weights_only=True)
    del ckpt['model_args']
    torch.save(ckpt, os.path.join(out, 'ckpt.pt'))
    result = run_train(NANO + [f'--text_data={text_data}', f'--out_dir={out}', '--max_iters=8',
                               '--init_from=resume'], check=False)
    one_line_error(result, 'model_args', os.path.join(out, 'ckpt.pt'))


def test_a_checkpoint_with_a_tensor_of_the_wrong_shape_is_one_line(text_data, stopped_run, tmp_path):
    out = str(tmp_path / 'run')
    shutil.copytree(stopped_run, out)
    ckpt = torch.load(os.path.join(out, 'ckpt.pt'), weights_only=True)
    name = next(k for k, v in ckpt['model'].items() if v.dim() == 2)
    ckpt['model'][name] = ckpt['model'][name][:, :-1].clone()
    torch.save(ckpt, os.path.join(out, 'ckpt.pt'))
    result = run_train(NANO + [f'--text_data={text_data}', f'--out_dir={out}', '--max_iters=8',
                               '--init_from=resume'], check=False)
    one_line_error(result, name, os.path.join(out, 'ckpt.pt'))


# -----------------------------------------------------------------------------
# writing checkpoints: a full disk, fsync, a second signal

def no_bigger_files_than(n_bytes):
    """A child process that may not write files larger than n_bytes: writes past it fail (EFBIG), as on
    a full disk, instead of killing the process (SIGXFSZ ignored)."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, n_bytes))
    return limit


def test_a_full_disk_while_writing_a_checkpoint_is_one_line_and_keeps_the_old_one(stopped_run, text_data,
                                                                                   tmp_path):
    out = str(tmp_path / 'run')
    shutil.copytree(stopped_run, out)
    good = file_bytes(os.path.join(out, 'ckpt.pt'))
    result = run_train(NANO + [f'--text_data={text_data}', f'--out_dir={out}', '--max_iters=8',
                               '--eval_interval=4', '--init_from=resume'], check=False,
                       preexec_fn=no_bigger_files_than(len(good) // 2))
    one_line_error(result, os.path.join(out, 'ckpt.pt'))
    assert file_bytes(os.path.join(out, 'ckpt.pt')) == good
    assert not [n for n in os.listdir(out) if '.tmp' in n]


def test_save_checkpoint_syncs_the_file_before_the_rename(tmp_path, monkeypatch):
    import train
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, 'fsync', lambda fd: events.append('fsync') or real_fsync(fd))
    monkeypatch.setattr(os, 'replace', lambda a, b: events.append('replace') or real_replace(a, b))
    train.save_checkpoint(str(tmp_path / 'ckpt.pt'), {'step': 1})
    assert events[:2] == ['fsync', 'replace']
    assert torch.load(tmp_path / 'ckpt.pt', weights_only=True)['step'] == 1


def test_a_second_sigterm_after_the_first_exits_zero_once_saved(text_data, tmp_path):
    out = str(tmp_path / 'run')
    cmd = [sys.executable, 'train.py'] + NANO + [f'--text_data={text_data}', f'--out_dir={out}',
                                                  '--max_iters=100000', '--eval_interval=100000']
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # the first step's log line: the loop runs
        if line.startswith('step 1/'):
            break
    proc.send_signal(signal.SIGTERM)
    for line in proc.stdout:  # saved: from here on the run is shutting down
        if 'saved' in line:
            break
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert torch.load(os.path.join(out, 'ckpt.pt'), weights_only=True)['step'] >= 1


# -----------------------------------------------------------------------------
# a run killed after its last checkpoint, resumed: the log holds each step once

def test_resume_cuts_the_log_back_to_the_checkpoint(text_data, tmp_path):
    args = NANO + [f'--text_data={text_data}', '--max_iters=12', '--eval_interval=4']
    straight, killed = str(tmp_path / 'straight'), str(tmp_path / 'killed')
    run_train(args + [f'--out_dir={straight}'])
    run_train(args + [f'--out_dir={killed}', '--stop_at_step=8'])
    at_8 = file_bytes(os.path.join(killed, 'ckpt.pt'))
    # the run went on to step 10 and was killed there: its log ran ahead of its ckpt.pt (step 8)
    run_train(args + [f'--out_dir={killed}', '--init_from=resume', '--stop_at_step=10'])
    with open(os.path.join(killed, 'ckpt.pt'), 'wb') as f:
        f.write(at_8)
    run_train(args + [f'--out_dir={killed}', '--init_from=resume'])
    timing = ('tokens_per_sec', 'mfu', 'step_seconds', 'peak_memory_gib')
    strip = lambda records: [{k: v for k, v in r.items() if k not in timing} for r in records]  # noqa: E731
    assert strip(read_log(killed)) == strip(read_log(straight))


# -----------------------------------------------------------------------------
# data that does not fit

def test_token_ids_past_the_vocabulary_are_one_line(text_data, tmp_path):
    data = str(tmp_path / 'text')
    shutil.copytree(text_data, data)
    manifest = read_manifest(data)
    train_shard = os.path.join(data, manifest['shards']['train'][0]['name'])
    tokens = np.array(read_token_shard(train_shard))
    tokens[::7] = manifest['vocab_size'] + 5  # the same size and header: only the ids are wrong
    write_token_shard(train_shard, tokens)
    result = run_train(NANO + [f'--text_data={data}', f'--out_dir={tmp_path}/run', '--max_iters=2'],
                       check=False)
    one_line_error(result, 'vocab', data)


def test_a_captions_folder_given_as_instruct_data_is_one_line(text_data, tmp_path):
    from prepare_data import prepare_shapes
    world = str(tmp_path / 'world')
    prepare_shapes(world, seed=0, tokenizer='bytes', image_size=16, image_positions=4, max_tokens=64, workers=1,
                   n_caption=20, n_instruct=10, n_instruct_text=5, n_val=5, text_mb=0.02, n_mc=5)
    result = run_train([f'--text_data={world}/text', f'--instruct_data={world}/captions', '--stage=finetune',
                        f'--init_from={tmp_path}/none.pt', f'--out_dir={tmp_path}/run'], check=False)
    one_line_error(result, 'instruct_data', 'captions')


def test_a_text_split_shorter_than_one_row_is_one_line(text_data, tmp_path):
    with open(os.path.join(text_data, 'manifest.json')) as f:
        val_tokens = json.load(f)['num_tokens']['val']
    block = val_tokens + 10  # longer than the val split, shorter than the train split
    out = str(tmp_path / 'run')
    result = run_train(NANO + [f'--text_data={text_data}', f'--out_dir={out}', '--max_iters=2',
                               f'--block_size={block}'], check=False)
    one_line_error(result, text_data, 'no val shard', f'block_size + 1 = {block + 1}')
