"""
The whole study on a CPU, on the synthetic shapes world, in one command:

    python study.py             # the default: 4 arms x 2 seeds, about 18 minutes on 2 cores
    python study.py --fast      # a smoke run: smaller world, fewer steps, 1 seed (a few minutes)
    python study.py --budget=8  # 8x the steps and training data of every stage (on a GPU node, say)

Steps (each a normal command a reader can rerun by hand; a step whose output exists is skipped, and a
train.py run stopped midway resumes from its checkpoint):
  1. prepare_data.py shapes        the world: images, captions, conversations, VQA, text, text questions
  2. tower.py                      a tiny SigLIP tower, sigmoid loss, on the caption images, with
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
The default plan's train.py steps are config/tiny_*.py's max_iters; --fast and --budget give their own.
"""
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import configurator
import train  # its config keys: study.py reads config/tiny_*.py as train.py does
from eval import EvalError, load_results, measured_as
from plots import line_chart

ARMS = {  # name -> mixed-stage overrides (config/arm_*.py's settings); the first is the default recipe
    'frozen_mlp2': dict(freeze_vision=True, projector='mlp2'),
    'unfrozen_mlp2': dict(freeze_vision=False, projector='mlp2'),
    'frozen_mlp1': dict(freeze_vision=True, projector='mlp1'),
    # the paper's baseline, from the end of the text stage, re-warmed by config/tiny_mixed.py's
    # learning_rate and warmup_iters (config/start_100.py's 9 % warmup is for the 1B and 79M budgets)
    'after_text_frozen_mlp2': dict(freeze_vision=True, projector='mlp2', start='ckpt_100.pt'),
}
DEFAULTS = {
    'fast': False,  # a smoke run: a smaller world, fewer steps, one seed
    'out': '',  # the output folder ('' = out/study, out/study_fast, out/study_xN, ...)
    'data': '',  # the shapes world's folder ('' = data/shapes, data/shapes_fast, data/shapes_xN, ...)
    'seeds': '',  # comma-separated seeds of the mixed and finetune stages ('' = the plan's)
    'arms': ','.join(ARMS),  # comma-separated arms, of ARMS
    'budget': 1,  # N times the steps of every training stage and the training data (not the test sets)
    # runs side by side, one CPU thread each (tiny models use cores better as separate processes);
    # 1 = one at a time with all threads
    'jobs': 2,
}
# the tower: batches of 32 captions, each also met as a hard negative with one shape name swapped
# (vision.swap_one_word); without those the tower learns color and position and stays blind to shape
TOWER = ['--batch_size=32', '--lr=1e-3', '--swap_words=circle,square,triangle,star,cross']


def config_steps(name):
    """max_iters of config/<name>.py, read as train.py reads it: the default plan's steps live there alone."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'config', f'{name}.py')
    return configurator.apply_config(configurator.config_keys(vars(train)), [path])['max_iters']


FAST = dict(world=dict(n_caption=2000, n_instruct=800, n_instruct_text=200, n_val=100, text_mb=0.5, n_mc=100),
            tower_steps=100, text_iters=120, mixed_iters=40, finetune_iters=80, eval_limit=100, seeds=[0])
DEFAULT = dict(world=dict(), tower_steps=1600, text_iters=config_steps('tiny_text'),
               mixed_iters=config_steps('tiny_mixed'), finetune_iters=config_steps('tiny_finetune'),
               eval_limit=0, seeds=[0, 1])
STEPS = ('tower_steps', 'text_iters', 'mixed_iters', 'finetune_iters')


def with_budget(plan, budget):
    """The plan with `budget` times the compute: every training stage's steps, and the world's training
    data with them (so each stage sees its data about as many times as in the plan: more passes over the
    same 4,000 instruction images would teach those images, not the task). The test sets stay as they
    are, so the scores of any two budgets compare."""
    if budget == 1:
        return plan
    # the world's own sizes, where the plan keeps them
    from shapes import N_CAPTION, N_INSTRUCT, N_INSTRUCT_TEXT, TEXT_MB
    training = dict(n_caption=N_CAPTION, n_instruct=N_INSTRUCT, n_instruct_text=N_INSTRUCT_TEXT,
                    text_mb=TEXT_MB)
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
        """Run one step unless its output exists (or a step has failed); output to the log, progress to the
        console. done_when: the file the step writes last; complete: a check that the file holds the finished
        work (a train.py checkpoint is also written midway). A step that exits 0 without its output stops
        the study."""
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
        env = None if not threads else dict(os.environ, OMP_NUM_THREADS=str(threads),
                                            MKL_NUM_THREADS=str(threads))
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
    """Run the callables `workers` at a time, each in a thread (each starts subprocesses of one CPU
    thread)."""
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(job) for job in jobs]
        try:
            for future in futures:
                future.result()
        except KeyboardInterrupt:  # Ctrl-C reaches the running steps too: start no new one while they stop
            progress.fail('interrupted')
            raise


def checkpoint_step(out_dir):
    """The step at which the run in out_dir (train.py's or tower.py's) last saved its ckpt.pt, or None
    without one."""
    from model import load_checkpoint
    path = os.path.join(out_dir, 'ckpt.pt')
    return load_checkpoint(path)['step'] if os.path.isfile(path) else None


def loss_curve(path):
    """[(step, train loss)] of a train.py log.jsonl, by step. A run killed and resumed from its checkpoint
    logs the steps it redid twice: the last record of a step is the one the run went on from. A kill can
    cut a line short, and the resumed run then appends on that line: the record is what parses after the
    cut (a line with none is no record)."""
    losses = {}
    with open(path) as f:
        for line in f:
            start = line.find('{')
            while start >= 0:
                try:
                    record = json.loads(line[start:])
                    break
                except ValueError:
                    start = line.find('{', start + 1)
            else:
                continue
            if isinstance(record, dict) and 'loss' in record:
                losses[record['step']] = record['loss']
    return sorted(losses.items())


def tower_problem(folder):
    """What keeps the tower in folder from loading, in one line, or None when it loads (config.json
    beside model.safetensors, the tensors of the shape it names)."""
    from vision import load_siglip
    if not os.path.isfile(os.path.join(folder, 'config.json')):
        return f"{folder}: no config.json beside model.safetensors"
    try:
        load_siglip(folder)
    except (ValueError, OSError, KeyError, TypeError, AttributeError) as e:
        return str(e).splitlines()[0]  # a mismatch lists every tensor on the lines below
    return None


# -----------------------------------------------------------------------------
# The study's steps, in the order they run. `s` is the settings, completed by resolve().

def resolve(settings):
    """The settings with the plan, the folders, the seeds and arms as lists; exits on bad input."""
    s = dict(settings)
    if s['budget'] < 1:
        sys.exit(f"config error: --budget must be a whole number >= 1, got {s['budget']}")
    if s['jobs'] < 1:
        sys.exit(f"config error: --jobs must be a whole number >= 1, got {s['jobs']}")
    s['plan'] = with_budget(FAST if s['fast'] else DEFAULT, s['budget'])
    suffix = ('_fast' if s['fast'] else '') + (f"_x{s['budget']}" if s['budget'] > 1 else '')
    s['out'] = s['out'] or f'out/study{suffix}'
    s['data'] = s['data'] or f'data/shapes{suffix}'
    try:
        s['seeds'] = [int(x) for x in s['seeds'].split(',')] if s['seeds'] else s['plan']['seeds']
    except ValueError:
        sys.exit(f"config error: --seeds takes comma-separated whole numbers, got {s['seeds']!r}")
    s['arms'] = s['arms'].split(',')
    unknown = [a for a in s['arms'] if a not in ARMS]
    if unknown:
        sys.exit(f"config error: unknown arms {unknown}; known: {list(ARMS)}")
    s['runs'] = [(arm, seed) for arm in s['arms'] for seed in s['seeds']]
    s['threads'] = 1 if s['jobs'] > 1 else None
    s['py'] = sys.executable
    return s


def world_command(s):
    return [s['py'], 'prepare_data.py', 'shapes', f"--out={s['data']}", '--seed=0', '--max_tokens=256'] + [
        f'--{k}={v}' for k, v in s['plan']['world'].items()]


def tower_command(s):
    return [s['py'], 'tower.py', f"--captions={s['data']}/captions", f"--out={s['out']}/tower",
            f"--steps={s['plan']['tower_steps']}"] + TOWER


def text_command(s):
    return [s['py'], 'train.py', 'config/tiny_text.py', f"--out_dir={s['out']}/text",
            f"--max_iters={s['plan']['text_iters']}", f"--text_data={s['data']}/text"]


def mixed_command(s, arm, seed):
    settings = dict(ARMS[arm])
    start = settings.pop('start', 'ckpt_080.pt')
    out, data = s['out'], s['data']
    return [s['py'], 'train.py', 'config/tiny_mixed.py', f'--out_dir={out}/mixed/{arm}_seed{seed}',
            f'--init_from={out}/text/{start}', f'--vision_init={out}/tower',
            f'--caption_data={data}/captions', f'--seed={seed}', f"--max_iters={s['plan']['mixed_iters']}",
            f'--text_data={data}/text'] + [f'--{k}={v}' for k, v in settings.items()]


def finetune_command(s, arm, seed):
    out, data = s['out'], s['data']
    return [s['py'], 'train.py', 'config/tiny_finetune.py', f'--out_dir={out}/{arm}_seed{seed}',
            f'--init_from={out}/mixed/{arm}_seed{seed}/ckpt.pt', f'--instruct_data={data}/instruct',
            f'--seed={seed}', f"--freeze_vision={ARMS[arm]['freeze_vision']}",
            f"--max_iters={s['plan']['finetune_iters']}", f'--text_data={data}/text']


def eval_command(s, arm, seed):
    return [s['py'], 'eval.py', f"--ckpt={s['out']}/{arm}_seed{seed}/ckpt.pt", '--tasks=shapes_vqa,shapes_mc',
            f"--shapes_root={s['data']}/raw", f"--limit={s['plan']['eval_limit']}"]


def train_step(s, progress, title, cmd, run_dir, steps, log):
    """A train.py step. Its ckpt.pt is also written at every evaluation and when the run is stopped: the
    step is done when that checkpoint is at the last step, and a run stopped short resumes from it."""
    try:
        at = checkpoint_step(run_dir)
    except ValueError as e:  # load_checkpoint names the file and the cause
        return progress.fail(f"{e}; remove {run_dir} to run this step again")
    if at is not None and at > steps:
        return progress.fail(f"{run_dir}/ckpt.pt is at step {at}, past the {steps} steps asked: a run of "
                             "another plan; remove it or choose another --out")
    if at is not None and at < steps:
        cmd, title = cmd + ['--init_from=resume'], f'{title}, resumed at step {at}'
    progress.run(title, cmd, log, done_when=f'{run_dir}/ckpt.pt', threads=s['threads'],
                 complete=lambda: checkpoint_step(run_dir) == steps)


def tower_step(s, progress, log):
    """The tower. tower.py writes config.json, then model.safetensors, then removes its resume checkpoint
    ckpt.pt: the step is done when the first two load as a tower and the third is gone. A run cut short
    (a ckpt.pt left, or no model.safetensors) is run again and resumes or starts over; weights that do not
    load with no run to finish, or a ckpt.pt that does not load, stop the study with what to remove."""
    title, folder = 'a tiny SigLIP tower (sigmoid loss)', f"{s['out']}/tower"
    weights, checkpoint = f'{folder}/model.safetensors', f'{folder}/ckpt.pt'
    if os.path.isfile(checkpoint):
        try:
            title += f", resumed at step {checkpoint_step(folder)}"
        except ValueError as e:  # load_checkpoint names the file and the cause
            return progress.fail(f"{' '.join(str(e).split())}; remove {checkpoint} to train the tower anew")
    elif os.path.exists(weights):
        problem = tower_problem(folder)
        if problem:
            return progress.fail(f"{problem}; remove {weights} and run study.py again to train the tower "
                                 "anew")
    progress.run(title, tower_command(s), log, done_when=weights, threads=s['threads'],
                 complete=lambda: not os.path.exists(checkpoint) and tower_problem(folder) is None)


def shared_steps(s, progress):
    """The world, then the tower and the text LM side by side (neither depends on the other)."""
    logs = os.path.join(s['out'], 'logs')
    # always run: it keeps what is finished and rebuilds what was made from other inputs or settings
    progress.run('the shapes world', world_command(s), os.path.join(logs, 'world.log'))
    side_by_side([
        lambda: tower_step(s, progress, os.path.join(logs, 'tower.log')),
        lambda: train_step(s, progress, 'the tiny LM on text', text_command(s), f"{s['out']}/text",
                           s['plan']['text_iters'], os.path.join(logs, 'text.log')),
    ], s['jobs'], progress)


def pipeline(s, progress, arm, seed):
    """Mixed stage, finetune, evaluation of one (arm, seed): one after the other, in one thread."""
    out, plan, name = s['out'], s['plan'], f'{arm}_seed{seed}'
    log = os.path.join(out, 'logs', f'{name}.log')
    start = ARMS[arm].get('start', 'ckpt_080.pt')
    train_step(s, progress, f'{arm}, seed {seed}: mixed stage from {start}', mixed_command(s, arm, seed),
               f'{out}/mixed/{name}', plan['mixed_iters'], log)
    train_step(s, progress, f'{arm}, seed {seed}: finetune', finetune_command(s, arm, seed), f'{out}/{name}',
               plan['finetune_iters'], log)
    eval_step(s, progress, arm, seed, log)


def eval_step(s, progress, arm, seed, log):
    """The evaluation of a run. Done when its results.json is of the run's last step and measured what the
    study's eval command measures: the same tasks on the same items (eval.measured_as). eval.py replaces
    a results.json of the same items (of an earlier checkpoint, say) and keeps one of other items (another
    --limit, run by hand): that one stops the study with what to move away."""
    folder, cmd = f"{s['out']}/{arm}_seed{seed}", eval_command(s, arm, seed)
    results = f'{folder}/results.json'
    if os.path.exists(results) and not progress.failed:
        try:
            other = not measured_as(load_results(folder), cmd[2:])
        except EvalError as e:  # load_results names the file and the cause
            return progress.fail(f"{e}; remove {results} to evaluate the run again")
        if other:
            return progress.fail(f"{results} holds an evaluation of other items than the study's (another "
                                 f"--limit, --seed or task list; or the study's data is unreadable): "
                                 f"move it away to evaluate the run again")
    progress.run(f'{arm}, seed {seed}: evaluation', cmd, log, done_when=results, threads=s['threads'],
                 complete=lambda: load_results(folder)['step'] == s['plan']['finetune_iters'])


def compare_runs(s, finals):
    """eval.py --compare over the final runs: (its markdown table, the command)."""
    compare = [s['py'], 'eval.py', '--compare=' + ','.join(finals), f"--plot={s['out']}/scores.png"]
    table = subprocess.run(compare, capture_output=True, text=True)
    if table.returncode != 0:
        sys.exit(f"comparison failed: {table.stderr}")
    return '\n'.join(line for line in table.stdout.splitlines() if line.startswith('|')), compare


def plot_losses(s):
    """The train loss curves of each stage: loss_text.png, loss_mixed.png, loss_finetune.png."""
    out = s['out']
    curve = lambda folder: loss_curve(f'{folder}/log.jsonl')
    line_chart({'text': curve(f'{out}/text')}, f'{out}/loss_text.png', 'text stage: train loss')
    for stage, folder in (('mixed', f'{out}/mixed'), ('finetune', out)):
        curves = {f'{arm}_seed{seed}': curve(f'{folder}/{arm}_seed{seed}') for arm, seed in s['runs']}
        line_chart(curves, f'{out}/loss_{stage}.png', f'{stage} stage: train loss per arm and seed')


def main(argv=None):
    s = resolve(configurator.parse(DEFAULTS, argv, 'study.py'))
    out, runs = s['out'], s['runs']
    os.makedirs(os.path.join(out, 'logs'), exist_ok=True)
    progress = Progress(3 + 3 * len(runs) + 1)
    shared_steps(s, progress)
    if progress.failed:
        sys.exit(progress.failed)
    progress.new_phase()
    pipelines = [lambda a=arm, e=seed: pipeline(s, progress, a, e) for arm, seed in runs]
    side_by_side(pipelines, s['jobs'], progress)
    if progress.failed:
        sys.exit(progress.failed)
    progress.start('comparison table and plots')
    finals = [f'{out}/{arm}_seed{seed}' for arm, seed in runs]
    table, compare = compare_runs(s, finals)
    print(table)
    plot_losses(s)
    # row name -> the commands behind it, in table order
    shared = [world_command(s), tower_command(s), text_command(s)]
    commands = {f'{arm}_seed{seed}': shared + [mixed_command(s, arm, seed), finetune_command(s, arm, seed),
                                               eval_command(s, arm, seed)] for arm, seed in runs}
    commands['comparison'] = [compare]
    write_report(out, table, finals, commands, s['seeds'], time.time() - progress.t0, s['data'],
                 progress.skipped, s['budget'])
    print(f"wrote {out}/results.md, {out}/scores.png, {out}/loss_text.png, {out}/loss_mixed.png, "
          f"{out}/loss_finetune.png ({(time.time() - progress.t0) / 60:.1f} min)")


def sampling_error(results, group):
    """One standard error of a run's Stable Score that comes from the size of its test sets alone
    (binomial, per task, scaled as the score scales the accuracy): scores on a few hundred questions
    move by this much under any change, so a smaller gap is noise whatever the seeds say."""
    tasks = [t for t in results['tasks'].values()
             if t.get('group') == group and t.get('acc') is not None and t.get('n')]
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
            per_type = report['per_type']
            cells = [f"{100 * per_type[t]['accuracy']:.1f}" if t in per_type else '-' for t in types]
            lines.append(f"| {name} | " + ' | '.join(cells) + ' |')
    return lines


def blind_answerer(baselines):
    """The shapes VQA scores of the blind and unbound answerers (world_baselines), as sentences."""
    if not baselines:
        return ''
    blind, unbound = baselines
    return (f" An answerer blind to the image (the most frequent training answer per question type) scores "
            f"{100 * blind['accuracy']:.1f} % on shapes VQA; per question type, chance is 1 / the number of "
            "answers." + (f" One that knows what each scene holds but not which object has which scores "
                          f"{100 * unbound['accuracy']:.1f} %." if unbound else ''))


def stable_members(finals):
    """What each Stable Score averaged, as the first run's results.json records it."""
    scores = load_results(finals[0]).get('stable_scores') or {}
    parts = [f"{kind.capitalize()} Stable over {', '.join(scores[kind]['members'])}"
             for kind in ('vision', 'text') if scores.get(kind, {}).get('members')]
    return f": {'; '.join(parts)}" if parts else ''


def machine():
    """Where the runs ran, in words: the GPU train.py and eval.py pick by default, or the CPU's cores."""
    import platform
    import torch
    cores = f"{os.cpu_count()} CPU cores ({platform.machine()})"
    where = f"one {torch.cuda.get_device_name(0)}, {cores}" if torch.cuda.is_available() else cores
    return f"{where}, PyTorch {torch.__version__}"


def write_report(out, table, finals, commands, seeds, seconds, data, skipped, budget):
    shown = lambda cmd: shlex.join(['python'] + cmd[1:])  # the interpreter's path is this machine's
    baselines = world_baselines(data)  # world.json, read once for the sentence and the per-type table
    title = '# The study on the shapes world' + (
        f' at {budget}x the default budget (--budget={budget})' if budget > 1 else '')
    written = f'Written {time.strftime("%Y-%m-%d")} on {machine()}' + (
        f'; {skipped} steps were skipped, their outputs existed (they may have run elsewhere).'
        if skipped else '.')
    about = (f'{len(seeds)} seed(s) ({", ".join(map(str, seeds))}) vary the mixed and finetune stages; the '
             'shapes world, the tiny SigLIP tower and the text LM are shared by every run. Wall time: '
             f'{seconds / 60:.1f} min. Scores in %, mean ± sample std over seeds; Stable Scores as '
             'docs/design.md defines them (VQA chance 0, multiple-choice chance 1/#choices)'
             + stable_members(finals) + '.' + blind_answerer(baselines))
    lines = ([title, '', written, '', about, '', table, '',
              '## Differences against the default recipe (frozen encoder, 2-layer MLP)', '']
             + spread_verdicts(finals)
             + ['', '## Shapes VQA accuracy per question type (%, mean over seeds)', '']
             + question_type_table(finals, baselines)
             + ['', '![scores](scores.png)', '', '![text loss](loss_text.png)', '',
                '![mixed loss](loss_mixed.png)', '', '![finetune loss](loss_finetune.png)', '',
                '## Commands behind each row', ''])
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
