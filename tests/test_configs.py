import glob
import os

import pytest

import train
from configurator import apply_config, config_keys

CONFIGS = sorted(glob.glob(os.path.join(os.path.dirname(os.path.dirname(__file__)), 'config', '*.py')))


@pytest.mark.parametrize('path', CONFIGS, ids=os.path.basename)
def test_every_config_applies_to_train_py(path):
    config = apply_config(config_keys(vars(train)), [path])
    assert config['stage'] in ('text', 'mixed', 'finetune')
    if config['stage'] == 'mixed':
        assert config['init_from'].endswith('ckpt_080.pt') and config['vision_init'] and config['caption_data']
    if config['stage'] == 'finetune':
        assert config['instruct_data'] and config['init_from'].endswith('ckpt.pt')


def test_ablation_arms_differ_only_where_they_should():
    load = lambda name: apply_config(config_keys(vars(train)), [f'config/{name}.py'])
    for size in ('1b', '79m'):
        frozen, unfrozen, mlp1 = load(f'frozen_{size}'), load(f'unfrozen_{size}'), load(f'mlp1_{size}')
        assert {k for k in frozen if frozen[k] != unfrozen[k]} == {'out_dir', 'freeze_vision'}
        assert {k for k in frozen if frozen[k] != mlp1[k]} == {'out_dir', 'projector'}
        assert frozen['freeze_vision'] and not unfrozen['freeze_vision'] and mlp1['projector'] == 'mlp1'
