"""
The whole study on a CPU, on the synthetic shapes world, in one command:

    python study.py            # the default: 4 arms x 2 seeds, about 18 minutes on 2 cores
    python study.py --fast     # a smoke run: smaller world, fewer steps, 1 seed (a few minutes)
    python study.py --budget 8 # 8x the steps and training data of every stage (on a GPU node, say)

Steps (each a normal command a reader can rerun by hand; a step whose output exists is skipped, and a
train.py run stopped midway resumes from its checkpoint):
  1. prepare_data.py shapes        the world: images, captions, conversations, VQA, text, text questions
  2. vision.py pretrain            a tiny SigLIP tower, sigmoid loss, on the caption images, with
                                   hard negatives: each caption also with one shape name swapped
  3. train.py config/tiny_text.py  a tiny LM on the text corpus, milestones at 0/20/.../100 %
     (2 and 3 run side by side, one CPU thread each, as the runs of step 4 do)
  4. per arm and seed: train.py config/tiny_mixed.py (from the 80 % milestone; the baseline arm
     from 100 %), then config/tiny_finetune.py, then eval.py (shapes VQA in the VQAv2 metric,
     shapes multiple choice in the ARC-easy metric, Vision and Text Stable Scores); two of these
     pipelines run side by side with one CPU thread each (--jobs), which on 2 cores does about
     10 % more work per second than one at a time with two threads
  5. eval.py --compare: the table, mean ± std over seeds; loss curves and score bars as PNGs;
     out/study/results.md with the table and the exact commands behind every row.
Seeds vary the mixed and finetune stages; the world, the tower and the text LM are shared.
Each command's output goes to out/study/logs/ (world.log, tower.log, text.log, one log per arm and seed).
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

ARMS = {  # name -> mixed-stage overrides; the first is the default recipe
    'frozen_mlp2': dict(freeze_vision=True, projector='mlp2'),
    'unfrozen_mlp2': dict(freeze_vision=False, projector='mlp2'),
    'frozen_mlp1': dict(freeze_vision=True, projector='mlp1'),
    'after_text_frozen_mlp2': dict(freeze_vision=True, projector='mlp2', start='ckpt_100.pt'),  # the paper's baseline
}
# the tower: batches of 32 captions, each also met as a hard negative with one shape name swapped
# (vision.swap_one_word); without those the tower learns color and position and stays blind to shape
TOWER = ['--batch_size', '32', '--lr', '1e-3', '--swap_words', 'circle,square,triangle,star,cross']
FAST = dict(world=dict(n_caption=2000, n_instruct=800, n_instruct_text=200, n_val=100, text_mb=0.5, n_mc=100),
            tower_steps=100, text_iters=120, mixed_iters=40, finetune_iters=80, eval_limit=100, seeds=[0])
DEFAULT = dict(world=dict(), tower_steps=1600, text_iters=300, mixed_iters=90, finetune_iters=600, eval_limit=0,
               seeds=[0, 1])
STEPS = ('tower_steps', 'text_iters', 'mixed_iters', 'finetune_iters')


def with_budget(plan, budget):
    """The plan with `budget` times the compute: every training stage's steps, and the world's training
    data with them (so each stage sees its data about as many times as in the plan: more passes over the
    same 4,000 instruction images would teach those images, not the task). The test sets stay as they
    are, so the scores of any two budgets compare."""
    if budget == 1:
        return plan
    from shapes import N_CAPTION, N_INSTRUCT, N_INSTRUCT_TEXT, TEXT_MB  # the world's own sizes, where the plan keeps them
    training = dict(n_caption=N_CAPTION, n_instruct=N_INSTRUCT, n_instruct_text=N_INSTRUCT_TEXT, text_mb=TEXT_MB)
    world = dict(plan['world'], **{k: type(v)(plan['world'].get(k, v) * budget) for k, v in training.items()})
    return dict(plan, world=world, **{k: plan[k] * budget for k in STEPS})


class Progress:
    """Numbered steps with elapsed time and an estimate of what is left, from threads running side by side."""

    def __init__(self, total):
        self.total, self.started, self.finished, self.skipped, self.t0 = total, 0, 0, 0, time.time()
        self.lock = threading.Lock()
        self.failed = None  # the first failure: pipelines start nothing new once a step has failed
        self.phase = (self.t0, 0)  # the time left is estimated from the steps run (not skipped) in this phase

    def new_phase(self):
        """From here on steps are alike (the per-run pipelines): estimate the time left from them alone."""
        self.phase = (time.time(), self.finished - self.skipped)

    def start(self, title):
        with self.lock:
            self.started += 1
            now = time.time()
            elapsed, done = now - self.t0, self.finished - self.skipped - self.phase[1]
            eta = (now - self.phase[0]) / done * (self.total - self.finished) if done else float('nan')
            print(f"[{self.started}/{self.total}] {title}  (elapsed {elapsed / 60:.1f} min" +
                  (f", about {eta / 60:.1f} min left)" if eta == eta else ")"), flush=True)

    def run(self, title, cmd, log, done_when=None, threads=None, complete=None):
        """Run one step unless its output exists (or a step has failed); output to the log, progress to the console.
        done_when: the file the step writes last; complete: a check that the file holds the finished work (a
        train.py checkpoint is also written midway). A step that exits 0 without its output stops the study."""
        if self.failed:
            return
        self.start(title)
        finished = lambda: os.path.exists(done_when) and (complete is None or complete())
        if done_when and finished():
            with self.lock:  # under the lock: two threads' lines do not run into each other
                print(f"  skip (exists: {done_when})", flush=True)
                self.skipped += 1
                self.finished += 1
            return
        with self.lock:
            print(f"  $ {shlex.join(cmd)}", flush=True)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads)) if threads else None
        with open(log, 'a') as f:
            f.write(f"\n$ {shlex.join(cmd)}\n")
            f.flush()
            result = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        if result.returncode != 0 or (done_when and not finished()):
            # train.py saves and exits 0 on SIGINT / SIGTERM: an unfinished output is a stop, not a success
            why = f"exit {result.returncode}" if result.returncode else f"exited before finishing {done_when}"
            self.fail(f"step stopped ({why}): {shlex.join(cmd)}\nsee {log}; run study.py again to go on "
                      "(finished steps are skipped, a stopped train.py run resumes)")
            return
        with self.lock:
            self.finished += 1

    def fail(self, message):
        with self.lock:
            self.failed = self.failed or message


def side_by_side(jobs, workers, progress):
    """Run the callables `workers` at a time, each in a thread (each starts subprocesses of one CPU thread)."""
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(job) for job in jobs]
        try:
            for future in futures:
                future.result()
        except KeyboardInterrupt:  # Ctrl-C reaches the running steps too: start no new one while they stop
            progress.fail('interrupted')
            raise


def checkpoint_step(out_dir):
    """The step at which the train.py run in out_dir last saved its ckpt.pt, or None without one."""
    from model import load_checkpoint
    path = os.path.join(out_dir, 'ckpt.pt')
    return load_checkpoint(path)['step'] if os.path.isfile(path) else None


def read_log(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def plot_losses(curves, path, title):
    """curves: {name: [(step, loss)]} -> a line chart PNG, drawn with pillow."""
    from PIL import Image, ImageDraw
    W, H, pad = 900, 500, 60
    img = Image.new('RGB', (W, H), 'white')
    draw = ImageDraw.Draw(img)
    points = [p for c in curves.values() for p in c]
    if not points:
        return
    x_max = max(s for s, _ in points) or 1
    y_min, y_max = min(l for _, l in points), max(l for _, l in points)
    y_max = y_max if y_max > y_min else y_min + 1
    sx = lambda s: pad + (W - 2 * pad) * s / x_max
    sy = lambda l: H - pad - (H - 2 * pad) * (l - y_min) / (y_max - y_min)
    draw.rectangle([pad, pad, W - pad, H - pad], outline='black')
    draw.text((pad, 20), title, fill='black')
    for i in range(5):
        v = y_min + (y_max - y_min) * i / 4
        draw.text((5, sy(v) - 6), f"{v:.2f}", fill='black')
    draw.text((W - pad - 40, H - pad + 10), f"step {x_max}", fill='black')
    palette = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#e377c2', '#7f7f7f']
    for i, (name, curve) in enumerate(sorted(curves.items())):
        color = palette[i % len(palette)]
        if len(curve) > 1:
            draw.line([(sx(s), sy(l)) for s, l in curve], fill=color, width=2)
        draw.text((W - pad - 230, pad + 10 + 14 * i), name, fill=color)
    img.save(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--fast', action='store_true', help='a smoke run: small world, few steps, one seed')
    parser.add_argument('--out', default=None, help='output folder (default out/study, or out/study_fast)')
    parser.add_argument('--data', default=None, help='shapes world folder (default data/shapes, or data/shapes_fast)')
    parser.add_argument('--seeds', default=None, help='comma-separated seeds of the mixed and finetune stages')
    parser.add_argument('--arms', default=','.join(ARMS), help=f'comma-separated arms: {", ".join(ARMS)}')
    parser.add_argument('--budget', type=int, default=1,
                        help='N times the steps of every training stage and the training data (not the test sets); '
                             'default folders out/study_xN, data/shapes_xN')
    parser.add_argument('--jobs', type=int, default=2,
                        help='runs side by side, one CPU thread each (tiny models use cores better as separate processes); '
                             '1 = one at a time with all threads')
    args = parser.parse_args()
    if args.budget < 1:
        sys.exit(f"--budget must be a whole number >= 1, got {args.budget}")
    plan = with_budget(FAST if args.fast else DEFAULT, args.budget)
    suffix = ('_fast' if args.fast else '') + (f'_x{args.budget}' if args.budget > 1 else '')
    out = args.out or f'out/study{suffix}'
    data = args.data or f'data/shapes{suffix}'
    seeds = [int(s) for s in args.seeds.split(',')] if args.seeds else plan['seeds']
    arms = args.arms.split(',')
    threads = 1 if args.jobs > 1 else None
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        sys.exit(f"unknown arms {unknown}; known: {list(ARMS)}")
    os.makedirs(os.path.join(out, 'logs'), exist_ok=True)
    log = os.path.join(out, 'logs', 'world.log')
    py = sys.executable
    shared = [f'--text_data={data}/text']
    runs = [(arm, seed) for arm in arms for seed in seeds]
    commands = {f'{arm}_seed{seed}': None for arm, seed in runs}  # row name -> the commands behind it, in table order
    progress = Progress(3 + 3 * len(runs) + 1)

    world = [py, 'prepare_data.py', 'shapes', '--out', data, '--seed', '0', '--max_tokens', '256'] + [
        f'--{k}={v}' for k, v in plan['world'].items()]
    progress.run('the shapes world', world, log)  # always run: it keeps what exists, and refuses data of another tokenizer
    tower = [py, 'vision.py', 'pretrain', '--captions', f'{data}/captions', '--out', f'{out}/tower',
             '--steps', str(plan['tower_steps'])] + TOWER
    text = [py, 'train.py', 'config/tiny_text.py', f'--out_dir={out}/text', f'--max_iters={plan["text_iters"]}'] + shared

    def train(title, cmd, run_dir, steps, log):
        """A train.py step. Its ckpt.pt is also written at every evaluation and when the run is stopped: the
        step is done when that checkpoint is at the last step, and a run stopped short resumes from it."""
        try:
            at = checkpoint_step(run_dir)
        except ValueError as e:  # load_checkpoint names the file and the cause
            return progress.fail(f"{e}; remove {run_dir} to run this step again")
        if at is not None and at > steps:
            return progress.fail(f"{run_dir}/ckpt.pt is at step {at}, past the {steps} steps asked: a run of another "
                                 "plan; remove it or choose another --out")
        if at is not None and at < steps:
            cmd, title = cmd + ['--init_from=resume'], f'{title}, resumed at step {at}'
        progress.run(title, cmd, log, done_when=f'{run_dir}/ckpt.pt', threads=threads,
                     complete=lambda: checkpoint_step(run_dir) == steps)

    # the tower and the text LM do not depend on each other: side by side, like the runs below
    side_by_side([
        lambda: progress.run('a tiny SigLIP tower (sigmoid loss)', tower, os.path.join(out, 'logs', 'tower.log'),
                             done_when=f'{out}/tower/model.safetensors', threads=threads),
        lambda: train('the tiny LM on text', text, f'{out}/text', plan['text_iters'], os.path.join(out, 'logs', 'text.log')),
    ], args.jobs, progress)
    if progress.failed:
        sys.exit(progress.failed)

    def pipeline(arm, seed):
        """Mixed stage, finetune, evaluation of one (arm, seed): one after the other, in one thread."""
        settings = dict(ARMS[arm])
        start = settings.pop('start', 'ckpt_080.pt')
        name = f'{arm}_seed{seed}'
        mixed_dir, final_dir, run_log = f'{out}/mixed/{name}', f'{out}/{name}', os.path.join(out, 'logs', f'{name}.log')
        mixed = [py, 'train.py', 'config/tiny_mixed.py', f'--out_dir={mixed_dir}', f'--init_from={out}/text/{start}',
                 f'--vision_init={out}/tower', f'--caption_data={data}/captions', f'--seed={seed}',
                 f'--max_iters={plan["mixed_iters"]}'] + shared + [f'--{k}={v}' for k, v in settings.items()]
        train(f'{arm}, seed {seed}: mixed stage from {start}', mixed, mixed_dir, plan['mixed_iters'], run_log)
        finetune = [py, 'train.py', 'config/tiny_finetune.py', f'--out_dir={final_dir}', f'--init_from={mixed_dir}/ckpt.pt',
                    f'--instruct_data={data}/instruct', f'--seed={seed}',
                    f'--freeze_vision={settings["freeze_vision"]}', f'--max_iters={plan["finetune_iters"]}'] + shared
        train(f'{arm}, seed {seed}: finetune', finetune, final_dir, plan['finetune_iters'], run_log)
        evaluate = [py, 'eval.py', '--ckpt', f'{final_dir}/ckpt.pt', '--tasks', 'shapes_vqa,shapes_mc',
                    '--shapes_root', f'{data}/raw', '--limit', str(plan['eval_limit'])]
        progress.run(f'{arm}, seed {seed}: evaluation', evaluate, run_log, done_when=f'{final_dir}/results.json',
                     threads=threads, complete=lambda: load_results(final_dir)['step'] == plan['finetune_iters'])
        commands[name] = [world, tower, text, mixed, finetune, evaluate]

    progress.new_phase()
    side_by_side([lambda a=arm, s=seed: pipeline(a, s) for arm, seed in runs], args.jobs, progress)
    if progress.failed:
        sys.exit(progress.failed)

    progress.start('comparison table and plots')
    finals = [f'{out}/{arm}_seed{seed}' for arm, seed in runs]
    compare = [py, 'eval.py', '--compare'] + finals + ['--plot', f'{out}/scores.png']
    table = subprocess.run(compare, capture_output=True, text=True)
    if table.returncode != 0:
        sys.exit(f"comparison failed: {table.stderr}")
    table = '\n'.join(line for line in table.stdout.splitlines() if line.startswith('|'))
    print(table)
    text_curve = [(r['step'], r['loss']) for r in read_log(f'{out}/text/log.jsonl') if 'loss' in r]
    plot_losses({'text': text_curve}, f'{out}/loss_text.png', 'text stage: train loss')
    for stage, folder in (('mixed', f'{out}/mixed'), ('finetune', out)):
        curves = {f'{arm}_seed{seed}': [(r['step'], r['loss']) for r in read_log(f'{folder}/{arm}_seed{seed}/log.jsonl')
                                        if 'loss' in r] for arm, seed in runs}
        plot_losses(curves, f'{out}/loss_{stage}.png', f'{stage} stage: train loss per arm and seed')
    commands['comparison'] = [compare]
    write_report(out, table, finals, commands, seeds, time.time() - progress.t0, data, progress.skipped,
                 args.budget)
    print(f"wrote {out}/results.md, {out}/scores.png, {out}/loss_text.png, {out}/loss_mixed.png, {out}/loss_finetune.png "
          f"({(time.time() - progress.t0) / 60:.1f} min)")


def load_results(folder):
    with open(os.path.join(folder, 'results.json')) as f:
        return json.load(f)


def sampling_error(results, group):
    """One standard error of a run's Stable Score that comes from the size of its test sets alone
    (binomial, per task, scaled as the score scales the accuracy): scores on a few hundred questions
    move by this much under any change, so a smaller gap is noise whatever the seeds say."""
    tasks = [t for t in results['tasks'].values() if t.get('group') == group and t.get('acc') is not None and t.get('n')]
    if not tasks:
        return 0.0
    terms = [(t['acc'] * (1 - t['acc']) / t['n']) ** 0.5 / (1 - t['chance']) for t in tasks]
    return sum(x * x for x in terms) ** 0.5 / len(terms)


def spread_verdicts(finals):
    """For each arm against the default recipe (the first arm): is the gap in each score larger than the
    spread? The spread is the larger of the seed spread (sum of the standard deviations over seeds) and
    twice the test sets' sampling error of the gap (sampling_error); with two seeds the first alone can
    be 0 (two equal scores)."""
    import statistics
    groups = {}
    for folder in finals:
        arm = os.path.basename(folder).rsplit('_seed', 1)[0]
        groups.setdefault(arm, []).append(load_results(folder))
    metrics = [('Vision Stable', 'vision'), ('Text Stable', 'text')]
    arms = list(groups)
    lines = []
    for arm in arms[1:]:
        for name, group in metrics:
            runs_a, runs_b = groups[arms[0]], groups[arm]
            if len(runs_a) < 2 or len(runs_b) < 2:
                lines.append(f"- {arm} vs {arms[0]}, {name}: one seed only, the spread is unknown")
                continue
            a, b = [r[f'{group}_stable_score'] for r in runs_a], [r[f'{group}_stable_score'] for r in runs_b]
            gap = statistics.mean(b) - statistics.mean(a)
            seeds = statistics.stdev(a) + statistics.stdev(b)
            error = lambda runs: statistics.mean(sampling_error(r, group) for r in runs)
            sampling = 2 * (error(runs_a) ** 2 + error(runs_b) ** 2) ** 0.5
            verdict = 'larger than the spread' if abs(gap) > max(seeds, sampling) else 'within the spread'
            # a close call shown to one decimal reads as a gap equal to its spread: show it to two
            close = f"{100 * abs(gap):.1f}" == f"{100 * max(seeds, sampling):.1f}"
            digits = 2 if close else 1
            lines.append(f"- {arm} vs {arms[0]}, {name}: {100 * gap:+.{digits}f} points, {verdict} "
                         f"(seeds {100 * seeds:.{digits}f}, test-set sampling {100 * sampling:.{digits}f})")
    return lines


def world_baselines(data):
    """The blind and unbound VQA answerers of the shapes world (world.json), or None without one."""
    try:
        with open(os.path.join(data, 'raw', 'world.json')) as f:
            world = json.load(f)
        return world['blind_baseline'], world.get('unbound_baseline')
    except (OSError, KeyError, ValueError):
        return None


def question_type_table(finals, baselines):
    """Shapes VQA accuracy per question type, mean over the runs of each arm; below them, for reference,
    world.json's two answerers (world_baselines): blind to the image, and unbound (what the scene holds,
    not which object has which)."""
    rows = {}
    for folder in finals:
        arm = os.path.basename(folder).rsplit('_seed', 1)[0]
        by_type = load_results(folder)['tasks']['shapes_vqa'].get('by_question_type', {})
        for question_type, stat in by_type.items():
            rows.setdefault(arm, {}).setdefault(question_type, []).append(stat['acc'])
    types = sorted({t for arm in rows.values() for t in arm})
    lines = ['| arm | ' + ' | '.join(types) + ' |', '|---|' + '---|' * len(types)]
    for arm, by_type in rows.items():
        cells = [f"{100 * sum(by_type[t]) / len(by_type[t]):.1f}" if t in by_type else '-' for t in types]
        lines.append(f"| {arm} | " + ' | '.join(cells) + ' |')
    names = ('*blind to the image*', '*unbound: what the scene holds, not which object has which*')
    for name, report in zip(names, baselines or ()):
        if report:
            cells = [f"{100 * report['per_type'][t]['accuracy']:.1f}" if t in report['per_type'] else '-' for t in types]
            lines.append(f"| {name} | " + ' | '.join(cells) + ' |')
    return lines


def blind_answerer(baselines):
    """The shapes VQA scores of the blind and unbound answerers (world_baselines), as sentences."""
    if not baselines:
        return ''
    blind, unbound = baselines
    return (f" An answerer blind to the image (the most frequent training answer per question type) scores "
            f"{100 * blind['accuracy']:.1f} % on shapes VQA; per question type, chance is 1 / the number of answers." +
            (f" One that knows what each scene holds but not which object has which scores {100 * unbound['accuracy']:.1f} %."
             if unbound else ''))


def machine():
    """Where the runs ran, in words: the GPU train.py and eval.py pick by default, or the CPU's cores."""
    import platform
    import torch
    cores = f"{os.cpu_count()} CPU cores ({platform.machine()})"
    where = f"one {torch.cuda.get_device_name(0)}, {cores}" if torch.cuda.is_available() else cores
    return f"{where}, PyTorch {torch.__version__}"


def write_report(out, table, finals, commands, seeds, seconds, data, skipped, budget):
    shown = lambda cmd: shlex.join(['python'] + cmd[1:])  # the interpreter's path is this machine's, not the reader's
    baselines = world_baselines(data)  # world.json, read once for the sentence and the per-type table
    title = '# The study on the shapes world' + (f' at {budget}x the default budget (--budget {budget})' if budget > 1 else '')
    lines = [title, '', f'Written {time.strftime("%Y-%m-%d")} on {machine()}' +
             (f'; {skipped} steps were skipped, their outputs existed (they may have run elsewhere).' if skipped else '.'), '',
             f'{len(seeds)} seed(s) ({", ".join(map(str, seeds))}) vary the mixed and finetune stages; the shapes world, '
             'the tiny SigLIP tower and the text LM are shared by every run. Wall time: '
             f'{seconds / 60:.1f} min. Scores in %, mean ± sample std over seeds; Stable Scores as design.md defines '
             'them (VQA chance 0, multiple-choice chance 1/#choices).' + blind_answerer(baselines), '', table, '',
             '## Differences against the default recipe (frozen encoder, 2-layer MLP)', ''] + spread_verdicts(finals) + [
             '', '## Shapes VQA accuracy per question type (%, mean over seeds)', ''] + question_type_table(finals, baselines) + [
             '', '![scores](scores.png)', '', '![text loss](loss_text.png)', '', '![mixed loss](loss_mixed.png)', '',
             '![finetune loss](loss_finetune.png)', '', '## Commands behind each row', '']
    for name, cmds in commands.items():
        lines += [f'### {name}', '', '```'] + [shown(c) for c in cmds] + ['```', '']
    with open(os.path.join(out, 'results.md'), 'w') as f:
        f.write('\n'.join(lines))


if __name__ == '__main__':
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted: run the same command again to go on (finished steps are skipped, a stopped "
                 "train.py run resumes from its checkpoint)")
