import json
import os
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import eval as ev
import plots
import sample
import tasks
from model import LM, VLM, LMConfig, lm_config, vlm_args
from tokenizer import TOKENIZERS, VQA_INSTRUCTION, chat_tokens, encode, get_tokenizer, vqa_prompt
from vision import SiglipConfig

EOT = TOKENIZERS['bytes']['eot_id']
IMAGE = TOKENIZERS['bytes']['image_id']
VISION = SiglipConfig(image_size=12, patch_size=4, width=24, depth=3, heads=2, mlp_dim=48)  # 9 patches
COLORS = {'red': (220, 30, 30), 'green': (30, 190, 40), 'blue': (30, 40, 220), 'yellow': (230, 220, 30)}
QUESTION = "what colour is this?"


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    # the models here are tiny: extra threads only add synchronisation (10-100x slower on a busy machine)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -----------------------------------------------------------------------------
# the VQA metric, against the published rules

@pytest.mark.parametrize('raw, expected', [
    ('two', '2'), ('None', '0'), ('ten', '10'), ('eleven', 'eleven'), ('Zero dogs', '0 dogs'),  # number words
    ('a dog', 'dog'), ('An apple', 'apple'), ('the cat', 'cat'), ('theater', 'theater'),  # articles
    ('yes/no', 'yes no'), ('t-shirt', 't shirt'), ('red, white', 'red white'), ('left ;right', 'left right'),
    ('1,000', '1000'), ('t-shirt 1,5', 'tshirt 15'),  # a comma between digits: all punctuation is deleted
    ('yes.', 'yes'), ('3.5', '3.5'), ('mr. smith', 'mr smith'), ('1.5.', '1.5'),  # periods
    ('dont', "don't"), ('Isnt', "isn't"), ('whats up', "what's up"), ("don't", "don't"),  # contractions
    ('yes\nno', 'yes no'), ('\tRed \n', 'red'), ('  Two  Dogs ', '2 dogs'),  # newlines, tabs, spaces, case
])
def test_normalize_answer_follows_the_official_rules(raw, expected):
    assert tasks.normalize_answer(raw) == expected


@pytest.mark.parametrize('matches, expected', [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (7, 1.0),
                                               (10, 1.0)])
def test_vqa_accuracy_is_the_leave_one_out_average(matches, expected):
    answers = ['cat'] * matches + ['dog'] * (10 - matches)
    assert tasks.vqa_accuracy('cat', answers) == pytest.approx(expected)


def test_vqa_accuracy_normalizes_prediction_and_answers_every_time():
    assert tasks.vqa_accuracy('Yes', ['yes'] * 10) == 1.0  # the documented deviation from the official script
    assert tasks.vqa_accuracy('Two.', ['2'] * 2 + ['three'] * 8) == pytest.approx(0.6)
    assert tasks.vqa_accuracy('3', ['2'] * 2 + ['three'] * 8) == 1.0
    with pytest.raises(ValueError):
        tasks.vqa_accuracy('yes', [])


def test_stable_scores_hand_computed():
    # (0.5 - 0.25) / 0.75 = 1/3 and (0.8 - 0) / 1 = 0.8 -> mean 0.5666...
    assert ev.stable_score([(0.5, 0.25), (0.8, 0.0)]) == pytest.approx((1 / 3 + 0.8) / 2)
    assert ev.stable_score([(0.25, 0.25)]) == 0.0  # at chance
    assert ev.stable_score([(0.2, 1 / 3)]) == pytest.approx(-0.2)  # below chance is negative
    assert ev.stable_score([]) is None


# -----------------------------------------------------------------------------
# multiple choice: readers and scores from given log-likelihoods

def test_acc_and_acc_norm_from_given_loglikelihoods():
    # a: -2 vs -6.5: acc 0; per char -2 vs -0.5: norm 1
    items = [dict(id='a', query='q', choices=['x', 'longer choice'], gold=1),
             dict(id='b', query='q', choices=['ab', 'cd', 'ef'], gold=0),          # both pick 0
             dict(id='c', query='q', choices=['one', 'two', 'six', 'ten'], gold=3)]  # both pick 2
    lls = [[-2.0, -6.5], [-1.0, -3.0, -5.0], [-9.0, -8.0, -1.0, -4.0]]
    metrics, predictions = tasks.score_mc(items, lls)
    assert [p['prediction'] for p in predictions] == [0, 0, 2]
    assert [p['prediction_norm'] for p in predictions] == [1, 0, 2]
    assert metrics['acc'] == pytest.approx(1 / 3)
    assert metrics['acc_norm'] == pytest.approx(2 / 3)
    assert metrics['chance'] == pytest.approx((1 / 2 + 1 / 3 + 1 / 4) / 3)
    assert metrics['n'] == 3


def arc_record(stem, texts, labels, key, id_='q1'):
    choices = [{'text': t, 'label': l} for t, l in zip(texts, labels)]
    return {'id': id_, 'question': {'stem': stem, 'choices': choices},
            'answerKey': key}


def test_arc_jsonl_labels_and_prompt(tmp_path):
    path = tmp_path / 'arc.jsonl'
    rows = [arc_record('Which is hot?', ['ice', 'fire', 'snow'], ['A', 'B', 'C'], 'B', 'q1'),
            arc_record('How many legs has a cat?', ['2', '4', '6', '8', '3'], ['1', '2', '3', '4', '5'], '2',
                       'q2')]
    path.write_text('\n'.join(json.dumps(r) for r in rows) + '\n\n')
    items, problems = tasks.load_mc(str(path))
    assert problems == []
    assert items[0] == dict(id='q1', query='Question: Which is hot?\nAnswer:',
                            choices=['ice', 'fire', 'snow'], gold=1)
    assert items[1]['gold'] == 1 and len(items[1]['choices']) == 5  # numeric labels: '2' is the second choice
    enc = get_tokenizer('bytes')
    context, continuation = ev.mc_requests(enc, items[:1])[1]
    assert context == [EOT] + list(b'Question: Which is hot?\nAnswer:') and continuation == list(b' fire')


def test_hf_parquet_and_generic_jsonl_give_the_same_items(tmp_path):
    pa = pytest.importorskip('pyarrow')
    import pyarrow.parquet as pq
    table = pa.table({'id': ['q1'], 'question': ['Which is hot?'],
                      'choices': [{'text': ['ice', 'fire', 'snow'], 'label': ['A', 'B', 'C']}],
                      'answerKey': ['B']})
    pq.write_table(table, tmp_path / 'arc.parquet')
    items, problems = tasks.load_mc(str(tmp_path / 'arc.parquet'))
    assert problems == []
    assert items == [dict(id='q1', query='Question: Which is hot?\nAnswer:', choices=['ice', 'fire', 'snow'],
                          gold=1)]
    generic = tmp_path / 'generic.jsonl'
    generic.write_text(json.dumps({'id': 'q1', 'query': 'Question: Which is hot?\nAnswer:',
                                   'choices': ['ice', 'fire', 'snow'], 'gold': 1}) + '\n')
    assert tasks.load_mc(str(generic))[0] == items


def test_bad_multiple_choice_lines_are_named_and_skipped(tmp_path):
    path = tmp_path / 'mc.jsonl'
    path.write_text('\n'.join([
        json.dumps({'query': 'Q1', 'choices': ['a', 'b', 'c'], 'gold': 2}),
        '{"query": "Q2", "choices": ["a", ',                                    # line 2: truncated JSON
        json.dumps(arc_record('stem', ['x', 'y', 'z'], ['A', 'B', 'C'], 'D')),  # line 3: key not a label
        json.dumps({'query': 'Q4', 'choices': ['a', 'b'], 'gold': 5}),         # line 4: gold out of range
        json.dumps({'query': 'Q5', 'choices': ['a', 'b', 'c', 'd'], 'gold': 0}),
    ]) + '\n')
    items, problems = tasks.load_mc(str(path))
    assert [it['query'] for it in items] == ['Q1', 'Q5']
    assert len(problems) == 3
    assert f"{path}:2: not a valid JSON line" in problems[0]
    assert f"{path}:3" in problems[1] and "answerKey 'D'" in problems[1]
    assert f"{path}:4" in problems[2] and "'gold'" in problems[2]


def test_batched_loglikelihoods_equal_one_sequence_at_a_time():
    torch.manual_seed(0)
    lm = LM(LMConfig(vocab_size=320, block_size=48, n_layer=2, n_head=2, n_embd=32)).eval()
    g = torch.Generator().manual_seed(1)
    requests = [(torch.randint(0, 256, (c,), generator=g).tolist(),
                 torch.randint(0, 256, (n,), generator=g).tolist())
                for c, n in [(5, 1), (12, 4), (3, 7), (20, 2), (9, 9)]]
    batched = ev.loglikelihoods(lm, requests, batch_size=3, pad_id=EOT)
    for (context, continuation), got in zip(requests, batched):
        seq = torch.tensor([context + continuation])
        logits, _ = lm(seq[:, :-1])
        targets = torch.full_like(seq[:, 1:], -100)
        targets[0, -len(continuation):] = seq[0, -len(continuation):]
        expected = -F.cross_entropy(logits[0], targets[0], ignore_index=-100, reduction='sum').item()
        assert got == pytest.approx(expected, abs=1e-4)


# -----------------------------------------------------------------------------
# open-ended VQA: batched generation, data reading, bad input

def tiny_vlm(seed=0, block_size=128):
    torch.manual_seed(seed)
    return VLM(lm_config('nano', block_size=block_size), VISION, image_id=IMAGE)


def test_batched_vqa_generation_equals_one_at_a_time(tmp_path):
    model = tiny_vlm(seed=3).eval()
    enc = get_tokenizer('bytes')
    questions = ['red?', 'what shape is the large object on the left?', 'how many?',
                 'is it blue or green or red?']
    prompts = [vqa_prompt(enc, q, model.num_patches) for q in questions]
    assert len({len(p) for p in prompts}) == 4
    images = torch.randint(0, 256, (4, 12, 12, 3), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    batched = ev.generate_batch(model, prompts, images, 12, EOT)
    alone = [ev.generate_batch(model, [p], images[i:i + 1], 12, EOT)[0] for i, p in enumerate(prompts)]
    assert batched == alone
    assert all(len(row) > 0 for row in alone)
    # the longest prompt leaves 128 - 121 = 7 new tokens; the others still get all 12 (a batch of their own)
    assert len(prompts[1]) == 121 and len(alone[1]) <= 7 and max(len(alone[i]) for i in (0, 2, 3)) == 12
    # one left-padded batch without the long prompt
    three = ev.generate_batch(model, [prompts[i] for i in (0, 2, 3)], images[[0, 2, 3]], 12, EOT)
    assert three == [alone[i] for i in (0, 2, 3)]
    # the same through answer_questions (image files, decoding), batch of 3 against batch of 1
    items = []
    for i, q in enumerate(questions):
        Image.fromarray(images[i].numpy()).save(tmp_path / f'{i:012d}.png')
        items.append(dict(question_id=i, question=q, image=str(tmp_path / f'{i:012d}.png')))
    problems = []
    assert (ev.answer_questions(model, enc, items, 3, 12, problems)
            == ev.answer_questions(model, enc, items, 1, 12, problems))
    assert problems == []


def write_vqa_set(folder, rows, extra_questions=(), bad_images=()):
    """rows: (question_id, image_id, question, answers, answer_type, image uint8 or None)."""
    os.makedirs(folder / 'images', exist_ok=True)
    questions, annotations = [], []
    for qid, image_id, question, answers, answer_type, image in rows:
        questions.append(dict(question_id=qid, image_id=image_id, question=question))
        annotations.append(dict(question_id=qid, image_id=image_id, answer_type=answer_type,
                                answers=[dict(answer=a, answer_id=i + 1) for i, a in enumerate(answers)]))
        if image is not None:
            Image.fromarray(image).save(folder / 'images' / f'{image_id:012d}.png')
    questions += [dict(question_id=qid, image_id=image_id, question=QUESTION)
                  for qid, image_id in extra_questions]
    for image_id in bad_images:
        (folder / 'images' / f'{image_id:012d}.png').write_bytes(b'this is not a png file')
    (folder / 'questions.json').write_text(json.dumps({'questions': questions}))
    (folder / 'annotations.json').write_text(json.dumps({'annotations': annotations}))


def solid(color, rng):
    image = np.array(COLORS[color], dtype=np.int64) + rng.integers(-20, 21, (12, 12, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def test_vqa_reader_finds_images_and_names_what_it_skips(tmp_path):
    rng = np.random.default_rng(0)
    rows = [(1, 1, 'q one', ['red'] * 10, 'other', solid('red', rng)),
            (2, 2, 'q two', ['blue'] * 10, 'other', None),  # no image file
            (3, 3, 'q three', ['2'] * 10, 'number', None)]  # image in the COCO name below
    write_vqa_set(tmp_path, rows, extra_questions=[(4, 1)])  # question 4 has no annotation
    Image.fromarray(solid('red', rng)).save(tmp_path / 'images' / 'COCO_val2014_000000000003.jpg')
    items, problems = tasks.load_vqa(str(tmp_path / 'questions.json'), str(tmp_path / 'annotations.json'),
                                  str(tmp_path / 'images'))
    assert [it['question_id'] for it in items] == [1, 3]
    assert items[1]['image'].endswith('COCO_val2014_000000000003.jpg') and items[1]['answer_type'] == 'number'
    assert len(problems) == 2
    assert 'question_id 2' in problems[0] and 'no image for image_id 2' in problems[0]
    assert 'question_id 4' in problems[1] and 'no annotation' in problems[1]


def test_limit_draws_a_fixed_seeded_subset(tmp_path):
    rows = [(i, i, f'q{i}', ['red'] * 10, 'other', None) for i in range(1, 21)]
    write_vqa_set(tmp_path, rows)
    load = lambda limit, seed: [it['question_id'] for it in tasks.load_vqa(
        str(tmp_path / 'questions.json'), str(tmp_path / 'annotations.json'), None, limit, seed)[0]]
    first = load(5, 0)
    assert len(first) == 5 and first == sorted(first) and first == load(5, 0)
    assert load(5, 1) != first
    assert load(0, 0) == list(range(1, 21)) == load(50, 0)


def test_results_file_missing_questions_and_malformed_entries(tmp_path):
    answers = [('yes', 'yes/no'), ('2', 'number'), ('red', 'other'), ('no', 'yes/no')]
    rows = [(i, i, f'q{i}', [w] * 10, t, None) for i, (w, t) in enumerate(answers, 1)]
    write_vqa_set(tmp_path / 'set', rows)
    predictions = [{'question_id': 1, 'answer': 'Yes'}, {'question_id': 2, 'answer': 'two'},
                   {'question_id': 4, 'answer': 'yes'}, {'question_id': 3}]  # 3 has no answer
    (tmp_path / 'preds.json').write_text(json.dumps(predictions))
    results = ev.main([f"--predictions={tmp_path / 'preds.json'}", f"--tasks=myvqa={tmp_path / 'set'}",
                       f"--out={tmp_path / 'scores.json'}"])
    task = results['tasks']['myvqa']
    assert task['n'] == 3 and task['skipped'] == 2
    assert any('entry 3' in p for p in task['skipped_examples'])
    assert any('question_id 3: no prediction' in p for p in task['skipped_examples'])
    assert task['acc'] == pytest.approx(2 / 3)
    assert task['by_answer_type'] == {'number': dict(acc=1.0, n=1), 'yes/no': dict(acc=0.5, n=2)}
    assert results['vision_stable_score'] == pytest.approx(2 / 3) and results['text_stable_score'] is None
    assert json.loads((tmp_path / 'scores.json').read_text()) == results


def test_a_missing_task_file_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit, match=r"multiple-choice file not found: .*nothing\.jsonl"):
        ev.main([f"--ckpt={tmp_path / 'ckpt.pt'}", f"--tasks=x={tmp_path / 'nothing.jsonl'}"])
    with pytest.raises(SystemExit, match="unknown task 'vqa3'"):
        ev.main([f"--ckpt={tmp_path / 'ckpt.pt'}", '--tasks=vqa3'])


# -----------------------------------------------------------------------------
# end to end: a tiny VLM trained on a trivially learnable VQA beats chance, an untrained one does not

def training_rows(enc):
    """Per colour: a VQA row (chat template, loss on the answer) and a caption row (loss on the caption)."""
    rows = {}
    for color in COLORS:
        vqa = chat_tokens(enc, [('user', f"{QUESTION}\n{VQA_INSTRUCTION}"), ('assistant', color)], n_image=9)
        caption = [EOT] + [IMAGE] * 9 + encode(enc, color) + [EOT]
        rows[color] = [vqa, (caption, [0] * 10 + [1] * (len(caption) - 10))]
    return rows


def save_checkpoint(model, path, step):
    args = vlm_args(model.lm.config, VISION, 'mlp2', -2, IMAGE, True)
    torch.save(dict(model=model.state_dict(), model_args=args, tokenizer='bytes',
                    config=dict(seed=0, out_dir=os.path.dirname(path)), step=step), path)


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp('runs')
    enc = get_tokenizer('bytes')
    model = tiny_vlm(seed=0)
    os.makedirs(root / 'untrained_s0')
    save_checkpoint(model, str(root / 'untrained_s0' / 'ckpt.pt'), 0)
    rows = [r for pair in training_rows(enc).items() for r in [(pair[0], x) for x in pair[1]]]
    T = max(len(tokens) for _, (tokens, _) in rows)
    opt = model.configure_optimizers(0.0, 3e-3, (0.9, 0.95), 1e-8, 'cpu')
    rng = np.random.default_rng(0)
    model.train()
    steps = 100
    for _ in range(steps):
        pick = rng.integers(0, len(rows), 8)
        ids, targets, images = [], [], []
        for k in pick:
            color, (tokens, mask) = rows[k]
            pad = T - len(tokens)
            ids.append(tokens + [EOT] * pad)
            targets.append([t if m else -100 for t, m in zip(tokens[1:], mask[1:])] + [-100] * (pad + 1))
            images.append(solid(color, rng))
        _, loss = model(torch.tensor(ids), torch.tensor(targets), images=torch.from_numpy(np.stack(images)),
                        has_image=torch.ones(8, dtype=torch.bool))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    assert loss.item() < 0.1
    os.makedirs(root / 'trained_s0')
    save_checkpoint(model.eval(), str(root / 'trained_s0' / 'ckpt.pt'), steps)

    # an eval set: 2 questions per colour, plus a question without annotation, an image that will not
    # open, a malformed JSONL line in the multiple-choice file
    data = root / 'data'
    rng = np.random.default_rng(1)
    vqa_rows = [(100 + i, 100 + i, QUESTION, [color] * 10, 'other', solid(color, rng))
                for i, color in enumerate(list(COLORS) * 2)]
    vqa_rows.append((200, 200, QUESTION, ['red'] * 10, 'other', None))  # its image file is garbage
    write_vqa_set(data / 'vqa', vqa_rows, extra_questions=[(300, 100)], bad_images=[200])
    mc = [{'id': 'm1', 'query': 'Colour of snow:', 'choices': ['white', 'black', 'green'], 'gold': 0},
          {'id': 'm2', 'query': 'Two plus two is', 'choices': ['four', 'five', 'six', 'three'], 'gold': 0},
          {'id': 'm3', 'query': 'The sky is', 'choices': ['blue', 'red'], 'gold': 0}]
    lines = [json.dumps(r) for r in mc]
    lines.insert(1, '{"query": "broken", ')
    (data / 'mc.jsonl').write_text('\n'.join(lines) + '\n')
    return root, data, mc


def reference_mc_accuracy(ckpt, items):
    """acc from one full forward per choice: an independent check of the batched scorer."""
    from model import model_from_checkpoint
    model, _ = model_from_checkpoint(ckpt)
    enc = get_tokenizer('bytes')
    correct = 0
    for it in items:
        scores = []
        for choice in it['choices']:
            context, continuation = [EOT] + encode(enc, it['query']), encode(enc, ' ' + choice)
            seq = torch.tensor([context + continuation])
            logp = F.log_softmax(model.lm(seq[:, :-1])[0][0], -1)
            scores.append(sum(logp[len(context) - 1 + j, t].item() for j, t in enumerate(continuation)))
        correct += int(np.argmax(scores)) == it['gold']
    return correct / len(items)


def run_eval(root, data, run, capsys=None):
    tasks = f"colors={data / 'vqa'},facts={data / 'mc.jsonl'}"
    ev.main([f"--ckpt={root / run / 'ckpt.pt'}", f'--tasks={tasks}', '--batch_size=4', '--max_new_tokens=8'])
    return json.loads((root / run / 'results.json').read_text())


def test_trained_checkpoint_beats_chance_and_untrained_does_not(checkpoints, capsys):
    root, data, mc = checkpoints
    trained = run_eval(root, data, 'trained_s0')
    err = capsys.readouterr().err
    untrained = run_eval(root, data, 'untrained_s0')

    colors = trained['tasks']['colors']
    assert colors['kind'] == 'vqa' and colors['group'] == 'vision'
    # skipped: the garbage image and the question without annotation
    assert colors['n'] == 8 and colors['skipped'] == 2
    assert 'question_id 200' in err and 'question_id 300: no annotation' in err
    assert colors['acc'] > 0.85  # 4 colours: an answerer blind to the image scores 0.25 at best
    assert untrained['tasks']['colors']['acc'] < 0.1 and untrained['tasks']['colors']['chance'] == 0.0
    assert trained['vision_stable_score'] == pytest.approx(colors['acc'])

    predictions = json.loads((root / 'trained_s0' / 'predictions_colors.json').read_text())
    assert len(predictions) == 8 and set(predictions[0]) == {'question_id', 'answer'}
    expected = lambda p: ['red', 'green', 'blue', 'yellow'][(p['question_id'] - 100) % 4]
    assert sum(p['answer'] == expected(p) for p in predictions) >= 7

    facts = trained['tasks']['facts']
    assert facts['kind'] == 'mc' and facts['n'] == 3 and facts['skipped'] == 1
    assert facts['chance'] == pytest.approx((1 / 3 + 1 / 4 + 1 / 2) / 3)
    assert facts['acc'] == pytest.approx(reference_mc_accuracy(str(root / 'trained_s0' / 'ckpt.pt'), mc))
    text_score = (facts['acc'] - facts['chance']) / (1 - facts['chance'])
    assert trained['text_stable_score'] == pytest.approx(text_score)
    assert trained["step"] == 100 and trained['group'] == 'trained' and trained['seed'] == 0

    # the written results file scores the same through --predictions
    rescored = ev.main([f"--predictions={root / 'trained_s0' / 'predictions_colors.json'}",
                        f"--tasks=colors={data / 'vqa'}", f"--out={root / 'rescored.json'}"])
    assert rescored['tasks']['colors']['acc'] == pytest.approx(colors['acc'])


def test_sample_answers_and_captions_an_image(checkpoints, tmp_path):
    root, _, _ = checkpoints
    ckpt = str(root / 'trained_s0' / 'ckpt.pt')
    for color in ('green', 'yellow'):
        Image.fromarray(solid(color, np.random.default_rng(5))).save(tmp_path / 'photo.png')
        common = [f'--ckpt={ckpt}', f"--image={tmp_path / 'photo.png'}", '--temperature=0', '--num_samples=1']
        assert sample.main(common + [f"--prompt={QUESTION}\n{VQA_INSTRUCTION}"]) == [color]
        assert sample.main(common + ['--caption']) == [color]  # a bare flag
        assert sample.main(common + ['--caption=True']) == [color]
    (tmp_path / 'broken.png').write_bytes(b'not an image')
    with pytest.raises(SystemExit, match='broken.png'):
        sample.main([f'--ckpt={ckpt}', f"--image={tmp_path / 'broken.png'}", '--prompt=hi'])


def test_sample_settings_are_checked_in_one_line(capsys):
    for argv, message in [(['--caption'], "config error: --caption needs --image=FILE"),
                          (['--chat=yes'], "config error: --chat: config key 'chat' expects bool"),
                          (['--ckpt', 'x.pt'], "config error: malformed argument"),
                          (['--num_samples=0'],
                           "config error: --num_samples and --max_new_tokens must be >= 1")]:
        with pytest.raises(SystemExit) as e:
            sample.main(argv)
        assert str(e.value).startswith(message) and '\n' not in str(e.value), argv
    settings = sample.parse_settings(['--chat', '--image=a.png', '--caption', '--prompt=3'])
    assert settings['chat'] is True and settings['caption'] is True and settings['prompt'] == '3'


# -----------------------------------------------------------------------------
# comparing runs

def fake_results(folder, seed, vision, text, vqa, arc):
    os.makedirs(folder, exist_ok=True)
    tasks = dict(vqav2=dict(kind='vqa', group='vision', acc=vqa, chance=0.0),
                 arc_easy=dict(kind='mc', group='text', acc=arc, chance=0.25))
    results = dict(group=ev.run_group(folder.name), seed=seed, tasks=tasks, vision_stable_score=vision,
                   text_stable_score=text)
    (folder / 'results.json').write_text(json.dumps(results))


def three_runs(tmp_path):
    fake_results(tmp_path / 'frozen_s0', 0, 0.40, 0.20, 0.40, 0.40)
    fake_results(tmp_path / 'frozen_s1', 1, 0.50, 0.30, 0.50, 0.475)
    fake_results(tmp_path / 'mlp1-seed3', 3, 0.30, 0.10, 0.30, 0.325)


def compare_table(argv, capsys):
    ev.main(argv)
    return [l for l in capsys.readouterr().out.splitlines() if l.startswith('|')]


def test_compare_groups_seeds_and_plots(tmp_path, capsys):
    three_runs(tmp_path)
    runs = ','.join(str(tmp_path / name) for name in ('frozen_s0', 'mlp1-seed3', 'frozen_s1'))
    lines = compare_table([f'--compare={runs}', f"--plot={tmp_path / 'cmp.png'}"], capsys)
    assert lines[0] == '| config | seeds | Vision Stable | Text Stable | VQAv2 | ARC-easy |'
    # frozen: vision mean 45, sample std sqrt(((40-45)^2 + (50-45)^2) / 1) = 7.07
    assert lines[2] == '| frozen | 2 (0,1) | 45.0 ± 7.1 | 25.0 ± 7.1 | 45.0 ± 7.1 | 43.8 ± 5.3 |'
    assert lines[3] == '| mlp1 | 1 (3) | 30.0 | 10.0 | 30.0 | 32.5 |'
    with Image.open(tmp_path / 'cmp.png') as im:
        assert im.format == 'PNG' and im.width > 300
        pixels = np.asarray(im.convert('RGB'))
    assert (np.abs(pixels.astype(int) - plots.PALETTE[0]).sum(-1) == 0).sum() > 100  # frozen's bars are drawn
    assert (np.abs(pixels.astype(int) - plots.PALETTE[1]).sum(-1) == 0).sum() > 100


def test_compare_takes_globs_results_files_and_comma_lists_alike(tmp_path, capsys):
    three_runs(tmp_path)
    listed = compare_table([f"--compare={tmp_path / 'frozen_s0'},{tmp_path / 'frozen_s1'},"
                            f"{tmp_path / 'mlp1-seed3'}"], capsys)
    assert compare_table([f"--compare={tmp_path / '*'}"], capsys) == listed  # sorted within the glob
    mixed = f"--compare={tmp_path / 'frozen_s?'},{tmp_path / 'mlp1-seed3' / 'results.json'}"
    assert compare_table([mixed], capsys) == listed
    assert len(listed) == 4
    # the order of the items is the order of the rows
    swapped = compare_table([f"--compare={tmp_path / 'mlp1-*'},{tmp_path / 'frozen_*'}"], capsys)
    assert swapped[2:] == [listed[3], listed[2]]
    with pytest.raises(SystemExit, match=r"error: --compare: '.*nothing_\*' matches nothing"):
        ev.main([f"--compare={tmp_path / 'nothing_*'}"])


def test_load_results_reads_a_run_folder_or_a_results_file(tmp_path):
    three_runs(tmp_path)
    results = ev.load_results(str(tmp_path / 'frozen_s0'))
    assert results == ev.load_results(str(tmp_path / 'frozen_s0' / 'results.json'))
    assert results['seed'] == 0 and results['group'] == 'frozen'
    os.makedirs(tmp_path / 'empty')
    (tmp_path / 'bad.json').write_text('{"tasks": [')
    (tmp_path / 'other.json').write_text('[1, 2]')
    for path, message in [(tmp_path / 'empty', r"empty: no results\.json"),
                          (tmp_path / 'missing', r"missing: no such run folder"),
                          (tmp_path / 'bad.json', r"bad\.json: not a valid JSON file"),
                          (tmp_path / 'other.json', r"other\.json: not a results\.json written by eval\.py")]:
        with pytest.raises(ev.EvalError, match=message) as e:
            ev.load_results(str(path))
        assert '\n' not in str(e.value)


@pytest.mark.parametrize('argv, message', [
    ([], "give exactly one of --ckpt, --predictions, --compare (got none)"),
    (['--ckpt=a.pt', '--compare=b'],
     "give exactly one of --ckpt, --predictions, --compare (got --ckpt, --compare)"),
    (['--ckpt=a.pt', '--plot=x.png'], "--plot goes with --compare"),
    (['--ckpt=a.pt', '--limit=-1'], "--limit must be >= 0"),
    (['--ckpt=a.pt', '--batch_size=0'], "--batch_size must be >= 1"),
    (['--ckpt=a.pt', '--max_new_tokens=-1'], "--max_new_tokens must be >= 0 (0 = each task's own)"),
    (['--ckpt=a.pt', '--dtype=float8'], "--dtype must be one of float32, bfloat16, float16, got 'float8'"),
    (['--ckpt=a.pt', '--limit=some'], "--limit: config key 'limit' expects int"),
    (['--ckpt', 'a.pt'], "malformed argument '--ckpt'"),
])
def test_eval_settings_are_checked_in_one_line(argv, message):
    with pytest.raises(SystemExit) as e:
        ev.main(argv)
    assert str(e.value).startswith('config error: ' + message) and '\n' not in str(e.value)


def test_run_group_strips_the_seed_suffix():
    names = ('frozen_s0', 'frozen-s12', 'unfrozen_1b_seed3', 'mlp1-seed0', 'tiny_s', 'v2s1')
    assert [ev.run_group(n) for n in names] == ['frozen', 'frozen', 'unfrozen_1b', 'mlp1', 'tiny_s', 'v2s1']


def test_help_shows_the_tasks_and_every_key(capsys):
    for main, words in ((ev.main, ('Tasks (--tasks', 'shapes_root', 'max_new_tokens')),
                        (sample.main, ('--caption', 'temperature', 'top_k'))):
        with pytest.raises(SystemExit) as e:
            main(['--help'])
        out = capsys.readouterr().out
        assert e.value.code in (0, None) and all(w in out for w in words)


# -----------------------------------------------------------------------------
# the vision suite from one data root, the text suite through the bridge, the Stable Scores' records

def suite_root(root):
    """A data root with VQAv2, VizWiz, POPE random, RefCOCO and OCID-Ref in their released layouts; GQA,
    TextVQA, RefCOCO+, RefCOCOg and two POPE splits are missing."""
    rng = np.random.default_rng(2)
    os.makedirs(root / 'vqav2' / 'val2014')
    questions, annotations, vizwiz, pope = [], [], [], []
    os.makedirs(root / 'vizwiz' / 'val')
    for i, color in enumerate(list(COLORS) * 2):
        name = f'COCO_val2014_{i:012d}.jpg'
        Image.fromarray(solid(color, rng)).save(root / 'vqav2' / 'val2014' / name)
        questions.append(dict(question_id=i, image_id=i, question=QUESTION))
        annotations.append(dict(question_id=i, answer_type='other', answers=[dict(answer=color)] * 10))
        Image.fromarray(solid(color, rng)).save(root / 'vizwiz' / 'val' / f'VizWiz_val_{i:08d}.jpg')
        vizwiz.append(dict(image=f'VizWiz_val_{i:08d}.jpg', question=QUESTION,
                           answers=[dict(answer=color, answer_confidence='yes')] * 10, answer_type='other'))
        pope.append(dict(question_id=i, image=name, text=f'Is there a {color} thing?',
                         label='yes' if i % 2 else 'no'))
    vqa = root / 'vqav2'
    (vqa / 'v2_OpenEnded_mscoco_val2014_questions.json').write_text(json.dumps(dict(questions=questions)))
    (vqa / 'v2_mscoco_val2014_annotations.json').write_text(json.dumps(dict(annotations=annotations)))
    (root / 'vizwiz' / 'val.json').write_text(json.dumps(vizwiz))
    os.makedirs(root / 'pope')
    (root / 'pope' / 'coco_pope_random.json').write_text('\n'.join(json.dumps(p) for p in pope))
    os.makedirs(root / 'refcoco' / 'refcoco')
    os.makedirs(root / 'refcoco' / 'train2014')
    Image.fromarray(solid('red', rng)).save(root / 'refcoco/train2014/COCO_train2014_000000000001.jpg')
    refs = [dict(ref_id=0, ann_id=5, image_id=1, split='val',
                 sentences=[dict(sent_id=0, sent='the red one')])]
    (root / 'refcoco' / 'refcoco' / 'refs.json').write_text(json.dumps(refs))  # a JSON export of refs(unc).p
    (root / 'refcoco' / 'refcoco' / 'instances.json').write_text(json.dumps(dict(
        images=[dict(id=1, width=12, height=12)], annotations=[dict(id=5, image_id=1, bbox=[0, 0, 6, 6])])))
    os.makedirs(root / 'ocidref' / 'OCID-dataset')
    Image.fromarray(solid('blue', rng)).save(root / 'ocidref' / 'OCID-dataset' / 'scene.png')
    (root / 'ocidref' / 'val_expressions.json').write_text(json.dumps(
        {'7': dict(scene_path='scene.png', sentence='the blue one', bbox='[0, 0, 320, 240]', take_id=1)}))
    return root


def test_vision_suite_runs_what_the_data_root_holds_and_names_the_rest(checkpoints, tmp_path, capsys):
    root, _, _ = checkpoints
    data = suite_root(tmp_path / 'eval')
    out = tmp_path / 'suite.json'
    results = ev.main([f"--ckpt={root / 'trained_s0' / 'ckpt.pt'}", '--tasks=vision_suite',
                       f'--data_root={data}', '--batch_size=4', '--max_new_tokens=8', f'--out={out}'])
    err = capsys.readouterr().err
    ran = ['vqav2', 'vizwiz', 'pope_random', 'refcoco', 'ocidref']
    assert list(results['tasks']) == ran
    assert set(results['missing']) == {'gqa', 'textvqa', 'textvqa_ocr', 'pope_adversarial', 'pope_popular',
                                       'refcoco+', 'refcocog'}
    assert '[gqa] not run: not found:' in err and 'testdev_balanced_questions.json' in err
    t = results['tasks']
    assert t['vqav2']['acc'] > 0.85 and t['vqav2']['max_new_tokens'] == 8
    # VizWiz's longer prompt does not fit the tiny model's 128 positions: every item named and counted
    assert t['vizwiz']['n'] == 0 and t['vizwiz']['skipped'] == 8
    assert 'does not fit block_size 128' in t['vizwiz']['skipped_examples'][0]
    pope = t['pope_random']
    assert pope['n'] == 8 and 0 <= pope['auc_roc'] <= 1 and 0 <= pope['auc_pr'] <= 1
    assert t['refcoco']['iou_threshold'] == 0.5 and t['ocidref']['iou_threshold'] == 0.25
    assert t['refcoco']['prompt'].startswith('Please provide the bounding box coordinate')
    vision = results['stable_scores']['vision']
    assert list(vision['members']) == ['vqav2', 'refcoco', 'ocidref']
    assert vision['missing'] == ['gqa', 'vizwiz', 'textvqa', 'textvqa_ocr', 'refcocog']
    assert list(vision['beside']) == ['pope_random']
    expected = (t['vqav2']['acc'] + t['refcoco']['acc'] + t['ocidref']['acc']) / 3
    assert results['vision_stable_score'] == pytest.approx(expected)
    assert json.loads(out.read_text()) == results
    p_yes = json.loads((tmp_path / 'predictions_pope_random_suite.json').read_text())
    assert len(p_yes) == 8 and all(0 < p['p_yes'] < 1 for p in p_yes)


def test_an_empty_data_root_and_a_missing_bridge_are_one_line_errors(tmp_path):
    with pytest.raises(SystemExit, match=r"vision_suite: none of its datasets is under --data_root=.*"):
        ev.main([f"--ckpt={tmp_path / 'ckpt.pt'}", '--tasks=vision_suite',
                 f"--data_root={tmp_path / 'nothing'}"])
    if not os.path.exists(os.path.join(os.path.dirname(ev.__file__), 'lm_eval_bridge.py')):
        with pytest.raises(SystemExit, match="lm_eval_bridge.py, which is not there"):
            ev.main([f"--ckpt={tmp_path / 'ckpt.pt'}", '--tasks=text_suite'])
    specs = ev.task_specs(dict(ev.DEFAULTS, tasks='gqa', data_root=str(tmp_path)))
    assert 'missing' not in specs[0]  # named on its own: its reader names the missing file
    with pytest.raises(ev.EvalError, match=r"GQA questions file not found: .*testdev_balanced_questions"):
        ev.load_tasks(specs, 0, 0)


def test_pope_probabilities_batched_equal_one_at_a_time_and_a_plain_forward(tmp_path):
    model = tiny_vlm(seed=4).eval()
    enc = get_tokenizer('bytes')
    rng = np.random.default_rng(0)
    items = []
    for i, text in enumerate(['Is there a cat?', 'Is there a very large red object on the left?', 'A dog?']):
        Image.fromarray(solid(list(COLORS)[i], rng)).save(tmp_path / f'{i}.png')
        items.append(dict(question_id=i, image=str(tmp_path / f'{i}.png'),
                          prompt=f"{text}\n{VQA_INSTRUCTION}"))
    batched = ev.yes_probabilities(model, enc, items, 3, [])
    alone = ev.yes_probabilities(model, enc, items, 1, [])
    from vision import preprocess
    for it in items:
        prompt = chat_tokens(enc, [('user', it['prompt'])], n_image=model.num_patches)[0]
        image = torch.from_numpy(preprocess(it['image'], 12))[None]
        # bytes: " Yes" and " No" share their first token, " "; they differ at "Y" and "N"
        assert encode(enc, ' Yes')[:2] == [ord(' '), ord('Y')] and encode(enc, ' No')[1] == ord('N')
        logits, _ = model(torch.tensor([prompt + [ord(' ')]]), images=image,
                          has_image=torch.ones(1, dtype=torch.bool))
        p = F.softmax(logits[0, -1].float(), -1)
        yes, no = p[ord('Y')].item(), p[ord('N')].item()
        assert alone[it['question_id']] == pytest.approx(yes / (yes + no), rel=1e-4)
        assert batched[it['question_id']] == pytest.approx(alone[it['question_id']], rel=1e-4)


def entry(kind, group, acc, chance=0.0):
    return dict(kind=kind, group=group, acc=acc, chance=chance)


def test_stable_scores_record_members_baselines_and_missing():
    tasks_ = {'vqav2': entry('vqa', 'vision', 0.7), 'textvqa': entry('vqa', 'vision', 0.4),
              'textvqa_ocr': entry('vqa', 'vision', 0.6), 'refcoco': entry('box', 'vision', 0.3),
              'refcocog': entry('box', 'vision', 0.5), 'refcoco+': entry('box', 'vision', 0.9),
              'pope_random': entry('pope', 'vision', 0.8, 0.5),
              'lm_eval:hellaswag': entry('lm_eval', 'text', 0.40, 0.25),
              'lm_eval:boolq': entry('lm_eval', 'text', 0.81, 0.62),
              'arc_easy': entry('mc', 'text', 0.3, 0.25)}
    vision, text = ev.vision_stable(tasks_), ev.text_stable(tasks_)
    # families: VQAv2 0.7, TextVQA (0.4 + 0.6) / 2, RefCOCO (0.3 + 0.5) / 2; GQA, VizWiz, OCID-Ref missing
    assert vision['score'] == pytest.approx((0.7 + 0.5 + 0.4) / 3)
    assert vision['families']['TextVQA'] == dict(members=['textvqa', 'textvqa_ocr'], score=pytest.approx(0.5))
    assert vision['missing'] == ['gqa', 'vizwiz', 'ocidref']
    assert set(vision['beside']) == {'refcoco+', 'pope_random'}
    assert vision['members']['vqav2'] == dict(raw=0.7, baseline=0.0, centred=0.7)
    # DCLM's baselines: hellaswag (0.40 - 0.25) / 0.75 = 0.2, boolq (0.81 - 0.62) / 0.38 = 0.5
    assert text['score'] == pytest.approx((0.2 + 0.5) / 2)
    assert text['members']['lm_eval:boolq']['baseline'] == 0.62
    assert list(text['beside']) == ['arc_easy']  # the built-in 0-shot set, beside the suite
    assert text['members']['lm_eval:boolq']['centred'] == pytest.approx(0.5)
    assert text['missing'] == ['lm_eval:arc_easy', 'lm_eval:arc_challenge', 'lm_eval:copa',
                               'lm_eval:winogrande']
    # the shapes world: the tasks given, as before
    shapes = {'shapes_vqa': entry('vqa', 'vision', 0.6), 'shapes_mc': entry('mc', 'text', 0.5, 1 / 3)}
    results = ev.with_stable_scores(dict(tasks=shapes))
    assert results['vision_stable_score'] == ev.stable_score([(0.6, 0.0)])
    assert results['text_stable_score'] == ev.stable_score([(0.5, 1 / 3)])
    assert list(results['stable_scores']['vision']['members']) == ['shapes_vqa']
    assert results['stable_scores']['text']['missing'] == []


def test_text_suite_goes_through_the_bridge_at_dclm_shots(checkpoints, monkeypatch):
    import types
    calls = []

    def evaluate_lm_eval(model, enc, names, limit, seed, batch_size, device, shots=None, task_dir=None):
        calls.append((names, limit, seed, shots))
        return {n: dict(acc=0.5, acc_norm=0.55, n=2, choices=[4, 4], chance=0.25, num_fewshot=shots[n],
                        items=[dict(doc_id=0, target=1, loglikelihoods=[-1.0, -2.0])])
                for n in names if n != 'copa'}
    bridge = types.SimpleNamespace(evaluate_lm_eval=evaluate_lm_eval,
                                   BridgeError=type('BridgeError', (ValueError,), {}))
    monkeypatch.setitem(sys.modules, 'lm_eval_bridge', bridge)
    root, _, _ = checkpoints
    specs = ev.task_specs(dict(ev.DEFAULTS, tasks='text_suite'))
    results, predictions = ev.evaluate(str(root / 'trained_s0' / 'ckpt.pt'), specs, limit=5, seed=1)
    assert calls == [(list(ev.TEXT_SUITE), 5, 1, ev.TEXT_SUITE)]
    assert predictions['lm_eval:boolq'] == [dict(doc_id=0, target=1, loglikelihoods=[-1.0, -2.0])]
    t = results['tasks']
    assert t['lm_eval:hellaswag']['chance'] == 0.25 and t['lm_eval:boolq']['chance'] == 0.62
    assert t['lm_eval:arc_easy']['shots'] == 10 and t['lm_eval:copa']['not_run']
    centred = [(0.5 - b) / (1 - b) for b in (0.25, 0.25, 0.25, 0.5, 0.62)]
    assert results['text_stable_score'] == pytest.approx(sum(centred) / 5)
    assert results['stable_scores']['text']['missing'] == ['lm_eval:copa']


def test_compare_says_when_scores_average_different_tasks(tmp_path, capsys):
    three_runs(tmp_path)
    for name, members in (('frozen_s0', ['vqav2']), ('frozen_s1', ['vqav2', 'gqa'])):
        results = json.loads((tmp_path / name / 'results.json').read_text())
        results['stable_scores'] = dict(vision=dict(members={m: {} for m in members}),
                                        text=dict(members={'arc_easy': {}}))
        (tmp_path / name / 'results.json').write_text(json.dumps(results))
    ev.main([f"--compare={tmp_path / 'frozen_s0'},{tmp_path / 'frozen_s1'}"])
    out = capsys.readouterr().out
    assert 'note: the vision Stable Scores average different tasks' in out and 'vqav2, gqa' in out
    assert 'the text Stable Scores' not in out


def test_torchrun_slices_every_task_and_gathers_the_same_results(checkpoints, tmp_path):
    import subprocess
    root, data, _ = checkpoints
    tasks_ = f"--tasks=colors={data / 'vqa'},facts={data / 'mc.jsonl'}"
    common = [f"--ckpt={root / 'trained_s0' / 'ckpt.pt'}", tasks_, '--batch_size=4', '--max_new_tokens=8',
              '--device=cpu']
    os.makedirs(tmp_path / 'one')
    os.makedirs(tmp_path / 'two')
    alone = ev.main(common + [f"--out={tmp_path / 'one' / 'results.json'}"])
    env = dict(os.environ, OMP_NUM_THREADS='1')
    run = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                          'eval.py'] + common + [f"--out={tmp_path / 'two' / 'results.json'}"],
                         cwd=os.path.dirname(os.path.abspath(ev.__file__)), env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    two = json.loads((tmp_path / 'two' / 'results.json').read_text())
    for name in ('colors', 'facts'):
        for key in ('acc', 'n', 'skipped', 'chance'):
            assert two['tasks'][name][key] == alone['tasks'][name][key], (name, key)
        assert (json.loads((tmp_path / 'two' / f'predictions_{name}.json').read_text())
                == json.loads((tmp_path / 'one' / f'predictions_{name}.json').read_text()))


def test_lm_eval_task_through_eval_equals_the_builtin_set(checkpoints, tmp_path):
    pytest.importorskip('lm_eval')
    root, _, _ = checkpoints
    questions = [('Colour of snow?', ['white', 'black', 'green'], 'A'),
                 ('Two plus two?', ['four', 'five'], 'A'), ('The sky is?', ['red', 'blue', 'grey'], 'B')]
    rows = [dict(id=f'q{i}', question=q, choices=dict(text=texts, label=list('ABC')[:len(texts)]),
                 answerKey=k) for i, (q, texts, k) in enumerate(questions)]
    path = tmp_path / 'arc_local.jsonl'
    path.write_text('\n'.join(json.dumps(r) for r in rows) + '\n')
    (tmp_path / 'tasks').mkdir()
    from test_lm_eval_bridge import TASK_YAML  # lm-eval's arc_easy over a local JSONL
    config = TASK_YAML.format(name='arc_local', path=path, cache=tmp_path / 'cache')
    (tmp_path / 'tasks' / 'arc_local.yaml').write_text(config)
    ckpt = root / 'trained_s0' / 'ckpt.pt'
    results = ev.main([f'--ckpt={ckpt}', f'--tasks=lm_eval:arc_local,builtin={path}',
                       f"--lm_eval_tasks={tmp_path / 'tasks'}", f"--out={tmp_path / 'results.json'}"])
    bridged, builtin = results['tasks']['lm_eval:arc_local'], results['tasks']['builtin']
    assert bridged['n'] == builtin['n'] == 3
    assert bridged['acc'] == builtin['acc'] and bridged['acc_norm'] == builtin['acc_norm']
    assert bridged['chance'] == pytest.approx((1 / 3 + 1 / 2 + 1 / 3) / 3)  # not a DCLM task: 1 / #choices
    assert list(results['stable_scores']['text']['members']) == ['lm_eval:arc_local']
    assert list(results['stable_scores']['text']['beside']) == ['builtin']
    with pytest.raises(SystemExit, match='no_such_task'):
        ev.main([f'--ckpt={ckpt}', '--tasks=lm_eval:no_such_task', f"--out={tmp_path / 'other.json'}"])
