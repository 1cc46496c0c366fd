"""tower.py and the study's tower step under faults: a kill -9 at any moment of the tower's
pre-training, followed by the same command or by study.py, gives the tower an uninterrupted run gives,
byte for byte; a tower folder left broken is never taken as done, and the study says in one line what
to remove."""
import hashlib
import os
import subprocess
import sys

import pytest

import study
from study import Progress, resolve, shared_steps, tower_command

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 6  # checkpoints at steps 2 and 4: a kill can meet one, two, or a finished tower
ONE_THREAD = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')  # as the study runs the tower

# Runs tower.py as `python tower.py ARGS` does, and sends itself SIGKILL at a chosen moment of its writes:
#   appears NAME N    right after the N-th rename onto out/NAME (the file has just appeared)
#   temporary NAME N  right after the N-th temporary file of out/NAME is created (empty)
#   written NAME N    right before the N-th rename onto out/NAME (its temporary file is whole)
KILLER = r'''
import builtins, os, runpy, signal, sys
point, name, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
met = []
def meet(kind, path):
    if kind == point and os.path.basename(str(path)).split('.tmp')[0] == name:
        met.append(path)
        if len(met) == nth:
            os.kill(os.getpid(), signal.SIGKILL)
real_open, real_replace = builtins.open, os.replace
def opened(file, mode='r', *args, **kwargs):
    f = real_open(file, mode, *args, **kwargs)
    if 'w' in mode and '.tmp' in os.path.basename(str(file)):
        meet('temporary', file)
    return f
def replaced(src, dst, *args, **kwargs):
    meet('written', dst)
    real_replace(src, dst, *args, **kwargs)
    meet('appears', dst)
builtins.open, os.replace = opened, replaced
sys.argv = ['tower.py'] + sys.argv[4:]
runpy.run_path('tower.py', run_name='__main__')
'''


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    from prepare_data import prepare_shapes
    out = str(tmp_path_factory.mktemp('world'))
    prepare_shapes(out, seed=0, workers=1, max_tokens=256, val_fraction=0.1, n_caption=120, n_instruct=10,
                   n_instruct_text=5, n_val=10, text_mb=0.01, n_mc=5)
    return out


def settings(world, out):
    """The study's settings for a world and an output folder, with a tower of STEPS steps."""
    s = resolve(dict(study.DEFAULTS, out=str(out), data=world))
    s['plan'] = dict(s['plan'], tower_steps=STEPS)
    return s


def digests(folder):
    """sha256 of every file in a folder, by name."""
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
            for name in sorted(os.listdir(folder))}


@pytest.fixture(scope='module')
def whole(world, tmp_path_factory):
    """The tower of an uninterrupted run of the study's tower command: sha256 by file name."""
    out = tmp_path_factory.mktemp('whole')
    result = subprocess.run(tower_command(settings(world, out)), cwd=ROOT, capture_output=True, text=True,
                            env=ONE_THREAD)
    assert result.returncode == 0, result.stderr[-3000:]
    found = digests(out / 'tower')
    assert list(found) == ['config.json', 'model.safetensors']
    return found


def run_study_tower(s):
    """The study's shared steps with the world and the text LM left out: the tower step as study.py runs
    it. -> (the progress, what it printed)."""
    progress = Progress(3)
    os.makedirs(os.path.join(s['out'], 'logs'), exist_ok=True)
    keep = study.world_command, study.train_step
    study.world_command = lambda s: [s['py'], '-c', '']
    study.train_step = lambda *args: None
    try:
        shared_steps(s, progress)
    finally:
        study.world_command, study.train_step = keep
    return progress


@pytest.mark.parametrize('point, name, nth, rerun', [
    ('appears', 'ckpt.pt', 1, 'tower.py'),  # the first resume checkpoint, at step 2
    ('temporary', 'ckpt.pt', 2, 'study.py'),  # the second one begun: the first is still there
    ('written', 'ckpt.pt', 1, 'tower.py'),  # the first one whole under its temporary name: none yet
    ('appears', 'config.json', 1, 'tower.py'),  # the tower's config, not yet its weights
    ('temporary', 'model.safetensors', 1, 'study.py'),  # the weights begun
    ('appears', 'model.safetensors', 1, 'study.py'),  # the tower whole, its resume checkpoint not removed
])
def test_kill_at_any_moment_then_a_rerun_gives_the_same_tower(world, whole, tmp_path, point, name, nth,
                                                               rerun, capsys):
    s = settings(world, tmp_path)
    folder = tmp_path / 'tower'
    command = tower_command(s) + ['--checkpoint_interval=2']
    killed = subprocess.run([sys.executable, '-c', KILLER, point, name, str(nth)] + command[2:], cwd=ROOT,
                            capture_output=True, text=True, env=ONE_THREAD)
    assert killed.returncode == -9, killed.stderr[-3000:]  # the kill point was met
    left = sorted(os.listdir(folder))
    # config.json is written before the weights: never weights without it
    assert 'model.safetensors' not in left or 'config.json' in left, left
    if rerun == 'tower.py':
        again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=ONE_THREAD)
        assert again.returncode == 0, again.stderr[-3000:]
    else:
        progress = run_study_tower(s)
        assert progress.failed is None, progress.failed
        printed = capsys.readouterr().out
        assert 'skip (exists' not in printed, printed  # a tower left by a kill is not done
    # the same bytes, and nothing else: no resume checkpoint, no temporary file
    assert digests(folder) == whole, left


def test_study_names_what_to_remove_from_a_broken_tower(world, whole, tmp_path, capsys):
    s = settings(world, tmp_path)
    folder = tmp_path / 'tower'
    weights = folder / 'model.safetensors'
    result = subprocess.run(tower_command(s), cwd=ROOT, capture_output=True, text=True, env=ONE_THREAD)
    assert result.returncode == 0, result.stderr[-3000:]
    config = (folder / 'config.json').read_text()
    for broken, problem in [(lambda: (folder / 'config.json').unlink(), 'no config.json beside'),
                            (lambda: (folder / 'config.json').write_text('{"vision_con'), 'not valid JSON'),
                            (lambda: (folder / 'config.json').write_text(config.replace(
                                '"num_hidden_layers": 4', '"num_hidden_layers": 3')), 'does not match')]:
        broken()
        before = weights.read_bytes()
        progress = run_study_tower(s)
        printed = capsys.readouterr().out
        # not taken as done, and not trained over: one line saying what is wrong and what to remove
        assert 'skip (exists' not in printed and 'tower.py' not in printed, printed
        message = progress.failed or ''
        assert problem in message and f'remove {weights}' in message, message
        assert '\n' not in message, message
        assert weights.read_bytes() == before
        # doing as it says gives the tower back
        weights.unlink()
        assert run_study_tower(s).failed is None
        assert digests(folder) == whole
        capsys.readouterr()
    # a whole tower is done: skipped
    assert run_study_tower(s).failed is None
    assert f'skip (exists: {weights})' in capsys.readouterr().out


def test_study_names_a_broken_resume_checkpoint(world, tmp_path):
    s = settings(world, tmp_path)
    folder = tmp_path / 'tower'
    os.makedirs(folder)
    (folder / 'ckpt.pt').write_bytes(b'not a checkpoint')
    message = run_study_tower(s).failed or ''
    assert f"{folder / 'ckpt.pt'}: cannot load checkpoint" in message, message
    assert f"remove {folder / 'ckpt.pt'}" in message and '\n' not in message, message
    # tower.py run by hand says the same in one line
    result = subprocess.run(tower_command(s), cwd=ROOT, capture_output=True, text=True, env=ONE_THREAD)
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith('siglip')]
    assert result.returncode != 0 and len(lines) == 1 and f"remove {folder / 'ckpt.pt'}" in lines[0], lines
