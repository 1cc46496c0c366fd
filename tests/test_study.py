import json
import math
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_fast_study_runs_end_to_end(tmp_path):
    out, data = tmp_path / 'out', tmp_path / 'data'
    result = subprocess.run([sys.executable, 'study.py', '--fast', f'--out={out}', f'--data={data}'],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    arms = ['frozen_mlp2', 'unfrozen_mlp2', 'frozen_mlp1', 'after_text_frozen_mlp2']
    for arm in arms:
        with open(out / f'{arm}_seed0' / 'results.json') as f:
            results = json.load(f)
        assert math.isfinite(results['vision_stable_score']) and math.isfinite(results['text_stable_score'])
        for task in ('shapes_vqa', 'shapes_mc'):
            assert math.isfinite(results['tasks'][task]['acc'])
    # the tower's text side read whole captions: a cut caption no longer describes its image
    sys.path.insert(0, ROOT)
    from shards import ImageShards
    captions = ImageShards(str(data / 'captions'), 'train')
    # minus the closing EOT
    longest = max(int(captions[i]['loss_mask'].sum()) - 1 for i in range(len(captions)))
    with open(out / 'tower' / 'config.json') as f:
        assert json.load(f)['text_config']['max_position_embeddings'] > longest
    report = (out / 'results.md').read_text()
    for arm in arms:
        assert arm in report
    assert 'Vision Stable' in report and 'python' in report and 'train.py config/tiny_mixed.py' in report
    assert 'Vision Stable over shapes_vqa; Text Stable over shapes_mc' in report  # what each score averaged
    # the per-type table ends with the world's two reference answerers, in the table's column order
    with open(data / 'raw' / 'world.json') as f:
        world = json.load(f)
    lines = report.splitlines()
    header = next(line for line in lines if line.startswith('| arm | '))
    types = [c.strip() for c in header.strip('|').split('|')[1:]]
    for key, prefix in (('blind_baseline', '| *blind'), ('unbound_baseline', '| *unbound')):
        row = next(line for line in lines if line.startswith(prefix))
        cells = [c.strip() for c in row.strip('|').split('|')[1:]]
        assert cells == [f"{100 * world[key]['per_type'][t]['accuracy']:.1f}" for t in types], (key, row)
    for png in ('scores.png', 'loss_text.png', 'loss_mixed.png', 'loss_finetune.png'):
        assert (out / png).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    # a second run skips every finished step
    log = out / 'logs' / 'world.log'
    before = log.read_text()
    written = {path: path.stat().st_mtime_ns for path in data.rglob('*') if path.is_file()}
    again = subprocess.run([sys.executable, 'study.py', '--fast', f'--out={out}', f'--data={data}'],
                           cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 0 and again.stdout.count('skip (exists') == 2 + 3 * len(arms)
    # the world step always runs (it checks the data's tokenizer) and keeps what it finds
    assert 'world already written, kept' in log.read_text()[len(before):]
    assert {path: path.stat().st_mtime_ns for path in data.rglob('*') if path.is_file()} == written
    # a finetune stopped midway (train.py saves ckpt.pt and exits 0, as on SIGTERM) and evaluated there, as a
    # study cut short could leave it: the next run resumes the finetune to its last step and evaluates again
    from study import FAST
    final, steps = out / 'frozen_mlp2_seed0', FAST['finetune_iters']
    full = json.loads((final / 'results.json').read_text())
    shutil.rmtree(final)
    # one thread, as the study runs it: the same arithmetic
    stopped = subprocess.run([sys.executable, 'train.py', 'config/tiny_finetune.py', f'--out_dir={final}',
                              f'--init_from={out}/mixed/frozen_mlp2_seed0/ckpt.pt',
                              f'--instruct_data={data}/instruct', f'--text_data={data}/text', '--seed=0',
                              '--freeze_vision=True', f'--max_iters={steps}', f'--stop_at_step={steps // 2}'],
                             cwd=ROOT, capture_output=True, text=True,
                             env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    evaluate = [sys.executable, 'eval.py', f"--ckpt={final / 'ckpt.pt'}", '--tasks=shapes_vqa,shapes_mc',
                f"--shapes_root={data / 'raw'}", f"--limit={FAST['eval_limit']}"]  # the study's items
    partial = subprocess.run(evaluate, cwd=ROOT, capture_output=True, text=True)
    assert partial.returncode == 0 and json.loads((final / 'results.json').read_text())['step'] == steps // 2
    resumed = subprocess.run([sys.executable, 'study.py', '--fast', f'--out={out}', f'--data={data}'],
                             cwd=ROOT, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f'frozen_mlp2, seed 0: finetune, resumed at step {steps // 2}' in resumed.stdout
    # all but that finetune and its evaluation
    assert resumed.stdout.count('skip (exists') == 2 + 3 * len(arms) - 2
    again = json.loads((final / 'results.json').read_text())
    assert again['step'] == steps
    # a resumed run repeats the uninterrupted one exactly (same batches, same RNG): the same answers
    assert again['tasks']['shapes_vqa']['acc'] == full['tasks']['shapes_vqa']['acc']
    # an evaluation of other items in results.json (another --limit, by hand) is not the study's: not done,
    # and not evaluated over either; the study says in one line what to move away
    other = subprocess.run(evaluate[:-1] + ['--limit=20', '--overwrite'], cwd=ROOT, capture_output=True,
                           text=True)
    assert other.returncode == 0 and json.loads((final / 'results.json').read_text())['limit'] == 20
    refused = subprocess.run([sys.executable, 'study.py', '--fast', f'--out={out}', f'--data={data}'],
                             cwd=ROOT, capture_output=True, text=True)
    message = refused.stderr.strip()
    assert refused.returncode != 0 and '\n' not in message, refused.stdout[-3000:] + refused.stderr[-3000:]
    assert f"{final / 'results.json'} holds an evaluation of other items" in message, message
    (final / 'results.json').unlink()
    evaluated = subprocess.run([sys.executable, 'study.py', '--fast', f'--out={out}', f'--data={data}'],
                               cwd=ROOT, capture_output=True, text=True)
    assert evaluated.returncode == 0 and evaluated.stdout.count('skip (exists') == 2 + 3 * len(arms) - 1
    assert json.loads((final / 'results.json').read_text())['tasks'] == again['tasks']


def write_run(folder, vqa_acc, mc_acc, mc_chance=0.25, n_vqa=2000, n_mc=300):
    os.makedirs(folder)
    results = {'tasks': {'shapes_vqa': {'group': 'vision', 'acc': vqa_acc, 'chance': 0.0, 'n': n_vqa},
                         'shapes_mc': {'group': 'text', 'acc': mc_acc, 'chance': mc_chance, 'n': n_mc}},
               'vision_stable_score': vqa_acc, 'text_stable_score': (mc_acc - mc_chance) / (1 - mc_chance)}
    with open(os.path.join(folder, 'results.json'), 'w') as f:
        json.dump(results, f)
    return str(folder)


def test_spread_takes_the_larger_of_seeds_and_test_set_sampling(tmp_path):
    sys.path.insert(0, ROOT)
    from study import spread_verdicts
    # two equal seeds per arm (seed spread 0): only the test sets' sampling error can call a gap noise
    finals = [write_run(tmp_path / f'{arm}_seed{s}', vqa, mc) for arm, vqa, mc in
              [('base', 0.50, 0.70), ('near', 0.52, 0.73), ('far', 0.60, 0.85)] for s in (0, 1)]
    lines = spread_verdicts(finals)
    # VQA at 0.5 on 2,000 questions: one standard error sqrt(0.25 / 2000) = 1.118 points per arm, the gap's
    # 2 * sqrt(2) * 1.118 = 3.16; at 0.52 sqrt(0.2496 / 2000) = 1.117, so 2 * sqrt(1.118^2 + 1.117^2) = 3.16
    assert lines[0] == ('- near vs base, Vision Stable: +2.0 points, within the spread '
                        '(seeds 0.0, test-set sampling 3.2)')
    # MC on 300 questions, chance 1/4: sqrt(0.7 * 0.3 / 300) / 0.75 = 3.528,
    # sqrt(0.73 * 0.27 / 300) / 0.75 = 3.418 -> 2 * sqrt(3.528^2 + 3.418^2) = 9.82;
    # the gap (0.73 - 0.70) / 0.75 = 4.0 points
    assert lines[1] == ('- near vs base, Text Stable: +4.0 points, within the spread '
                        '(seeds 0.0, test-set sampling 9.8)')
    assert lines[2].startswith('- far vs base, Vision Stable: +10.0 points, larger than the spread')
    assert lines[3].startswith('- far vs base, Text Stable: +20.0 points, larger than the spread')
    # seeds that disagree widen the spread beyond the sampling error
    finals += [write_run(tmp_path / f'wide_seed{s}', vqa, 0.70) for s, vqa in ((0, 0.50), (1, 0.70))]
    wide = spread_verdicts(finals)[4]
    # stdev of (0.5, 0.5) is 0, of (0.5, 0.7) is 0.1414: 14.1 points; the sampling error is the mean over
    # the seeds, (1.118 + sqrt(0.21 / 2000) = 1.025) / 2 = 1.071, so 2 * sqrt(1.118^2 + 1.071^2) = 3.10;
    # the gap 10.0 is within
    assert wide == ('- wide vs base, Vision Stable: +10.0 points, within the spread '
                    '(seeds 14.1, test-set sampling 3.1)')


def test_a_close_call_is_shown_to_two_decimals(tmp_path):
    sys.path.insert(0, ROOT)
    from study import spread_verdicts
    # 200,000 questions make the sampling error small: sqrt(0.25 / 200000) = 0.1118 points per run; the seeds
    # (0.5085, 0.5485) spread by 0.04 / sqrt(2) = 2.83 points and the gap is 2.85: larger, but both read 2.8
    finals = [write_run(tmp_path / f'{arm}_seed{s}', vqa, 0.70, n_vqa=200000) for arm, accs in
              [('base', (0.50, 0.50)), ('close', (0.5085, 0.5485))] for s, vqa in enumerate(accs)]
    # sampling: 2 * sqrt(0.1118^2 + ((sqrt(0.24993 / 2e5) + sqrt(0.24765 / 2e5)) / 2 = 0.11153)^2)
    # = 0.32 points
    assert spread_verdicts(finals)[0] == ('- close vs base, Vision Stable: +2.85 points, larger than the '
                                          'spread (seeds 2.83, test-set sampling 0.32)')


def test_report_names_its_budget_and_the_machine(tmp_path):
    sys.path.insert(0, ROOT)
    import torch
    from study import write_report
    finals = [write_run(tmp_path / f'{arm}_seed{s}', 0.5, 0.7) for arm in ('base', 'other') for s in (0, 1)]
    write_report(str(tmp_path), '| config |', finals, {'base_seed0': [['python', 'train.py']]}, [0, 1], 60.0,
                 str(tmp_path / 'no_world'), 2, 8)
    lines = (tmp_path / 'results.md').read_text().splitlines()
    assert lines[0] == '# The study on the shapes world at 8x the default budget (--budget=8)'
    assert lines[2].startswith('Written ') and f'{os.cpu_count()} CPU cores' in lines[2]
    assert f'PyTorch {torch.__version__}' in lines[2] and '2 steps were skipped' in lines[2]
    write_report(str(tmp_path), '| config |', finals, {}, [0, 1], 60.0, str(tmp_path / 'no_world'), 0, 1)
    lines = (tmp_path / 'results.md').read_text().splitlines()
    assert lines[0] == '# The study on the shapes world' and 'skipped' not in lines[2]


def test_budget_scales_training_steps_and_data_not_the_test_sets():
    sys.path.insert(0, ROOT)
    from study import DEFAULT, FAST, with_budget
    import shapes
    x3 = with_budget(DEFAULT, 3)
    steps = (x3['tower_steps'], x3['text_iters'], x3['mixed_iters'], x3['finetune_iters'])
    assert steps == (4800, 900, 270, 1800)
    # the default world names no sizes: the budget multiplies shapes.py's own training sizes
    assert x3['world'] == dict(n_caption=3 * shapes.N_CAPTION, n_instruct=3 * shapes.N_INSTRUCT,
                               n_instruct_text=3 * shapes.N_INSTRUCT_TEXT, text_mb=3 * shapes.TEXT_MB)
    assert (x3['eval_limit'], x3['seeds']) == (DEFAULT['eval_limit'], DEFAULT['seeds'])
    # the fast world's test sets (VQA images, multiple-choice questions) stay as they are
    x2 = with_budget(FAST, 2)
    assert x2['world'] == dict(n_caption=4000, n_instruct=1600, n_instruct_text=400, text_mb=1.0, n_val=100,
                               n_mc=100)
    assert x2['finetune_iters'] == 160 and FAST['finetune_iters'] == 80  # the plan itself is left alone
    assert with_budget(DEFAULT, 1) == DEFAULT


def test_bad_settings_stop_with_one_line():
    sys.path.insert(0, ROOT)
    from study import main
    for argv, message in ((['--budget=0'], '--budget must be a whole number >= 1, got 0'),
                          (['--jobs=0'], '--jobs must be a whole number >= 1, got 0'),
                          (['--seeds=0,x'], "--seeds takes comma-separated whole numbers, got '0,x'"),
                          (['--arms=frozen_mlp2,nope'], "unknown arms ['nope']"),
                          (['--budjet=2'], "unknown config key 'budjet'; did you mean budget?")):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert message in str(stop.value) and '\n' not in str(stop.value), argv


def test_the_default_plan_takes_its_train_steps_from_the_tiny_configs():
    sys.path.insert(0, ROOT)
    import train
    from configurator import apply_config, config_keys
    from study import DEFAULT
    steps = {name: apply_config(config_keys(vars(train)), [os.path.join(ROOT, 'config', f'tiny_{name}.py')])
             ['max_iters'] for name in ('text', 'mixed', 'finetune')}
    assert (DEFAULT['text_iters'], DEFAULT['mixed_iters'], DEFAULT['finetune_iters']) == (
        steps['text'], steps['mixed'], steps['finetune']) == (300, 90, 600)


def test_loss_curves_take_the_last_record_of_a_step_repeated_after_a_resume(tmp_path, monkeypatch):
    sys.path.insert(0, ROOT)
    import study
    # a run killed while it logged step 4 and resumed from its checkpoint at step 2 logs steps 2 and 3 twice
    # (the redone ones last), the first of them on the line the kill cut short; evaluation records carry no
    # train loss; a run killed again leaves a last line cut short
    record = lambda step, loss: json.dumps(dict(step=step, loss=loss))
    lines = [record(0, 4.0), record(1, 3.5), record(2, 3.0), json.dumps(dict(step=2, val_loss=3.3)),
             record(3, 2.9), '{"step": 4, "lo' + record(2, 3.1), record(3, 2.8), record(4, 2.5)]
    for folder in ('text', 'mixed/frozen_mlp2_seed0', 'frozen_mlp2_seed0'):
        os.makedirs(tmp_path / folder)
        (tmp_path / folder / 'log.jsonl').write_text('\n'.join(lines) + '\n{"step": 5, "loss": 2.')
    drawn = {}
    monkeypatch.setattr(study, 'line_chart', lambda curves, path, title: drawn.update({path: curves}))
    study.plot_losses(dict(out=str(tmp_path), runs=[('frozen_mlp2', 0)]))
    expected = [(0, 4.0), (1, 3.5), (2, 3.1), (3, 2.8), (4, 2.5)]
    assert drawn[f'{tmp_path}/loss_text.png'] == {'text': expected}
    for stage in ('mixed', 'finetune'):
        assert drawn[f'{tmp_path}/loss_{stage}.png'] == {'frozen_mlp2_seed0': expected}
