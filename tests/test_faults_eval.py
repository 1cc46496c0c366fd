"""eval.py and sample.py under faults and bad input, as a careless or unlucky user meets them: a checkpoint
that loads but does not fit its model, an evaluation of other items run where a full one lies, runs scored
on different items compared, a generated id the tokenizer's decoder did not know. Each ends in one line
naming the file, or keeps what was there."""
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict

import numpy as np
import pytest
import torch
from PIL import Image

import eval as ev
from conftest import one_line_error
import sample
from model import LM, VLM, lm_config, vlm_args
from tokenizer import TOKENIZERS, decode, get_tokenizer
from vision import SiglipConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VISION = SiglipConfig(image_size=12, patch_size=4, width=24, depth=3, heads=2, mlp_dim=48)  # 9 patches
COLORS = ['red', 'green', 'blue', 'yellow']


def run(script, *args):
    return subprocess.run([sys.executable, script] + list(args), cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))


def ok(result):
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def read(path):
    with open(path, 'rb') as f:
        return f.read()


def save_vlm(path, tokenizer='bytes', seed=0, vocab_size=320, edit=None):
    """A real tiny VLM checkpoint, as train.py writes one; `edit` may spoil the dict before it is saved."""
    ids = TOKENIZERS[tokenizer]
    torch.manual_seed(seed)
    model = VLM(lm_config('nano', block_size=128, vocab_size=vocab_size), VISION, image_id=ids['image_id'])
    if edit is not None:
        edit(model)
    checkpoint = dict(model=model.state_dict(), model_args=vlm_args(model.lm.config, VISION, 'mlp2', -2,
                                                                     ids['image_id'], True),
                      tokenizer=tokenizer, config=dict(seed=seed), step=10, lineage={})
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(checkpoint, path)
    return checkpoint


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """An open-ended VQA folder of 8 questions and a multiple-choice file of 6 items."""
    root = tmp_path_factory.mktemp('data')
    rng = np.random.default_rng(0)
    os.makedirs(root / 'vqa' / 'images')
    questions, annotations = [], []
    for i in range(8):
        color = COLORS[i % 4]
        image = np.clip(rng.integers(-20, 21, (12, 12, 3)) + 100 + 30 * (i % 4), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(root / 'vqa' / 'images' / f'{i:012d}.png')
        questions.append(dict(question_id=i, image_id=i, question='what colour is this?'))
        annotations.append(dict(question_id=i, image_id=i, answer_type='other',
                                answers=[dict(answer=color, answer_id=k) for k in range(10)]))
    (root / 'vqa' / 'questions.json').write_text(json.dumps({'questions': questions}))
    (root / 'vqa' / 'annotations.json').write_text(json.dumps({'annotations': annotations}))
    items = [dict(id=f'm{i}', query=f'Item {i} is', choices=['one', 'two', 'three'], gold=i % 3)
             for i in range(6)]
    (root / 'mc.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in items))
    return root


def tasks(data):
    return f"--tasks=colors={data / 'vqa'},facts={data / 'mc.jsonl'}"


# -----------------------------------------------------------------------------
# item 4: a checkpoint that loads but does not fit its model is one line naming the file and the key

def drop(key):
    return lambda c: c.pop(key)


def reshape(c):
    name = 'lm.tok_embeddings.weight'
    c['model'][name] = c['model'][name][:, :-1].clone()


def drop_weight(c):
    c['model'].pop('projector.0.weight')


def add_weight(c):
    c['model']['lm.extra.weight'] = torch.zeros(3, 4)


def unknown_tokenizer(c):
    c['tokenizer'] = 'klingon'


def bad_model_args(c):
    c['model_args']['lm']['n_layers'] = c['model_args']['lm'].pop('n_layer')


FAULTS = {
    'no model_args': (drop('model_args'), ['model_args']),
    'no weights': (drop('model'), ["'model'"]),
    'a tensor of another shape': (reshape, ['lm.tok_embeddings.weight', '(320, 63)', '(320, 64)']),
    'a missing weight': (drop_weight, ['projector.0.weight', 'missing', '(64, 24)']),
    'an unexpected weight': (add_weight, ['lm.extra.weight', 'unexpected', '(3, 4)']),
    'an unknown tokenizer': (unknown_tokenizer, ['klingon']),
    'model_args of no model': (bad_model_args, ['model_args', 'n_layers']),
}


@pytest.mark.parametrize('script', ['eval.py', 'sample.py'])
@pytest.mark.parametrize('fault', list(FAULTS))
def test_a_checkpoint_that_does_not_fit_its_model_is_one_line(script, fault, data, tmp_path):
    spoil, words = FAULTS[fault]
    path = str(tmp_path / 'run' / 'ckpt.pt')
    save_vlm(path)
    checkpoint = torch.load(path, weights_only=True)
    spoil(checkpoint)
    torch.save(checkpoint, path)
    if script == 'eval.py':
        result = run('eval.py', f'--ckpt={path}', tasks(data), '--device=cpu')
    else:
        result = run('sample.py', f'--ckpt={path}', '--prompt=hi', '--num_samples=1', '--max_new_tokens=2',
                     '--device=cpu')
    one_line_error(result, path, *words)
    assert not os.path.exists(tmp_path / 'run' / 'results.json')


def test_a_file_that_is_no_checkpoint_dict_is_one_line(tmp_path):
    path = str(tmp_path / 'ckpt.pt')
    torch.save([torch.zeros(2)], path)
    one_line_error(run('sample.py', f'--ckpt={path}', '--device=cpu'), path, 'list')


# -----------------------------------------------------------------------------
# item 7: an evaluation of other items never replaces the one before it; --compare refuses to mix them

def results_of(folder, name='results.json'):
    return json.loads(read(os.path.join(folder, name)))


def test_a_limited_evaluation_keeps_the_full_one(data, tmp_path):
    run_dir = tmp_path / 'frozen_s0'
    ckpt = str(run_dir / 'ckpt.pt')
    save_vlm(ckpt)
    ok(run('eval.py', f'--ckpt={ckpt}', tasks(data), '--device=cpu'))
    full = read(run_dir / 'results.json')
    full_predictions = read(run_dir / 'predictions_colors.json')
    limited = ok(run('eval.py', f'--ckpt={ckpt}', tasks(data), '--limit=3', '--device=cpu'))
    name = 'results_colors+facts_limit3_seed0.json'
    assert read(run_dir / 'results.json') == full  # kept, byte for byte
    assert read(run_dir / 'predictions_colors.json') == full_predictions
    measured = json.loads(full)['tasks']['colors']['measured']
    assert measured['items'] == 8 and measured['limit'] == 0 and len(measured['items_sha256']) == 64
    files = [str(data / 'vqa' / n) for n in ('questions.json', 'annotations.json', 'images')]
    assert measured['files'] == files
    assert json.loads(full)['tasks']['facts']['measured']['files'] == [str(data / 'mc.jsonl')]
    assert 'results.json' in limited.stdout and name in limited.stdout and '--overwrite' in limited.stdout
    other = results_of(run_dir, name)
    assert other['tasks']['colors']['measured']['items'] == 3 and other['tasks']['facts']['n'] == 3
    predictions = str(run_dir / 'predictions_colors_colors+facts_limit3_seed0.json')
    assert other['tasks']['colors']['predictions'] == predictions
    assert len(json.loads(read(other['tasks']['colors']['predictions']))) == 3

    # the same measurement again replaces its own file; the full one again replaces results.json
    again = ok(run('eval.py', f'--ckpt={ckpt}', tasks(data), '--limit=3', '--device=cpu'))
    assert again.stdout.splitlines()[-1] == f"wrote {run_dir / name}"
    ok(run('eval.py', f'--ckpt={ckpt}', tasks(data), '--device=cpu'))
    assert read(run_dir / 'results.json') == full
    # a subset of the tasks is another measurement too
    ok(run('eval.py', f'--ckpt={ckpt}', f"--tasks=colors={data / 'vqa'}", '--device=cpu'))
    assert read(run_dir / 'results.json') == full and os.path.exists(run_dir / 'results_colors_all.json')
    # asked for, it replaces results.json
    ok(run('eval.py', f'--ckpt={ckpt}', tasks(data), '--limit=3', '--overwrite', '--device=cpu'))
    assert results_of(run_dir)['tasks']['colors']['measured']['items'] == 3


def test_other_items_under_both_names_are_refused_before_the_model_runs(data, tmp_path):
    run_dir, own = tmp_path / 'run', tmp_path / 'data'
    shutil.copytree(data, own)
    ckpt = str(run_dir / 'ckpt.pt')
    save_vlm(ckpt)
    ok(run('eval.py', f'--ckpt={ckpt}', tasks(own), '--device=cpu'))
    ok(run('eval.py', f'--ckpt={ckpt}', tasks(own), '--limit=3', '--device=cpu'))
    before = {n: read(run_dir / n) for n in os.listdir(run_dir)}
    # the data changed under the same names: the same settings now measure other items
    mc = (own / 'mc.jsonl').read_text().replace('Item', 'Thing')
    (own / 'mc.jsonl').write_text(mc)
    line = one_line_error(run('eval.py', f'--ckpt={ckpt}', tasks(own), '--limit=3', '--device=cpu'),
                          str(run_dir / 'results.json'), 'results_colors+facts_limit3_seed0.json', 'facts',
                          '--overwrite', '--out')
    assert 'Traceback' not in line
    assert {n: read(run_dir / n) for n in os.listdir(run_dir)} == before
    # --out names the file: a file there of another measurement is refused as well
    one_line_error(run('eval.py', f'--ckpt={ckpt}', tasks(own), '--device=cpu',
                       f"--out={run_dir / 'results.json'}"), str(run_dir / 'results.json'), '--overwrite')


def test_compare_refuses_runs_scored_on_different_items(data, tmp_path):
    runs = {}
    for name, seed, limit in (('frozen_s0', 0, 0), ('frozen_s1', 1, 0), ('frozen_s2', 2, 3)):
        runs[name] = tmp_path / name
        save_vlm(str(runs[name] / 'ckpt.pt'), seed=seed)
        ok(run('eval.py', f"--ckpt={runs[name] / 'ckpt.pt'}", tasks(data), f'--limit={limit}',
               '--device=cpu'))
    table = ok(run('eval.py', f"--compare={runs['frozen_s0']},{runs['frozen_s1']}"))
    assert '| frozen | 2 (0,1) |' in table.stdout
    line = one_line_error(run('eval.py', f"--compare={tmp_path / 'frozen_s*'}"),
                          str(runs['frozen_s0'] / 'results.json'), str(runs['frozen_s2'] / 'results.json'),
                          'colors', '8 items', '3 items')
    assert 'different items' in line
    # results files of an older eval.py, without their measurement: told apart by limit and count
    for name in runs:
        results = results_of(runs[name])
        for task in results['tasks'].values():
            task.pop('measured')
        (runs[name] / 'results.json').write_text(json.dumps(results))
    ok(run('eval.py', f"--compare={runs['frozen_s0']},{runs['frozen_s1']}"))
    one_line_error(run('eval.py', f"--compare={tmp_path / 'frozen_s*'}"), 'colors', 'limit 3')


def test_measured_as_tells_whether_results_measured_what_a_command_line_would(data, tmp_path):
    run_dir = tmp_path / 'run'
    ckpt = str(run_dir / 'ckpt.pt')
    save_vlm(ckpt)
    ok(run('eval.py', f'--ckpt={ckpt}', tasks(data), '--device=cpu'))
    ok(run('eval.py', f'--ckpt={ckpt}', tasks(data), '--limit=3', '--device=cpu'))
    full = ev.load_results(str(run_dir))
    limited = results_of(run_dir, 'results_colors+facts_limit3_seed0.json')
    argv = [f'--ckpt={ckpt}', tasks(data)]
    assert ev.measured_as(full, argv) and ev.measured_as(limited, argv + ['--limit=3'])
    assert not ev.measured_as(limited, argv) and not ev.measured_as(full, argv + ['--limit=3'])
    assert ev.measured_as(full, argv + ['--limit=100', '--seed=5'])  # a limit past the items takes them all
    assert not ev.measured_as(full, [f'--ckpt={ckpt}', f"--tasks=colors={data / 'vqa'}"])
    missing = f"--tasks=colors={data / 'vqa'},facts={tmp_path / 'x.jsonl'}"
    assert not ev.measured_as(full, argv[:1] + [missing])
    for task in full['tasks'].values():  # an older results.json: its tasks, limit and subset seed
        task.pop('measured')
    assert ev.measured_as(full, argv) and not ev.measured_as(full, argv + ['--limit=3'])


# -----------------------------------------------------------------------------
# a generated id whose byte a one-byte word piece took over ('A' in shapes) still decodes

def test_every_id_of_the_shapes_tokenizer_decodes():
    enc = get_tokenizer('shapes')
    word_a = enc.encode_ordinary('A')
    assert word_a != [65]  # the word piece 'A' took byte 65's rank: encoding is unchanged by the fix
    padded = TOKENIZERS['shapes']['vocab_size'] - 1  # a padded row of the vocabulary: no text
    assert decode(enc, [65, 73, 115] + word_a + [padded]) == 'AIsA'
    ids = enc.encode_ordinary('What colour is the Ab square? I see 3 stars.')
    assert decode(enc, ids) == enc.decode(ids)


def always(token_id):
    """An edit making an LM of identity blocks predict `token_id` after every token: every embedding is one
    vector v, and only the head's row token_id is v."""
    def edit(model):
        lm = model.lm if isinstance(model, VLM) else model
        with torch.no_grad():
            for name, p in lm.named_parameters():
                if name.startswith('layers.') and p.dim() == 2:
                    p.zero_()
            v = torch.tensor([1.0, -1.0]).repeat(lm.config.n_embd // 2)
            lm.tok_embeddings.weight.copy_(v)
            lm.output.weight.zero_()
            lm.output.weight[token_id] = v
    return edit


def test_sample_and_eval_decode_a_byte_whose_rank_a_word_took(data, tmp_path):
    vocab = TOKENIZERS['shapes']['vocab_size']
    ckpt = str(tmp_path / 'vlm' / 'ckpt.pt')
    save_vlm(ckpt, tokenizer='shapes', vocab_size=vocab, edit=always(65))
    result = ok(run('eval.py', f'--ckpt={ckpt}', f"--tasks=colors={data / 'vqa'}", '--max_new_tokens=3',
                    '--device=cpu'))
    assert 'Traceback' not in result.stderr
    answers = json.loads(read(tmp_path / 'vlm' / 'predictions_colors.json'))
    assert {a['answer'] for a in answers} == {'AAA'}
    torch.manual_seed(0)
    lm = LM(lm_config('nano', vocab_size=vocab))
    always(65)(lm)
    torch.save(dict(model=lm.state_dict(), model_args=asdict(lm.config),
                    tokenizer='shapes', step=1), tmp_path / 'lm.pt')
    result = ok(run('sample.py', f"--ckpt={tmp_path / 'lm.pt'}", '--prompt=hi', '--num_samples=1',
                    '--max_new_tokens=3', '--temperature=0', '--device=cpu'))
    assert result.stdout.splitlines()[0] == 'hiAAA'
