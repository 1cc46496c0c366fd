import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NANO = ['--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32', '--batch_size=4', '--eval_iters=2',
        '--warmup_iters=2', '--learning_rate=1e-2', '--min_lr=1e-3']


def run_train(args, torchrun=False, check=True, **kw):
    cmd = ([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2'] if torchrun
           else [sys.executable]) + ['train.py'] + args
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, **kw)
    if check and result.returncode != 0:
        raise AssertionError(f"train.py failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def losses(out_dir):
    with open(os.path.join(out_dir, 'log.jsonl')) as f:
        records = [json.loads(line) for line in f]
    return {r['step']: r['loss'] for r in records if 'loss' in r}


def test_text_stage_learns_and_writes_milestones(text_data, tmp_path):
    out = str(tmp_path / 'run')
    run_train(NANO + [f'--text_data={text_data}', f'--out_dir={out}', '--max_iters=30', '--eval_interval=10',
                      '--log_interval=1'])
    names = set(os.listdir(out))
    assert {'ckpt.pt', 'ckpt_000.pt', 'ckpt_020.pt', 'ckpt_080.pt', 'ckpt_100.pt', 'log.jsonl'} <= names
    ckpt = torch.load(os.path.join(out, 'ckpt.pt'), weights_only=True)
    milestone = torch.load(os.path.join(out, 'ckpt_080.pt'), weights_only=True)
    assert ckpt['step'] == 30 and milestone['step'] == 24 and 'optimizer' not in milestone and 'optimizer' in ckpt
    for key in ('model', 'model_args', 'tokenizer', 'config', 'rng', 'lineage', 'step', 'optimizer'):
        assert key in ckpt
    assert ckpt['tokenizer'] == 'bytes' and ckpt['config']['max_iters'] == 30
    loss = losses(out)
    assert loss[30] < loss[1] - 1.0  # the byte-level corpus is easy: a clear drop


def test_resume_gives_identical_losses(text_data, tmp_path):
    common = NANO + [f'--text_data={text_data}', '--max_iters=12', '--eval_interval=6', '--log_interval=1']
    straight, split = str(tmp_path / 'straight'), str(tmp_path / 'split')
    run_train(common + [f'--out_dir={straight}'])
    # first half: the run stops at step 6 (as if interrupted) with ckpt.pt written there
    run_train(common + [f'--out_dir={split}', '--stop_at_step=6'])
    assert max(losses(split)) == 6
    run_train(common + [f'--out_dir={split}', '--init_from=resume'])
    assert losses(split) == losses(straight)


def test_ddp_matches_single_process(text_data, tmp_path):
    common = NANO + [f'--text_data={text_data}', '--max_iters=6', '--eval_interval=100', '--log_interval=1',
                     '--gradient_accumulation_steps=2']
    single, ddp = str(tmp_path / 'single'), str(tmp_path / 'ddp')
    run_train(common + [f'--out_dir={single}'])
    run_train(common + [f'--out_dir={ddp}'], torchrun=True)
    a, b = losses(single), losses(ddp)
    assert a.keys() == b.keys()
    for step in a:
        assert abs(a[step] - b[step]) < 1e-5
    with open(os.path.join(ddp, 'log.jsonl')) as f:
        fingerprints = [json.loads(l) for l in f if 'replica_fingerprints' in l][0]['replica_fingerprints']
    assert len(fingerprints) == 2 and fingerprints[0] == fingerprints[1]
    wa = torch.load(os.path.join(single, 'ckpt.pt'), weights_only=True)['model']
    wb = torch.load(os.path.join(ddp, 'ckpt.pt'), weights_only=True)['model']
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=1e-4)


def test_sigterm_saves_and_exits_zero(text_data, tmp_path):
    out = str(tmp_path / 'run')
    cmd = [sys.executable, 'train.py'] + NANO + [f'--text_data={text_data}', f'--out_dir={out}', '--max_iters=100000',
                                                  '--eval_interval=100000', '--log_interval=1']
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = os.path.join(out, 'log.jsonl')
    deadline = time.time() + 60
    while time.time() < deadline and not (os.path.exists(log) and len(losses(out)) >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    ckpt = torch.load(os.path.join(out, 'ckpt.pt'), weights_only=True)
    assert ckpt['step'] >= 3 and 'optimizer' in ckpt
    assert f"saved {out}/ckpt.pt" in stdout


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(text_data, tmp_path):
    out = str(tmp_path / 'run')
    args = NANO + [f'--text_data={text_data}', f'--out_dir={out}', '--eval_interval=2', '--log_interval=1']
    run_train(args + ['--max_iters=2'])
    good = open(os.path.join(out, 'ckpt.pt'), 'rb').read()
    result = run_train(args + ['--max_iters=50', '--init_from=resume', '--learning_rate=1e20', '--warmup_iters=0',
                               '--grad_clip=0.0'], check=False)
    assert result.returncode != 0
    assert 'non-finite loss' in result.stderr and 'Traceback' not in result.stderr
    assert open(os.path.join(out, 'ckpt.pt'), 'rb').read() == good


def test_interrupted_checkpoint_write_keeps_previous(tmp_path, monkeypatch):
    import train
    path = str(tmp_path / 'ckpt.pt')
    train.save_checkpoint(path, {'step': 1})

    def dying_save(obj, f):
        f.write(b'partial')
        raise KeyboardInterrupt  # killed mid-write

    monkeypatch.setattr(torch, 'save', dying_save)
    with pytest.raises(KeyboardInterrupt):
        train.save_checkpoint(path, {'step': 2})
    assert torch.load(path, weights_only=True)['step'] == 1


def test_bad_data_path_is_clear(tmp_path):
    result = run_train([f'--text_data={tmp_path}/missing', f'--out_dir={tmp_path}/o'], check=False)
    assert result.returncode != 0 and 'no manifest.json' in result.stderr


def wandb_history(run_file):
    """The history rows of an offline W&B run file: a ':W&B' header, then LevelDB-log records (32 KiB
    blocks; each chunk has a 4-byte checksum, a 2-byte length and a type: 1 full, 2 first, 3 middle,
    4 last) holding protobuf Records."""
    from wandb.proto import wandb_internal_pb2
    data = open(run_file, 'rb').read()
    assert data[:4] == b':W&B'
    pos, block, pending, rows = 7, 32768, b'', []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], 'little'), data[pos + 6]
        if length == 0 and kind == 0:
            break
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b''
            if record.WhichOneof('record_type') == 'history':
                rows.append({item.key or '/'.join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return rows


def test_wandb_log_sends_the_log_records(text_data, tmp_path):
    pytest.importorskip('wandb')
    out = str(tmp_path / 'run')
    env = dict(os.environ, WANDB_MODE='offline', WANDB_SILENT='true')
    run_train(NANO + [f'--text_data={text_data}', f'--out_dir={out}', '--max_iters=6', '--eval_interval=3',
                      '--log_interval=2', '--wandb_log', '--wandb_project=test', '--wandb_run_name=tiny'],
              env=env)
    run_files = glob.glob(os.path.join(out, 'wandb', 'offline-run-*', 'run-*.wandb'))
    assert len(run_files) == 1
    sent = {}
    for row in wandb_history(run_files[0]):
        sent.setdefault(row['_step'], {}).update(row)
    with open(os.path.join(out, 'log.jsonl')) as f:
        records = [json.loads(line) for line in f]
    assert sorted(sent) == sorted({r['step'] for r in records}) == [0, 2, 3, 4, 6]
    for record in records:
        for key, value in record.items():
            if key != 'step' and value is not None:
                assert sent[record['step']][key] == pytest.approx(value), (record['step'], key)
