"""The mixed and finetune stages of train.py on a tiny shapes world: the ratio-controlled loader
(fractions, determinism, resumption, rank sharding), ratio 0 = the text stage, resumption, DDP and
FSDP2 against one process, the frozen encoder, faults, bad input, and finetuning with lineage."""
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import train
from prepare_data import prepare_images, prepare_shapes
from shards import ImageShards, load_text_split
from tokenizer import TOKENIZERS, cache_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCK = 128  # holds every sample: 16 image positions + a caption / conversation, at most 129 tokens
SIZE, PATCH = 24, 6  # 4 x 4 = 16 image positions
EOT, IMAGE = TOKENIZERS['bytes']['eot_id'], TOKENIZERS['bytes']['image_id']
NANO = ['--n_layer=2', '--n_head=2', '--n_embd=32', f'--block_size={BLOCK}', '--eval_iters=1', '--log_interval=1',
        '--min_lr=1e-3']
# the text run: 10 steps, warmup 2, peak 1e-2, so ckpt_080.pt holds step 8
TEXT_RUN = dict(max_iters=10, warmup_iters=2, learning_rate=1e-2, min_lr=1e-3)
# mixed runs: a global batch of 4 rows in 2 micro-batches (one per process under torchrun)
MIXED = ['--stage=mixed', '--batch_size=2', '--gradient_accumulation_steps=2', '--max_iters=4', '--eval_interval=2',
         '--image_ratio=0.2']


# -----------------------------------------------------------------------------
# fixtures: the world, a tiny tower, a text checkpoint

@pytest.fixture(scope='module')
def world(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('shapes'))
    prepare_shapes(out, seed=0, tokenizer='bytes', image_size=SIZE, image_positions=(SIZE // PATCH) ** 2, max_tokens=BLOCK + 1,
                   workers=1, n_caption=300, n_instruct=100, n_instruct_text=30, n_val=20, text_mb=0.3, n_mc=20)
    return {k: os.path.join(out, k) for k in ('text', 'captions', 'instruct', 'raw')}


def save_tower(out_dir, image_size=SIZE, seed=0):
    import tower
    import vision
    torch.manual_seed(seed)
    model = tower.SiglipModel(vision.SiglipConfig(image_size, PATCH, 32, 2, 2, 64),
                              tower.TextConfig(width=32, depth=1, heads=2, mlp_dim=64))
    vision.save_siglip(model, out_dir)
    return out_dir


@pytest.fixture(scope='module')
def tower(tmp_path_factory):
    return save_tower(str(tmp_path_factory.mktemp('tower')))


def run_train(args, torchrun=False, check=True, **kw):
    cmd = ([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2'] if torchrun
           else [sys.executable]) + ['train.py'] + [str(a) for a in args]
    env = dict(os.environ, OMP_NUM_THREADS='1')
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, **kw)
    if check and result.returncode != 0:
        raise AssertionError(f"train.py failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def records(out_dir):
    with open(os.path.join(out_dir, 'log.jsonl')) as f:
        return [json.loads(line) for line in f]


def losses(out_dir):
    return {r['step']: r['loss'] for r in records(out_dir) if 'loss' in r}


def load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


@pytest.fixture(scope='module')
def text_ckpt(world, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('text'))
    run_train(NANO + [f'--text_data={world["text"]}', f'--out_dir={out}', '--batch_size=4', '--eval_interval=100']
              + [f'--{k}={v}' for k, v in TEXT_RUN.items()])
    return os.path.join(out, 'ckpt_080.pt')


def data_args(world, tower, text_ckpt):
    return [f'--text_data={world["text"]}', f'--caption_data={world["captions"]}', f'--vision_init={tower}',
            f'--init_from={text_ckpt}']


# the mixed-stage runs that several tests share: name -> (extra args, under torchrun)
RUNS = {
    'frozen': (['--freeze_vision=True'], False),
    'unfrozen': (['--freeze_vision=False'], False),
    'frozen_ddp': (['--freeze_vision=True'], True),
    'unfrozen_ddp': (['--freeze_vision=False'], True),
    'frozen_fsdp': (['--freeze_vision=True', '--fsdp=True'], True),
    'unfrozen_fsdp': (['--freeze_vision=False', '--fsdp=True'], True),
}
_runs = {}


@pytest.fixture(scope='module')
def mixed_run(world, tower, text_ckpt, tmp_path_factory):
    """mixed_run(name) -> the out_dir of that run of RUNS, made once per module (stdout in stdout.txt)."""
    def get(name):
        if name not in _runs:
            extra, torchrun = RUNS[name]
            out = str(tmp_path_factory.mktemp(name))
            result = run_train(NANO + MIXED + data_args(world, tower, text_ckpt) + extra + [f'--out_dir={out}'],
                               torchrun=torchrun)
            with open(os.path.join(out, 'stdout.txt'), 'w') as f:
                f.write(result.stdout)
            _runs[name] = out
        return _runs[name]
    yield get
    _runs.clear()


# -----------------------------------------------------------------------------
# the ratio-controlled loader, without a model

@pytest.fixture(scope='module')
def loader_data(world):
    manifest, text = load_text_split(world['text'], 'train')
    return manifest, text, ImageShards(world['captions'], 'train')


def mixed_loader(loader_data, ratio, fill, seed=1337):
    manifest, text, captions = loader_data
    return train.MixedLoader(text, captions, BLOCK, manifest['eot_id'], seed, ratio, fill)


def same_rows(a, b):
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        for key in ('input_ids', 'targets', 'doc_ids', 'segment'):
            np.testing.assert_array_equal(ra[key], rb[key])
        assert (ra['image'] is None) == (rb['image'] is None)
        if ra['image'] is not None:
            np.testing.assert_array_equal(ra['image'], rb['image'])


ROWS = 8  # rows per step


@pytest.mark.parametrize('fill', ['text', 'pad'])
@pytest.mark.parametrize('ratio', [0.1, 0.5])
def test_image_fraction_within_one_percent_every_100_batches(loader_data, ratio, fill):
    loader = mixed_loader(loader_data, ratio, fill)
    counts, rows_at_250 = [], None
    for step in range(300):
        rows = loader.rows(step, ROWS)
        segment = np.stack([r['segment'] for r in rows])  # (ROWS, BLOCK)
        images = sum(r['image'] is not None for r in rows)
        # every image row holds exactly its 16 image positions inside the sample segment
        assert (np.stack([r['input_ids'] for r in rows]) == IMAGE).sum() == 16 * images
        counts.append(((segment == train.SEGMENT_SAMPLE).sum(), (segment != train.SEGMENT_PAD).sum()))
        if fill == 'text':
            assert (segment != train.SEGMENT_PAD).all()  # leftover positions hold text
        if step == 250:
            rows_at_250 = rows
    counts = np.array(counts)
    for start in (0, 100, 200):  # the three disjoint windows
        image, non_pad = counts[start:start + 100].sum(0)
        assert abs(image / non_pad - ratio) <= 0.01
    for start in range(0, 201):  # and every other window of 100 batches
        image, non_pad = counts[start:start + 100].sum(0)
        assert abs(image / non_pad - ratio) <= 0.01, start
    # a fresh loader asked for step 250 directly (a resumed run) gives the rows of the one that walked there
    same_rows(mixed_loader(loader_data, ratio, fill).rows(250, ROWS), rows_at_250)


def test_loader_is_deterministic_in_seed_and_step(loader_data):
    a, b = mixed_loader(loader_data, 0.3, 'text'), mixed_loader(loader_data, 0.3, 'text')
    for step in (0, 1, 7, 99, 100, 101):
        same_rows(a.rows(step, ROWS), b.rows(step, ROWS))
    other_seed = mixed_loader(loader_data, 0.3, 'text', seed=7).rows(3, ROWS)
    assert any(not np.array_equal(x['input_ids'], y['input_ids']) for x, y in zip(a.rows(3, ROWS), other_seed))


def row_key(batch, i):
    image = batch['images'][i].numpy().tobytes() if bool(batch['has_image'][i]) else b''
    return batch['input_ids'][i].numpy().tobytes() + image


def test_ranks_take_disjoint_slices_of_the_global_batch(loader_data):
    loader = mixed_loader(loader_data, 0.5, 'pad')
    image_rows = 0
    for step in range(40):
        ranks = [train.rank_batches(loader, step, rank, 2, 2, 2) for rank in range(2)]
        single = train.rank_batches(mixed_loader(loader_data, 0.5, 'pad'), step, 0, 1, 4, 2)
        keys = [[row_key(b, i) for b in batches for i in range(len(b['input_ids']))] for batches in ranks]
        assert len(keys[0]) == len(keys[1]) == 4
        assert not set(keys[0]) & set(keys[1])  # different samples and text windows on the two ranks
        # together they are exactly the rows one process takes, in order
        assert keys[0] + keys[1] == [row_key(b, i) for b in single for i in range(len(b['input_ids']))]
        image_rows += sum(int(b['has_image'].sum()) for batches in ranks for b in batches)
    assert image_rows > 0


@pytest.mark.parametrize('fill', ['text', 'pad'])
def test_ratio_zero_gives_the_text_stage_rows(loader_data, fill):
    manifest, text, _ = loader_data
    mixed = mixed_loader(loader_data, 0.0, fill)
    plain = train.TextLoader(text, BLOCK, manifest['eot_id'], 1337)
    for step in (0, 1, 2, 50, 150):
        rows = mixed.rows(step, ROWS)
        same_rows(rows, plain.rows(step, ROWS))
        assert all(r['image'] is None for r in rows) and not mixed.need_doc_ids(rows)


# -----------------------------------------------------------------------------
# the mixed stage, run

def test_ratio_zero_trains_exactly_like_the_text_stage(world, tower, text_ckpt, tmp_path):
    """With no image rows the VLM's LM sees the text stage's rows through the text path, and the frozen
    encoder and untouched projector add exact zeros, so a text run from the same checkpoint with the
    same schedule (the milestone's lr as its peak, no warmup) gives bit-identical losses."""
    common = NANO + ['--batch_size=4', '--max_iters=4', '--eval_interval=4']
    mixed, text = str(tmp_path / 'mixed'), str(tmp_path / 'text')
    run_train(common + data_args(world, tower, text_ckpt) + ['--stage=mixed', '--image_ratio=0', f'--out_dir={mixed}'])
    # the text schedule's value at step 8 of 10 (warmup 2, cosine from 1e-2 to 1e-3)
    c = TEXT_RUN
    progress = (8 - c['warmup_iters']) / (c['max_iters'] - c['warmup_iters'])
    milestone_lr = c['min_lr'] + 0.5 * (1 + math.cos(math.pi * progress)) * (c['learning_rate'] - c['min_lr'])
    log = [r for r in records(mixed) if 'loss' in r]
    assert log[0]['lr'] == pytest.approx(milestone_lr, rel=1e-12)  # continued, no warmup
    assert all(r['image_fraction'] == 0 for r in log)
    run_train(common + ['--stage=text', f'--text_data={world["text"]}', f'--init_from={text_ckpt}', '--warmup_iters=0',
                        f'--learning_rate={log[0]["lr"]!r}', f'--out_dir={text}'])
    a, b = records(mixed), records(text)
    assert losses(mixed) == losses(text) and len(losses(mixed)) == 4
    assert [r['grad_norm'] for r in a if 'loss' in r] == [r['grad_norm'] for r in b if 'loss' in r]
    assert [r['val_text_loss'] for r in a if 'val_text_loss' in r] == [r['val_text_loss'] for r in b if 'val_text_loss' in r]


def test_resume_mid_mixed_stage_ignores_a_partial_checkpoint(mixed_run, world, tower, text_ckpt, tmp_path):
    straight = mixed_run('frozen')
    split = str(tmp_path / 'split')
    common = NANO + MIXED + data_args(world, tower, text_ckpt) + [f'--out_dir={split}']
    run_train(common + ['--stop_at_step=2'])
    assert max(losses(split)) == 2 and load(os.path.join(split, 'ckpt.pt'))['step'] == 2
    # a process killed while writing the next checkpoint leaves a partial ckpt.pt.tmp beside the good one
    good = open(os.path.join(split, 'ckpt.pt'), 'rb').read()
    with open(os.path.join(split, 'ckpt.pt.tmp'), 'wb') as f:
        f.write(good[:len(good) // 2])
    run_train(common + ['--init_from=resume'])
    assert losses(split) == losses(straight)
    assert load(os.path.join(split, 'ckpt.pt'))['step'] == 4 and not os.path.exists(os.path.join(split, 'ckpt.pt.tmp'))


def micro_batches_with_and_without_images(world):
    """The micro-batches the 2-process runs see: some must hold an image and some none."""
    manifest, text = load_text_split(world['text'], 'train')
    loader = train.MixedLoader(text, ImageShards(world['captions'], 'train'), BLOCK, manifest['eot_id'], 1337,
                               0.2, 'text')
    flags = [bool(b['has_image'].any()) for step in range(4) for rank in range(2)
             for b in train.rank_batches(loader, step, rank, 2, 1, 2)]
    return any(flags), not all(flags)


@pytest.mark.parametrize('fsdp', [False, True], ids=['ddp', 'fsdp'])
@pytest.mark.parametrize('freeze', [True, False], ids=['frozen', 'unfrozen'])
def test_two_processes_match_one(mixed_run, world, freeze, fsdp):
    assert micro_batches_with_and_without_images(world) == (True, True)  # text-only micro-batches included
    name = 'frozen' if freeze else 'unfrozen'
    single, multi = mixed_run(name), mixed_run(f'{name}_{"fsdp" if fsdp else "ddp"}')
    a, b = losses(single), losses(multi)
    assert a.keys() == b.keys() == {1, 2, 3, 4}
    for step in a:
        assert abs(a[step] - b[step]) < 1e-5
    norms = [[r['grad_norm'] for r in records(d) if 'loss' in r] for d in (single, multi)]
    np.testing.assert_allclose(norms[0], norms[1], rtol=1e-5)
    wa, wb = load(os.path.join(single, 'ckpt.pt')), load(os.path.join(multi, 'ckpt.pt'))
    assert wa['model'].keys() == wb['model'].keys()
    for k in wa['model']:
        torch.testing.assert_close(wa['model'][k], wb['model'][k], atol=1e-5, rtol=1e-4)
    # the gathered optimizer state is keyed like the single process's: no state for frozen weights
    assert set(wa['optimizer']['state']) == set(wb['optimizer']['state'])
    with open(os.path.join(multi, 'stdout.txt')) as f:
        stdout = f.read()
    assert '2 process(es)' in stdout and 'warning' not in stdout  # e.g. no replicas found to differ
    if not fsdp:
        fingerprints = [r for r in records(multi) if 'replica_fingerprints' in r][0]['replica_fingerprints']
        assert len(fingerprints) == 2 and fingerprints[0] == fingerprints[1]


def tower_file(tower):
    from safetensors.torch import load_file
    return load_file(os.path.join(tower, 'model.safetensors'))


def test_frozen_encoder_stays_bit_identical_and_has_no_optimizer_state(mixed_run, tower):
    ckpt = load(os.path.join(mixed_run('frozen'), 'ckpt.pt'))
    original = tower_file(tower)
    vision = {k: v for k, v in ckpt['model'].items() if k.startswith('vision.')}
    assert vision  # the checkpoint is self-contained: it holds the encoder
    for k, v in vision.items():
        assert torch.equal(v, original['vision_model.' + k[len('vision.'):]]), k
    state = ckpt['optimizer']['state']
    assert not [k for k in state if k.startswith('vision.')]
    assert [k for k in state if k.startswith('projector.')] and [k for k in state if k.startswith('lm.')]
    assert ckpt['model_args']['freeze_vision'] is True


def test_unfrozen_encoder_is_trained(mixed_run, tower):
    ckpt = load(os.path.join(mixed_run('unfrozen'), 'ckpt.pt'))
    original = tower_file(tower)
    vision = {k: v for k, v in ckpt['model'].items() if k.startswith('vision.')}
    assert all(not torch.equal(v, original['vision_model.' + k[len('vision.'):]]) for k, v in vision.items()
               if v.dim() >= 2)
    state = ckpt['optimizer']['state']
    assert set(vision) <= set(state)
    # real gradients reached the encoder (not only weight decay): Adam's first moments are non-zero
    assert all(state[k]['exp_avg'].abs().sum() > 0 for k in vision)


def test_sigterm_in_mixed_stage_saves_and_exits_zero(world, tower, text_ckpt, tmp_path):
    out = str(tmp_path / 'run')
    cmd = ([sys.executable, 'train.py'] + NANO + data_args(world, tower, text_ckpt)
           + ['--stage=mixed', '--batch_size=2', '--image_ratio=0.5', '--max_iters=100000', '--eval_interval=100000',
              f'--out_dir={out}'])
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS='1'))
    deadline = time.time() + 60
    while time.time() < deadline and not (os.path.exists(os.path.join(out, 'log.jsonl')) and len(losses(out)) >= 2):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr[-2000:]
    ckpt = load(os.path.join(out, 'ckpt.pt'))
    assert ckpt['step'] >= 2 and ckpt['step'] == max(losses(out)) and 'optimizer' in ckpt
    assert 'vision' in ckpt['model_args'] and f"saved {out}/ckpt.pt" in stdout


# -----------------------------------------------------------------------------
# bad input: a clear error before anything trains

def assert_clear_error(result, out, *words):
    assert result.returncode != 0
    assert 'Traceback' not in result.stderr, result.stderr[-2000:]
    for word in words:
        assert word in result.stderr, result.stderr[-2000:]
    assert not os.path.exists(os.path.join(out, 'log.jsonl'))


def test_missing_shard_is_a_clear_error(world, tower, text_ckpt, tmp_path):
    captions = str(tmp_path / 'captions')
    shutil.copytree(world['captions'], captions)
    images = sorted(n for n in os.listdir(captions) if n.endswith('.images.npy'))[0]
    os.remove(os.path.join(captions, images))
    out = str(tmp_path / 'run')
    args = NANO + MIXED + data_args(world, tower, text_ckpt) + [f'--caption_data={captions}', f'--out_dir={out}']
    assert_clear_error(run_train(args, check=False), out, images, 'missing')
    args[-2] = f'--caption_data={tmp_path}/nowhere'
    assert_clear_error(run_train(args, check=False), out, 'nowhere', 'no manifest.json')


def test_tokenizer_differing_between_text_and_image_shards_is_a_clear_error(world, tower, text_ckpt, tmp_path):
    if not (os.environ.get('GPT2_TIKTOKEN') or os.path.isfile(os.path.join(cache_dir(), 'gpt2.tiktoken'))):
        pytest.skip("the GPT-2 ranks are not cached (fetching them needs the network)")
    captions = str(tmp_path / 'gpt2_captions')
    prepare_images('captions', [os.path.join(world['raw'], 'captions')], captions, tokenizer='gpt2', image_size=SIZE,
                   image_positions=(SIZE // PATCH) ** 2, max_tokens=BLOCK + 1, workers=1)
    out = str(tmp_path / 'run')
    args = NANO + MIXED + data_args(world, tower, text_ckpt) + [f'--caption_data={captions}', f'--out_dir={out}']
    assert_clear_error(run_train(args, check=False), out, captions, "tokenizer 'gpt2'", "'bytes'")


def test_image_size_differing_from_the_encoder_is_a_clear_error(world, text_ckpt, tmp_path):
    other = save_tower(str(tmp_path / 'tower30'), image_size=30)
    out = str(tmp_path / 'run')
    args = NANO + MIXED + data_args(world, other, text_ckpt) + [f'--out_dir={out}']
    assert_clear_error(run_train(args, check=False), out, world['captions'], f'{SIZE} px', '30 px')


# -----------------------------------------------------------------------------
# the finetune stage

def answer_targets(tokens):
    """The tokens the chat template scores, found independently of the loss mask: after each
    'Assistant:' everything up to and including the next <|endoftext|> (or the end of the sample)."""
    marker = [ord(c) for c in 'Assistant:']
    out, t = [], 0
    while t < len(tokens):
        if list(tokens[t:t + len(marker)]) == marker:
            t += len(marker)
            while t < len(tokens):
                out.append(int(tokens[t]))
                t += 1
                if out[-1] == EOT:
                    break
        else:
            t += 1
    return out


def test_instruct_rows_score_only_the_answers(world):
    samples = ImageShards(world['instruct'], 'train')
    loader = train.InstructLoader(samples, BLOCK, EOT, 1337, (SIZE, SIZE, 3))
    n = len(samples)
    seen, with_image, without_image = set(), 0, 0
    for step in range(n // 4):
        for j, row in enumerate(loader.rows(step, 4)):
            sample = samples[loader.index(step * 4 + j)]
            tokens = np.asarray(sample['tokens'][:BLOCK + 1])
            used = len(tokens) - 1
            np.testing.assert_array_equal(row['input_ids'][:used], tokens[:-1])
            assert (row['targets'][used:] == -100).all() and (row['segment'][used:] == train.SEGMENT_PAD).all()
            scored = row['targets'][row['targets'] != -100]
            assert scored.tolist() == answer_targets(tokens) and len(scored) > 0
            assert not np.isin(row['input_ids'][:used][row['targets'][:used] != -100], [IMAGE]).any()
            with_image += row['image'] is not None
            without_image += row['image'] is None
            seen.add(loader.index(step * 4 + j))
    assert len(seen) == 4 * (n // 4)  # an epoch visits each sample once
    assert with_image and without_image  # image conversations and text-only ones


def test_finetune_one_epoch_from_the_mixed_stage_with_lineage(mixed_run, world, text_ckpt, tmp_path):
    parent = os.path.join(mixed_run('frozen'), 'ckpt.pt')
    out = str(tmp_path / 'finetune')
    run_train(NANO + ['--stage=finetune', f'--text_data={world["text"]}', f'--instruct_data={world["instruct"]}',
                      f'--init_from={parent}', '--epochs=1', '--max_iters=0', '--batch_size=8', '--eval_interval=1000',
                      '--learning_rate=1e-3', '--warmup_iters=2', f'--out_dir={out}'])
    steps = math.ceil(len(ImageShards(world['instruct'], 'train')) / 8)
    log = [r for r in records(out) if 'loss' in r]
    assert [r['step'] for r in log] == list(range(1, steps + 1))
    assert all(r['text_loss'] is None and r['text_fraction'] == 0 for r in log)  # conversations only
    ckpt = load(os.path.join(out, 'ckpt.pt'))
    assert ckpt['step'] == steps and 'vision' in ckpt['model_args']
    # lineage: finetune <- mixed (ckpt.pt at step 4) <- text (ckpt_080.pt at step 8) <- scratch
    lineage = ckpt['lineage']
    assert lineage['config']['stage'] == 'finetune' and lineage['parent']['path'] == parent
    mixed = lineage['parent']
    assert mixed['step'] == 4 and mixed['lineage']['config']['stage'] == 'mixed'
    assert mixed['lineage']['start_fraction'] == pytest.approx(0.8)
    text = mixed['lineage']['parent']
    assert text['path'] == text_ckpt and text['step'] == 8
    assert text['lineage']['config']['stage'] == 'text' and text['lineage']['init_from'] == 'scratch'
    assert text['lineage']['parent'] is None


@pytest.mark.parametrize('resume_with', ['fsdp', 'ddp', 'single'])
def test_fsdp_checkpoint_resumes_under_fsdp_ddp_and_one_process(mixed_run, world, tower, text_ckpt, tmp_path, resume_with):
    """Checkpoints hold full state dicts: an FSDP2 run cut at step 2 continues identically whichever way it resumes."""
    straight = losses(mixed_run('unfrozen'))
    out = str(tmp_path / 'run')
    common = NANO + MIXED + data_args(world, tower, text_ckpt) + ['--freeze_vision=False', f'--out_dir={out}']
    run_train(common + ['--fsdp=True', '--stop_at_step=2'], torchrun=True)
    assert max(losses(out)) == 2
    resume = common[:-1] + [f'--out_dir={out}', '--init_from=resume']
    if resume_with == 'fsdp':
        run_train(resume + ['--fsdp=True'], torchrun=True)
    else:
        run_train(resume, torchrun=resume_with == 'ddp')
    resumed = losses(out)
    assert resumed.keys() == straight.keys()
    for step in straight:
        assert abs(resumed[step] - straight[step]) < 1e-5
