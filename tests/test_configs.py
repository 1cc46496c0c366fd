"""The config layout: one base per stage and size, then overlays that own a few keys each. An arm
overlay (config/arm_*.py) owns the encoder and projector, a start overlay (config/start_*.py) the text
milestone, the learning-rate peak and the warmup; they commute, and out_dir's fields keep every run
in a folder of its own. A budget overlay (config/text_*_1x.py) turns the paper's 150x text run into the
1x one. The budgets are the paper's: 4.3T / 237B text tokens, 28B / 1.6B mixed tokens from any start."""
import ast
import glob
import itertools
import os

import pytest
import torch

import train
from configurator import ConfigError, apply_config, config_keys
from model import LM, LM_PRESETS, LMConfig, lr_at

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = ('1b', '79m')
BASES = {'text': ['text_1b', 'text_79m', 'tiny_text'], 'mixed': ['mixed_1b', 'mixed_79m', 'tiny_mixed'],
         'finetune': ['finetune_1b', 'finetune_79m', 'tiny_finetune']}
STARTS = ['start_080', 'start_100']
DCLM_STARTS = ['from_dclm_1b']  # a start from a downloaded folder, not from the base's text run
BUDGETS = {'text_1b': 'text_1b_1x', 'text_79m': 'text_79m_1x'}  # text base -> its 1x overlay
ARMS = ['arm_unfrozen', 'arm_mlp1']
ARM_KEYS = {'freeze_vision', 'projector', 'vision_lr'}
START_KEYS = {'init_from', 'learning_rate', 'warmup_iters'}
DCLM_KEYS = START_KEYS | {'text_data', 'caption_data', 'instruct_data'}  # DCLM-1B reads NeoX-tokenised data
DCLM_WARMUP = 5000 / 53406  # DCLM's 1B-1x warmup, as a fraction of the 1B mixed budget
# tokens per run: text 150x (the paper's) and 1x (Chinchilla's 20 per parameter), mixed from any start
TEXT_TOKENS = {'1b': 4.3e12, '79m': 237e9}
TEXT_1X_TOKENS = {'1b': 28e9, '79m': 1.6e9}
MIXED_TOKENS = {'1b': 28e9, '79m': 1.6e9}


def path(name):
    return os.path.join(ROOT, 'config', f'{name}.py')


def load(*names):
    """Config files by name, and --key=value arguments, in the order given."""
    return apply_config(config_keys(vars(train)), [n if n.startswith('--') else path(n) for n in names])


def tokens(config):
    """Token positions a run trains on: steps x rows per step (over all GPUs) x row length."""
    return config['max_iters'] * config['batch_size'] * config['gradient_accumulation_steps'] * \
        config['block_size']


def overrides_to_1x(name):
    """The --init_from and --out_dir a base's header gives for the 1x chain (the words naming a _1x
    folder), quotes removed."""
    words = ' '.join(line for line in open(path(name)) if line.startswith('#')).replace("'", '').split()
    found = {w[2:].split('=', 1)[0]: w for w in words if w.startswith('--') and '_1x/' in w}
    assert set(found) == {'init_from', 'out_dir'}, (name, found)
    return [found['init_from'], found['out_dir']]


def fill(config):
    """(out_dir, init_from) with their fields filled in, by the rule the configs are written to:
    {vision} 'frozen'/'unfrozen' from freeze_vision, {projector}; then from init_from {start} (the
    milestone ckpt_NNN.pt -> NNN, else the file's name) and {parent} (the folder holding it)."""
    fields = dict(vision='frozen' if config['freeze_vision'] else 'unfrozen', projector=config['projector'])
    init_from = config['init_from'].format(**fields)
    name = os.path.basename(init_from)
    name = name[:-len('.pt')] if name.endswith('.pt') else name
    fields.update(start=name[len('ckpt_'):] if name.startswith('ckpt_') else name,
                  parent=os.path.basename(os.path.dirname(init_from)))
    return config['out_dir'].format(**fields), init_from


def combinations():
    """Every base with every overlay it takes: start overlays after mixed bases, arm overlays after mixed
    and finetune bases (none, one, or both arms)."""
    arm_sets = [()] + [(a,) for a in ARMS] + [tuple(ARMS)]
    for base in BASES['text']:
        yield (base,)
    for base, budget in BUDGETS.items():
        yield (base, budget)
    for base in BASES['mixed']:
        for start in [()] + [(s,) for s in STARTS]:
            for arms in arm_sets:
                yield (base,) + start + arms
    for base in BASES['finetune']:
        for arms in arm_sets:
            yield (base,) + arms


def assigned(name):
    """The config keys a file assigns (private names and imports aside), whatever the values."""
    tree = ast.parse(open(path(name)).read())
    return {t.id for node in ast.walk(tree) if isinstance(node, ast.Assign) for t in node.targets
            if isinstance(t, ast.Name) and not t.id.startswith('_')}


def test_every_config_file_has_its_place_in_the_layout():
    files = {os.path.splitext(os.path.basename(p))[0] for p in glob.glob(path('*'))}
    assert files == (set(sum(BASES.values(), [])) | set(STARTS) | set(DCLM_STARTS) | set(ARMS)
                     | set(BUDGETS.values()))


@pytest.mark.parametrize('names', list(combinations()), ids='+'.join)
def test_every_base_and_overlay_combination_applies_to_train_py(names):
    config = load(*names)
    stage = next(s for s, bases in BASES.items() if names[0] in bases)
    assert config['stage'] == stage
    out_dir, init_from = fill(config)
    assert '{' not in out_dir + init_from
    if stage == 'mixed':
        assert config['vision_init'] and config['caption_data']
        milestone = 'ckpt_100.pt' if 'start_100' in names else 'ckpt_080.pt'
        assert os.path.basename(init_from) == milestone
        # from the same text run as the base: the start overlays serve every size
        assert os.path.dirname(init_from) == os.path.dirname(load(names[0])['init_from'])
    if stage == 'finetune':
        assert config['instruct_data'] and init_from.endswith('ckpt.pt')
    assert config['projector'] == ('mlp1' if 'arm_mlp1' in names else 'mlp2')
    assert config['freeze_vision'] == ('arm_unfrozen' not in names)


def test_every_file_names_its_usage():
    for name in sum(BASES.values(), []) + STARTS + DCLM_STARTS + ARMS + list(BUDGETS.values()):
        text = open(path(name)).read()
        header = [line for line in text.splitlines() if line.startswith('#')]
        assert any('train.py config/' in line for line in header), name
        assert all(len(line) <= 110 for line in text.splitlines()), name
    for name in sum(BASES.values(), []):  # a base says how its out_dir comes about
        assert any(line.startswith('#') and 'out_dir:' in line for line in open(path(name))), name


def test_overlays_own_only_their_keys():
    for arm in ARMS:
        assert assigned(arm) <= ARM_KEYS, arm
    for start in STARTS:
        assert assigned(start) <= START_KEYS, start
    for start in DCLM_STARTS:
        assert assigned(start) <= DCLM_KEYS, start
    for base in BASES['mixed'] + BASES['finetune']:
        config = load(base)
        for arm in ARMS:
            changed = {k for k, v in load(base, arm).items() if v != config[k]}
            assert changed and changed <= ARM_KEYS, (base, arm, changed)
    for base in BASES['mixed']:
        config = load(base)
        for start in STARTS + DCLM_STARTS:
            changed = {k for k, v in load(base, start).items() if v != config[k]}
            assert changed <= (START_KEYS if start in STARTS else DCLM_KEYS), (base, start, changed)
    assert not load('mixed_1b', 'arm_unfrozen')['freeze_vision']
    assert load('mixed_1b', 'arm_mlp1')['projector'] == 'mlp1'


def test_overlays_commute():
    for base in BASES['mixed']:
        for overlays in itertools.product(STARTS + DCLM_STARTS, ARMS):
            assert load(base, *overlays) == load(base, *reversed(overlays)), (base, overlays)
        assert load(base, *ARMS) == load(base, *reversed(ARMS))
        assert load(base, 'start_100', *ARMS) == load(base, ARMS[1], 'start_100', ARMS[0])


def test_start_080_is_the_default_start():
    for size in SIZES:
        base = load(f'mixed_{size}')
        assert load(f'mixed_{size}', 'start_080') == base
        assert base['init_from'] == os.path.join(load(f'text_{size}')['out_dir'], 'ckpt_080.pt')
        assert base['warmup_iters'] == 0
    # the study's base keeps the after-text arm's 30 warmup steps (used only from the 100 % milestone)
    tiny = load('tiny_mixed')
    assert {k for k, v in load('tiny_mixed', 'start_080').items() if v != tiny[k]} == {'warmup_iters'}
    assert tiny['init_from'] == os.path.join(load('tiny_text')['out_dir'], 'ckpt_080.pt')


def test_start_100_rewarms_as_dclm_1b_1x():
    at_1b = load('mixed_1b', 'start_100')
    assert at_1b['warmup_iters'] == 5000 and at_1b['learning_rate'] == 3e-3
    assert at_1b['init_from'] == 'out/text_1b/ckpt_100.pt'
    at_79m = load('mixed_79m', 'start_100')
    assert at_79m['learning_rate'] == 3e-3 and at_79m['init_from'] == 'out/text_79m/ckpt_100.pt'
    # the same fraction of the 79M budget, to the nearest step
    assert abs(at_79m['warmup_iters'] - DCLM_WARMUP * at_79m['max_iters']) <= 0.5
    assert 0 < at_79m['warmup_iters'] < at_1b['warmup_iters']


def test_a_start_overlay_refuses_a_base_of_another_stage():
    for base in ('finetune_1b', 'text_1b'):
        with pytest.raises(ConfigError, match='start_100.py: .*after a mixed-stage base'):
            load(base, 'start_100')


def test_every_arm_and_start_has_a_folder_of_its_own():
    """out_dir filled in for every size, arm and start: no two runs share a folder, and a finetune
    given an arm overlay starts from that arm's mixed-stage run and writes a folder of its own."""
    arms = [(), ('arm_unfrozen',), ('arm_mlp1',)]
    mixed_dirs, finetune_dirs = {}, {}
    for size, arm in itertools.product(('1b', '79m', 'tiny'), arms):
        base = 'tiny_mixed' if size == 'tiny' else f'mixed_{size}'
        finetune = 'tiny_finetune' if size == 'tiny' else f'finetune_{size}'
        for start in STARTS:
            mixed_dirs[size, arm, start] = fill(load(base, start, *arm))[0]
        out_dir, init_from = fill(load(finetune, *arm))
        assert init_from == os.path.join(mixed_dirs[size, arm, 'start_080'], 'ckpt.pt')
        finetune_dirs[size, arm] = out_dir
        # the after-text arm's finetune: its mixed-stage run, named on the command line
        after_text = os.path.join(mixed_dirs[size, arm, 'start_100'], 'ckpt.pt')
        finetune_dirs[size, arm, 'start_100'] = fill(
            apply_config(config_keys(vars(train)), [path(finetune)] + [path(a) for a in arm] +
                         [f'--init_from={after_text}']))[0]
    folders = list(mixed_dirs.values()) + list(finetune_dirs.values())
    assert len(set(folders)) == len(folders), sorted(folders)
    assert mixed_dirs['1b', (), 'start_080'] == 'out/mixed_1b/080_frozen_mlp2'
    assert mixed_dirs['1b', (), 'start_100'] == 'out/mixed_1b/100_frozen_mlp2'
    assert mixed_dirs['79m', ('arm_unfrozen',), 'start_080'] == 'out/mixed_79m/080_unfrozen_mlp2'
    assert finetune_dirs['1b', ('arm_mlp1',)] == 'out/finetune_1b/080_frozen_mlp1'
    assert finetune_dirs['1b', (), 'start_100'] == 'out/finetune_1b/100_frozen_mlp2'


def test_the_study_arms_are_the_arm_overlays_settings():
    """study.py spells its arms as overrides of config/tiny_mixed.py; they agree with the overlays."""
    from study import ARMS as STUDY_ARMS
    overlays = {'frozen_mlp2': (), 'unfrozen_mlp2': ('arm_unfrozen',), 'frozen_mlp1': ('arm_mlp1',),
                'after_text_frozen_mlp2': ()}
    assert set(STUDY_ARMS) == set(overlays)
    for arm, names in overlays.items():
        config = load('tiny_mixed', *names)
        settings = {k: v for k, v in STUDY_ARMS[arm].items() if k != 'start'}
        assert set(settings) == {'freeze_vision', 'projector'}
        assert settings == {k: config[k] for k in settings}


def test_the_text_runs_are_the_papers_150x_chinchilla():
    """Table 2: 1B at 4.3T tokens, learning rate 1e-2, 5,000 warmup steps, 256 x 2048 per step; 79M at
    237B tokens with its own batch and learning rate. Both are 150 x 20 tokens per parameter."""
    for size in SIZES:
        config = load(f'text_{size}')
        assert abs(tokens(config) / TEXT_TOKENS[size] - 1) < 1e-3, (size, tokens(config))
        with torch.device('meta'):
            n_params = LM(LMConfig(**LM_PRESETS[size])).num_params(exclude_embedding=False)
        assert abs(TEXT_TOKENS[size] / (150 * 20 * n_params) - 1) < 0.01, size
    at_1b = load('text_1b')
    assert (at_1b['learning_rate'], at_1b['warmup_iters']) == (1e-2, 5000)
    assert (at_1b['batch_size'] * at_1b['gradient_accumulation_steps'], at_1b['block_size']) == (256, 2048)
    assert at_1b['max_iters'] == round(4.3e12 / (256 * 2048))
    at_79m = load('text_79m')
    rows = at_79m['batch_size'] * at_79m['gradient_accumulation_steps']
    assert (rows, at_79m['block_size'], at_79m['learning_rate']) == (512, 2048, 3e-3)


def test_the_1x_overlays_are_chinchillas_budget_in_a_folder_of_their_own():
    for size in SIZES:
        base, budget = f'text_{size}', BUDGETS[f'text_{size}']
        config, at_1x = load(base), load(base, budget)
        assert abs(tokens(at_1x) / TEXT_1X_TOKENS[size] - 1) < 1e-3, (size, tokens(at_1x))
        # the same run but its length: model, batch, peak, warmup, floor; its milestones elsewhere
        assert {k for k, v in at_1x.items() if v != config[k]} == {'max_iters', 'out_dir'}
        assert at_1x['out_dir'] == config['out_dir'] + '_1x'
        assert assigned(budget) == {'max_iters', 'out_dir'}
    assert load('text_1b', 'text_1b_1x')['max_iters'] == 53406  # the 1x run as it was
    assert load('text_79m', 'text_79m_1x')['max_iters'] == 1526


def test_a_1x_overlay_refuses_another_base():
    for names in (('text_79m', 'text_1b_1x'), ('text_1b', 'text_79m_1x'), ('mixed_1b', 'text_1b_1x'),
                  ('tiny_text', 'text_79m_1x')):
        with pytest.raises(ConfigError, match=f'{names[1]}.py: .*budget overlay goes after'):
            load(*names)


@pytest.mark.parametrize('size', SIZES)
def test_the_mixed_stage_is_28b_or_1_6b_tokens_from_any_start(size):
    """From either text run (150x by default, 1x by the header's override), either start, any arm: the
    same mixed budget, each run in a folder of its own; from 100 % re-warmed to 3e-3."""
    to_1x = overrides_to_1x(f'mixed_{size}')
    assert to_1x[0] == f'--init_from=out/text_{size}_1x/ckpt_080.pt'
    folders = set()
    for run, start, arms in itertools.product(([], to_1x), [(), ('start_100',)], [(), ('arm_unfrozen',)]):
        config = load(f'mixed_{size}', *run, *start, *arms)
        assert abs(tokens(config) / MIXED_TOKENS[size] - 1) < 1e-3, (run, start, tokens(config))
        out_dir, init_from = fill(config)
        text_run = load(f'text_{size}', *([BUDGETS[f'text_{size}']] if run else []))['out_dir']
        assert init_from == os.path.join(text_run, 'ckpt_100.pt' if start else 'ckpt_080.pt')
        if start:
            assert config['learning_rate'] == 3e-3
            warmup = {'1b': 5000, '79m': 286}[size]
            assert config['warmup_iters'] == round(DCLM_WARMUP * config['max_iters']) == warmup
        folders.add(out_dir)
    assert len(folders) == 8, sorted(folders)  # the 1x chain never writes into the 150x chain's folders
    # its finetune runs, by the finetune base's header: from the 1x mixed runs, into folders of their own
    config = load(f'finetune_{size}', *overrides_to_1x(f'finetune_{size}'))
    assert fill(config) == (f'out/finetune_{size}_1x/080_frozen_mlp2',
                            f'out/mixed_{size}_1x/080_frozen_mlp2/ckpt.pt')


def test_from_80_percent_the_mixed_stage_continues_the_150x_decay():
    """The peak the mixed base's header states: the 150x text schedule's rate at its 80 % milestone."""
    for size, stated in (('1b', '1.05e-3'), ('79m', '3.15e-4')):
        text = load(f'text_{size}')
        peak = lr_at(round(0.8 * text['max_iters']), text['max_iters'], text['learning_rate'], text['min_lr'],
                     text['warmup_iters'])
        assert f'({stated} at 80 % of the 150x' in ' '.join(open(path(f'mixed_{size}')).read().split())
        assert abs(peak / float(stated) - 1) < 0.005, (size, peak)


def test_the_dclm_start_rewarms_like_the_100_percent_start():
    for size, warmup in (('1b', 5000), ('79m', 286)):
        dclm, after_text = load(f'mixed_{size}', 'from_dclm_1b'), load(f'mixed_{size}', 'start_100')
        assert dclm['init_from'] == 'weights/DCLM-1B' and dclm['warmup_iters'] == warmup
        assert {k for k in dclm if dclm[k] != after_text[k]} == {'init_from', 'text_data', 'caption_data'}
        assert (dclm['text_data'], dclm['caption_data']) == ('data/dclm_neox', 'data/captions_384_neox')
        assert fill(load(f'mixed_{size}', 'from_dclm_1b', 'arm_unfrozen'))[0] == \
            f'out/mixed_{size}/DCLM-1B_unfrozen_mlp2'
    with pytest.raises(Exception, match='after a mixed or finetune base'):
        load('text_1b', 'from_dclm_1b')


def test_the_dclm_finetune_tunes_the_dclm_mixed_run_of_its_arm_on_neox_data():
    for arm in ('arm_unfrozen', 'arm_mlp1'):
        config = load('finetune_1b', 'from_dclm_1b', arm)
        assert config == load('finetune_1b', arm, 'from_dclm_1b')
        name = 'DCLM-1B_unfrozen_mlp2' if arm == 'arm_unfrozen' else 'DCLM-1B_frozen_mlp1'
        assert fill(config) == (f'out/finetune_1b/{name}', f'out/mixed_1b/{name}/ckpt.pt')
        assert (config['text_data'], config['instruct_data']) == ('data/dclm_neox', 'data/llava_665k_neox')
        # the mixed run it tunes is the one the mixed base + this overlay + the arm writes
        assert fill(load('mixed_1b', 'from_dclm_1b', arm))[0] == f'out/mixed_1b/{name}'
