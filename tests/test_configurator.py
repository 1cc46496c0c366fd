import subprocess
import sys

import pytest

from configurator import ConfigError, apply_config

DEFAULTS = dict(batch_size=16, learning_rate=3e-3, out_dir='out', compile=False, init_from='scratch',
                milestones=(0.0, 0.8), vision_init=None)


def test_overrides_and_files_apply_in_order(tmp_path):
    cfg = tmp_path / 'a.py'
    cfg.write_text("batch_size = 8\nlearning_rate = batch_size * 1e-4\nimport math\n_helper = 3\n")
    config = apply_config(DEFAULTS, [str(cfg), '--batch_size=4', '--out_dir=out/x', '--compile=True'])
    assert config['batch_size'] == 4
    assert config['learning_rate'] == pytest.approx(8e-4)  # the file saw its own earlier assignment
    assert config['out_dir'] == 'out/x' and config['compile'] is True
    assert 'math' not in config and '_helper' not in config


def test_int_accepted_for_float_and_none_default_takes_anything():
    config = apply_config(DEFAULTS, ['--learning_rate=1', '--vision_init=[1, 2]', '--milestones=[0.5]'])
    assert config['learning_rate'] == 1.0 and type(config['learning_rate']) is float
    assert config['vision_init'] == [1, 2]
    assert config['milestones'] == (0.5,)


def test_string_key_keeps_text_as_written():
    assert apply_config(DEFAULTS, ['--init_from=80'])['init_from'] == '80'


def test_unknown_key_names_closest():
    with pytest.raises(ConfigError, match=r"unknown config key 'batchsize'.*batch_size"):
        apply_config(DEFAULTS, ['--batchsize=3'])


def test_unknown_key_in_file_names_file(tmp_path):
    cfg = tmp_path / 'b.py'
    cfg.write_text("learning_rat = 1e-3\n")
    with pytest.raises(ConfigError, match=r"b\.py: unknown config key 'learning_rat'.*learning_rate"):
        apply_config(DEFAULTS, [str(cfg)])


def test_type_mismatch_names_key_type_and_value():
    with pytest.raises(ConfigError, match=r"'batch_size' expects int .*got str 'big'"):
        apply_config(DEFAULTS, ['--batch_size=big'])
    with pytest.raises(ConfigError, match=r"'compile' expects bool"):
        apply_config(DEFAULTS, ['--compile=1'])
    with pytest.raises(ConfigError, match=r"'batch_size' expects int .*got float 2.5"):
        apply_config(DEFAULTS, ['--batch_size=2.5'])


def test_malformed_argument_and_missing_file():
    with pytest.raises(ConfigError, match="malformed argument '--batch_size'"):
        apply_config(DEFAULTS, ['--batch_size'])
    with pytest.raises(ConfigError, match="config file not found: 'nope.py'"):
        apply_config(DEFAULTS, ['nope.py'])


def test_broken_config_file_names_it(tmp_path):
    cfg = tmp_path / 'broken.py'
    cfg.write_text("batch_size = = 3\n")
    with pytest.raises(ConfigError, match="broken.py: SyntaxError"):
        apply_config(DEFAULTS, [str(cfg)])


def test_help_lists_every_key_and_exits_zero():
    out = subprocess.run([sys.executable, 'train.py', '--help'], capture_output=True, text=True)
    assert out.returncode == 0
    for key in ('batch_size', 'learning_rate', 'out_dir', 'init_from', 'attention'):
        assert key in out.stdout


def test_cli_error_is_a_message_not_a_traceback():
    out = subprocess.run([sys.executable, 'train.py', '--batch_sise=3'], capture_output=True, text=True)
    assert out.returncode != 0
    assert "config error" in out.stderr and "batch_size" in out.stderr and "Traceback" not in out.stderr
