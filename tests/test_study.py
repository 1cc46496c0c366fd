import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_fast_study_runs_end_to_end(tmp_path):
    out, data = tmp_path / 'out', tmp_path / 'data'
    result = subprocess.run([sys.executable, 'study.py', '--fast', '--out', str(out), '--data', str(data)],
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
    from prepare_data import ImageShards
    captions = ImageShards(str(data / 'captions'), 'train')
    longest = max(int(captions[i]['loss_mask'].sum()) - 1 for i in range(len(captions)))  # minus the closing EOT
    with open(out / 'tower' / 'config.json') as f:
        assert json.load(f)['text_config']['max_position_embeddings'] > longest
    report = (out / 'results.md').read_text()
    for arm in arms:
        assert arm in report
    assert 'Vision Stable' in report and 'python' in report and 'train.py config/tiny_mixed.py' in report
    for png in ('scores.png', 'loss_text.png', 'loss_mixed.png', 'loss_finetune.png'):
        assert (out / png).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    # a second run skips every finished step
    log = out / 'logs' / 'world.log'
    before = log.read_text()
    again = subprocess.run([sys.executable, 'study.py', '--fast', '--out', str(out), '--data', str(data)],
                           cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 0 and again.stdout.count('skip (exists') == 2 + 3 * len(arms)
    # the world step always runs (it checks the data's tokenizer) and keeps what it finds
    world = log.read_text()[len(before):]
    assert 'world already written, kept' in world and world.count('step skipped') == 3
