"""tower.py: the sigmoid loss, hard negatives, small-tower training and its figures, the saved
checkpoint as an HF SiglipModel, and the command line: stop and resume bit for bit, settings checks."""
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import tower
from tower import (SiglipModel, TextConfig, pad_captions, retrieval_accuracy, sigmoid_loss, swap_accuracy,
                   swap_one_word, train_tower, word_groups)
from vision import SiglipConfig, SiglipVisionTower, load_siglip, normalize, save_siglip

# -----------------------------------------------------------------------------
# small towers: the sigmoid loss, training, save / load


def test_sigmoid_loss_matches_plain_reference():
    torch.manual_seed(0)
    logits = torch.randn(5, 5, dtype=torch.float64) * 4
    expected = 0.0
    for i in range(5):
        for j in range(5):
            label = 1.0 if i == j else -1.0
            expected += math.log(1 + math.exp(-label * logits[i, j].item()))  # -log sigmoid(label * logit)
    assert abs(sigmoid_loss(logits).item() - expected / 5) < 1e-10


def test_sigmoid_loss_extra_columns_are_negatives():
    torch.manual_seed(0)
    logits = torch.randn(3, 7, dtype=torch.float64) * 4  # 3 pairs, then 4 false captions
    expected = sum(math.log(1 + math.exp((-1 if i == j else 1) * logits[i, j].item()))
                   for i in range(3) for j in range(7))
    assert abs(sigmoid_loss(logits).item() - expected / 3) < 1e-10


def test_swap_one_word_makes_one_word_false_captions():
    groups = [[10, 11, 12], [20, 21]]
    tokens = np.array([[10, 5, 20, 0, 0],    # two swappable words
                       [5, 6, 7, 0, 0],      # none: left out
                       [10, 11, 12, 0, 0],   # its group is used up: a swap would repeat a word, left out
                       [12, 21, 5, 0, 0]])
    group_of = {t: g for g in groups for t in g}
    for seed in range(20):
        fakes = swap_one_word(tokens, groups, np.random.default_rng(seed))
        assert fakes.shape == (2, 5)
        for row, fake in zip(tokens[[0, 3]], fakes):
            (i,) = np.flatnonzero(row != fake)  # exactly one position changed
            assert fake[i] in group_of[row[i]] and fake[i] not in row
    assert swap_one_word(tokens[1:3], groups, np.random.default_rng(0)).shape == (0, 5)


def test_word_groups_reads_single_token_words():
    from tokenizer import encode, get_tokenizer
    enc = get_tokenizer('shapes')
    (ids,) = word_groups(['circle,square,star'], 'shapes')
    assert ids == [encode(enc, ' circle')[0], encode(enc, ' square')[0], encode(enc, ' star')[0]]
    assert enc.decode(ids) == ' circle square star'
    with pytest.raises(ValueError, match="'circle' is 7 tokens in the 'bytes' tokenizer"):
        word_groups(['circle,square'], 'bytes')
    with pytest.raises(ValueError, match='at least two words'):
        word_groups(['circle'], 'shapes')


def test_model_logits_match_formula():
    torch.manual_seed(0)
    model = SiglipModel(SiglipConfig(16, 4, 32, 1, 2, 64), TextConfig(width=32, depth=1, heads=2, mlp_dim=64))
    assert model.logit_scale.item() == pytest.approx(math.log(10)) and model.logit_bias.item() == -10
    pixels, tokens = torch.randn(3, 3, 16, 16), torch.randint(0, 256, (3, 32))
    with torch.no_grad():
        img = model.vision_model.embed(pixels)
        txt = model.text_model(tokens)
        expected = torch.empty(3, 3)
        for i in range(3):
            for j in range(3):
                expected[i, j] = 10 * torch.dot(img[i], txt[j]) / (img[i].norm() * txt[j].norm()) - 10
        assert torch.allclose(model(pixels, tokens), expected, atol=1e-5)


COLOURS = {'red': (220, 30, 30), 'green': (30, 200, 40), 'blue': (30, 40, 220), 'yellow': (230, 220, 30),
           'cyan': (30, 220, 220), 'magenta': (220, 30, 220), 'white': (245, 245, 245), 'black': (10, 10, 10),
           'orange': (250, 140, 20), 'purple': (120, 30, 160), 'grey': (128, 128, 128),
           'brown': (120, 70, 20)}


def _colour_pairs(n, seed):
    """Noisy solid-colour images, each captioned with its colour (one per colour when n <= 12)."""
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    labels = np.arange(n) % len(names) if n <= len(names) else rng.integers(0, len(names), n)
    base = np.array([COLOURS[names[c]] for c in labels], dtype=np.int16)[:, None, None, :]
    images = np.clip(base + rng.integers(-25, 26, (n, 16, 16, 3)), 0, 255).astype(np.uint8)
    captions = [list(f"a {names[c]} picture".encode()) for c in labels]
    return images, captions


@pytest.fixture
def one_thread():
    # hundreds of tiny steps: a second thread gains little, and on a busy machine its spin-waits
    # make them ten times slower
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_training_learns_the_pairing_and_round_trips(tmp_path, one_thread):
    images, captions = _colour_pairs(512, seed=0)
    held_images, held_captions = _colour_pairs(12, seed=1)
    text = TextConfig(width=64, depth=1, heads=4, mlp_dim=128, max_len=24)
    torch.manual_seed(0)
    model = SiglipModel(SiglipConfig(16, 4, 64, 2, 4, 128), text)
    held_pixels = normalize(torch.from_numpy(held_images))
    held_tokens = torch.from_numpy(pad_captions(held_captions, text.max_len, text.pad_id))
    with torch.no_grad():
        before = sigmoid_loss(model(held_pixels, held_tokens)).item()
    model = train_tower(images, captions, model=model, steps=100, batch_size=32, lr=3e-3, warmup=10,
                        progress=False)
    with torch.no_grad():
        after = sigmoid_loss(model(held_pixels, held_tokens)).item()
    assert after < 0.3 * before
    assert retrieval_accuracy(model, held_images, held_captions) >= 0.75  # chance: 1/12

    save_siglip(model, tmp_path)
    tower = load_siglip(str(tmp_path))
    with torch.no_grad():
        for layer in (-2, -1, 0):
            assert torch.equal(tower(held_pixels, layer), model.vision_model(held_pixels, layer))
        assert torch.equal(tower.embed(held_pixels), model.vision_model.embed(held_pixels))


def _half_dark_pairs(n, seed):
    """Images of one of 64 colours with the left or the right half darkened; captions [colour, side] as
    token ids (100 + colour, 200 = left, 201 = right). Random captions of a batch are told apart by
    their colour: the in-batch negatives never ask for the side."""
    rng = np.random.default_rng(seed)
    colours, sides = rng.integers(0, 64, n), rng.integers(0, 2, n)
    levels = np.array([20, 90, 165, 235])
    rgb = np.stack([levels[colours // 16], levels[colours // 4 % 4], levels[colours % 4]], 1).astype(np.int16)
    images = rgb[:, None, None, :] + rng.integers(-8, 9, (n, 16, 16, 3))
    for image, side in zip(images, sides):
        image[:, 8 * side:8 * side + 8] //= 3
    captions = [[100 + int(c), 200 + int(s)] for c, s in zip(colours, sides)]
    return np.clip(images, 0, 255).astype(np.uint8), captions


def test_hard_negatives_teach_the_swapped_word(one_thread):
    images, captions = _half_dark_pairs(1024, seed=0)
    held_images, held_captions = _half_dark_pairs(200, seed=1)
    scores = []
    for swap_groups in ([[200, 201]], []):
        torch.manual_seed(0)
        model = SiglipModel(SiglipConfig(16, 4, 64, 2, 4, 128),
                            TextConfig(width=64, depth=1, heads=4, mlp_dim=128, max_len=4))
        model = train_tower(images, captions, model=model, steps=600, batch_size=32, lr=1e-3, warmup=10,
                            progress=False, swap_groups=swap_groups)
        accuracy, n = swap_accuracy(model, held_images, held_captions, [[200, 201]])
        assert n == 200
        scores.append(accuracy)
    # the true side above the other side (chance 0.5): learnt from the swapped captions, not without them
    assert scores[0] >= 0.9 and scores[1] <= 0.7, scores


def test_swap_accuracy_scores_every_swap():
    # captions [colour, word]; group {200, 201, 202}: each caption has two swaps, except the third
    # (201 and 202 both in it: one swap, 200) and the fourth (no group word: left out)
    torch.manual_seed(0)
    model = SiglipModel(SiglipConfig(16, 4, 32, 2, 2, 64),
                        TextConfig(width=32, depth=1, heads=2, mlp_dim=64, max_len=3))
    images, _ = _half_dark_pairs(4, seed=3)
    captions = [[100, 200], [101, 201], [201, 202], [103, 104]]
    swaps = [(0, [100, 201]), (0, [100, 202]), (1, [101, 200]), (1, [101, 202]), (2, [200, 202]),
             (2, [201, 200])]
    pixels = normalize(torch.from_numpy(images))
    pad = model.text_model.cfg.pad_id
    with torch.no_grad():  # each pair on its own: one image, one caption
        score = lambda i, c: model(pixels[i:i + 1], torch.tensor([c + [pad]])).item()
        expected = np.mean([score(i, captions[i]) > score(i, fake) for i, fake in swaps])
        accuracy, n = swap_accuracy(model, images, captions, [[200, 201, 202]])
    assert n == 3
    assert accuracy == pytest.approx(expected, abs=1e-6)
    # some of each, uneven: a flipped or wrong pairing shows
    assert 0 < expected < 1 and expected != 0.5, expected


def test_saved_checkpoint_is_an_hf_siglip_model(tmp_path):
    transformers = pytest.importorskip('transformers')
    torch.manual_seed(0)
    model = SiglipModel(SiglipConfig(16, 4, 32, 2, 2, 64), TextConfig(width=48, depth=1, heads=2, mlp_dim=96))
    with torch.no_grad():  # make the biases and the temperature count
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    save_siglip(model, tmp_path)
    hf = transformers.SiglipModel.from_pretrained(tmp_path, attn_implementation='eager').eval()
    images, captions = _colour_pairs(4, seed=2)
    pixels = normalize(torch.from_numpy(images))
    tokens = torch.from_numpy(pad_captions(captions, 32, 256))
    with torch.no_grad():
        out = hf(input_ids=tokens, pixel_values=pixels, return_loss=True)
        logits = model(pixels, tokens)
    assert (out.logits_per_image - logits).abs().max() <= 1e-4
    assert abs(out.loss.item() - sigmoid_loss(logits).item()) <= 1e-4


def test_train_tower_rejects_bad_pairs():
    images, captions = _colour_pairs(8, seed=0)
    with pytest.raises(ValueError, match='uint8'):
        train_tower(images.astype(np.float32), captions, vision=SiglipConfig(16, 4, 32, 1, 2, 64), steps=1,
                    progress=False)
    with pytest.raises(ValueError, match='caption 3 is empty'):
        train_tower(images, captions[:3] + [[]] + captions[4:], vision=SiglipConfig(16, 4, 32, 1, 2, 64),
                    steps=1, progress=False)
    with pytest.raises(ValueError, match='8 images but 7 captions'):
        train_tower(images, captions[:7], vision=SiglipConfig(16, 4, 32, 1, 2, 64), steps=1, progress=False)


def test_tower_progress_in_a_log_file_is_a_few_lines(capsys):
    # under pytest stderr is not a terminal, as in study.py's tower.log: the bar is drawn when it starts and
    # ends (and every 10 s), not at each of the 60 steps, and the last loss shown is the last step's
    images, captions = _colour_pairs(16, seed=0)
    train_tower(images, captions, vision=SiglipConfig(16, 4, 32, 1, 2, 64), text=TextConfig(width=32, depth=1,
                heads=2, mlp_dim=64, max_len=24), steps=60, batch_size=8, warmup=5)
    err = capsys.readouterr().err
    draws = [d for d in err.replace('\n', '\r').split('\r') if d.startswith('siglip')]
    assert len(draws) <= 4, draws
    assert '60/60' in draws[-1] and 'loss=' in draws[-1]



# -----------------------------------------------------------------------------
# the command line: a shapes world's captions, stop and resume, settings checks, signals

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = ['--steps=12', '--batch_size=8', '--lr=1e-3', '--swap_words=circle,square,triangle;red,blue,green',
       '--device=cpu', '--checkpoint_interval=5']


@pytest.fixture(scope='module')
def captions(tmp_path_factory):
    from prepare_data import prepare_shapes
    out = str(tmp_path_factory.mktemp('world'))
    prepare_shapes(out, seed=0, workers=1, max_tokens=256, val_fraction=0.1, n_caption=120, n_instruct=10,
                   n_instruct_text=5, n_val=10, text_mb=0.01, n_mc=5)
    return os.path.join(out, 'captions')


def run_tower(captions, out, *extra):
    tower.main([f'--captions={captions}', f'--out={out}', *RUN, *extra])


def read_bytes(folder):
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}


def test_stopped_run_resumes_to_the_same_tower(captions, tmp_path, one_thread, capsys):
    run_tower(captions, tmp_path / 'whole')
    whole = read_bytes(tmp_path / 'whole')
    assert list(whole) == ['config.json', 'model.safetensors']
    printed = capsys.readouterr().out
    assert 'held-out pairs' in printed and 'one-word swaps' in printed
    cut = tmp_path / 'cut'
    run_tower(captions, cut, '--stop_at_step=7')
    assert os.listdir(cut) == ['ckpt.pt']  # no model.safetensors: the tower is not done
    assert torch.load(cut / 'ckpt.pt', weights_only=True)['step'] == 7
    assert 'stop_at_step=7: saved' in capsys.readouterr().out
    run_tower(captions, cut, '--stop_at_step=7')  # the same command: resumes at 7, runs to the end
    assert read_bytes(cut) == whole  # bit for bit, and the resume checkpoint is gone
    assert isinstance(load_siglip(str(cut)), SiglipVisionTower)


def test_checkpoint_of_other_settings_is_a_one_line_error(captions, tmp_path, one_thread):
    run_tower(captions, tmp_path, '--stop_at_step=2')
    before = (tmp_path / 'ckpt.pt').read_bytes()
    swaps = "swap_words ['circle,square,triangle', 'red,blue,green'] there, ['circle,square'] here"
    for extra, differs in [('--lr=2e-3', 'lr 0.001 there, 0.002 here'),
                           ('--steps=13', 'steps 12 there, 13 here'),
                           ('--swap_words=circle,square', swaps)]:
        with pytest.raises(SystemExit) as exit:
            run_tower(captions, tmp_path, extra)
        message = str(exit.value)
        assert f"{tmp_path / 'ckpt.pt'}: a resume checkpoint of other settings" in message
        assert differs in message and '\n' not in message, message
    assert (tmp_path / 'ckpt.pt').read_bytes() == before and os.listdir(tmp_path) == ['ckpt.pt']


def test_command_line_errors(captions, tmp_path):
    for argv, message in [([f'--out={tmp_path}'], 'config error: --captions=... is required'),
                          ([f'--captions={captions}', f'--out={tmp_path}', '--preset=huge'],
                           "error: preset 'huge' is not one of"),
                          ([f'--captions={captions}', f'--out={tmp_path}', '--preset=base-patch16-224'],
                           "images are 48 px, preset 'base-patch16-224' takes 224 px"),
                          ([f'--captions={tmp_path}/none', f'--out={tmp_path}'], f'{tmp_path}/none'),
                          ([f'--captions={captions}', f'--out={tmp_path}', '--swap_words=circle'],
                           "swap group 'circle' needs at least two words"),
                          ([f'--captions={captions}', '--steps=ten'], "'steps' expects int")]:
        with pytest.raises(SystemExit) as exit:
            tower.main(argv)
        assert message in str(exit.value) and '\n' not in str(exit.value), (argv, str(exit.value))


def test_sigterm_saves_a_checkpoint_and_exits_0(captions, tmp_path):
    cmd = [sys.executable, 'tower.py', f'--captions={captions}', f'--out={tmp_path}', '--steps=100000',
           '--batch_size=8', '--checkpoint_interval=1', '--device=cpu']
    log = open(tmp_path / 'log.txt', 'w')
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, OMP_NUM_THREADS='1'))
    try:
        deadline = time.time() + 300
        while not (tmp_path / 'ckpt.pt').exists():  # written after the first step: the run is under way
            assert proc.poll() is None and time.time() < deadline, (tmp_path / 'log.txt').read_text()
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0, (tmp_path / 'log.txt').read_text()
    finally:
        proc.kill()
        log.close()
    printed = (tmp_path / 'log.txt').read_text()
    assert f'signal {int(signal.SIGTERM)}: saved' in printed, printed
    assert sorted(os.listdir(tmp_path)) == ['ckpt.pt', 'log.txt']  # no temporary file, no tower
    assert 1 <= torch.load(tmp_path / 'ckpt.pt', weights_only=True)['step'] < 100000
