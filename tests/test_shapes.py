"""Tests of the shapes world (shapes.py, shapes_text.py): determinism, balance, that images carry the
answers, file formats, the command line, and that the text corpus teaches what the multiple-choice
questions ask."""
import ast
import hashlib
import json
import math
import os
import re
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from PIL import Image

import shapes
import shapes_text

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = dict(image_size=48, n_caption=40, n_instruct=150, n_instruct_text=30, n_val=100,
             val_questions_per_image=4, text_mb=0.3, n_mc=200)
TINY = dict(image_size=48, n_caption=6, n_instruct=8, n_instruct_text=4, n_val=6, text_mb=0.03, n_mc=20)


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp('shapes_world')
    shapes.write_world(str(out), seed=0, **SMALL)
    return out


def load_json(path):
    with open(path) as f:
        return json.load(f)


def load_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def hashes(folder):
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, 'rb') as f:
                out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


# -----------------------------------------------------------------------------
# determinism

def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    for name, seed in [('a', 0), ('b', 0), ('c', 1)]:
        shapes.write_world(str(tmp_path / name), seed=seed, **TINY)
    a, b, c = hashes(tmp_path / 'a'), hashes(tmp_path / 'b'), hashes(tmp_path / 'c')
    assert len(a) > 20 and a == b
    assert a.keys() == c.keys()
    for path in TEXT_FILES + ['vqa/images/000000000001.png']:
        assert a[path] != c[path], path


TEXT_FILES = ['captions/captions.jsonl', 'instruct/llava.json', 'vqa/questions.json', 'vqa/annotations.json',
              'text/corpus.jsonl', 'text/val.jsonl', 'text_mc/arc_shapes.jsonl', 'world.json']
# sha256 of TEXT_FILES' bytes, one after the other, of the TINY world of seed 0: the generators' draws,
# their order and their templates are pinned (the PNGs are left out: zlib builds may compress differently)
TINY_TEXT_SHA256 = '7202cf98356fa58de9c3d5019e0225c858d0ea279667540ab2afca47904738f0'


def test_tiny_world_text_is_pinned(tmp_path):
    shapes.write_world(str(tmp_path), seed=0, **TINY)
    h = hashlib.sha256()
    for path in TEXT_FILES:
        h.update((tmp_path / path).read_bytes())
    assert h.hexdigest() == TINY_TEXT_SHA256, "the world's files changed for the same seed and sizes"


def test_splits_use_their_own_seed_streams(tmp_path):
    # more caption images must not change the VQA split or the text
    shapes.write_world(str(tmp_path / 'a'), seed=0, **TINY)
    shapes.write_world(str(tmp_path / 'b'), seed=0, **{**TINY, 'n_caption': 9})
    a, b = hashes(tmp_path / 'a'), hashes(tmp_path / 'b')
    for path in ['vqa/annotations.json', 'instruct/llava.json', 'text/corpus.jsonl',
                 'text_mc/arc_shapes.jsonl']:
        assert a[path] == b[path], path
    assert a['captions/captions.jsonl'] != b['captions/captions.jsonl']


def test_existing_world_is_not_overwritten_silently(tmp_path):
    shapes.write_world(str(tmp_path), seed=0, **TINY)
    with pytest.raises(FileExistsError, match='overwrite'):
        shapes.write_world(str(tmp_path), seed=0, **TINY)
    shapes.write_world(str(tmp_path), seed=0, **{**TINY, 'n_caption': 3}, overwrite=True)
    assert len(os.listdir(tmp_path / 'captions' / 'images')) == 3  # the earlier 6 images are gone


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match='n_val'):
        shapes.write_world('/nonexistent/never', n_val=0)
    with pytest.raises(ValueError, match='bad object'):
        shapes.render({'objects': [{'shape': 'hexagon', 'color': 'red', 'size': 'small',
                                    'position': 'left'}]})
    with pytest.raises(ValueError, match='val_text_mb'):
        shapes.write_world('/nonexistent/never', val_text_mb='much')
    with pytest.raises(ValueError, match='n_mc'):
        shapes.write_world('/nonexistent/never', n_mc=shapes_text.max_mc_questions() + 1)


# -----------------------------------------------------------------------------
# VQA: answers follow from the scene, are balanced, and the pixels carry them

TYPE_PREFIXES = ['what color is the', 'what shape is the', 'what size is the', 'where is the', 'how many',
                 'is there a', 'is the']  # longest match first: "is there a" before "is the"


def question_type(question):
    return next(t for t in TYPE_PREFIXES if question.lower().startswith(t))


def expected_answer(scene, question):
    """The answer, worked out from the scene objects by parsing the question."""
    objs = scene['objects']
    by_shape = {o['shape']: o for o in objs}
    by_color = {o['color']: o for o in objs}
    if m := re.fullmatch(r'What color is the (\w+)\?', question):
        return by_shape[m[1]]['color']
    if m := re.fullmatch(r'What shape is the (\w+) object\?', question):
        return by_color[m[1]]['shape']
    if question == 'How many objects are there?':
        return str(len(objs))
    if m := re.fullmatch(r'Is there a (\w+)\?', question):
        return 'yes' if m[1] in by_shape else 'no'
    if m := re.fullmatch(r'Is the (\w+) (\w+)\?', question):
        return 'yes' if by_shape[m[1]]['color'] == m[2] else 'no'
    if m := re.fullmatch(r'Where is the (\w+) (\w+)\?', question):
        assert by_color[m[1]] is by_shape[m[2]]
        return by_color[m[1]]['position']
    if m := re.fullmatch(r'What size is the (\w+) (\w+)\?', question):
        assert by_color[m[1]] is by_shape[m[2]]
        return by_color[m[1]]['size']
    raise AssertionError(f"unexpected question {question!r}")


def test_scenes_follow_the_world_rules():
    rng = np.random.default_rng(1)
    counts = Counter()
    for _ in range(500):
        objs = shapes.make_scene(rng)['objects']
        counts[len(objs)] += 1
        for key in ('shape', 'color', 'position'):
            assert len({o[key] for o in objs}) == len(objs), key  # each names one object
    assert set(counts) == {1, 2, 3} and min(counts.values()) > 120


def test_questions_are_answered_by_the_scene():
    rng = np.random.default_rng(2)
    seen_types = Counter()
    for _ in range(300):
        scene = shapes.make_scene(rng)
        for q in shapes.questions(scene, rng):
            assert q['answer'] == expected_answer(scene, q['question']), (scene, q)
            assert q['question_type'] == question_type(q['question'])
            assert q['answer_type'] == {'how many': 'number', 'is there a': 'yes/no', 'is the': 'yes/no'}.get(
                q['question_type'], 'other')
            seen_types[q['question_type']] += 1
    assert set(seen_types) == set(TYPE_PREFIXES)


def test_balanced_selection_keeps_answer_counts_within_one():
    rng = np.random.default_rng(3)
    counts = {}
    for _ in range(400):
        shapes.questions(shapes.make_scene(rng), rng, 4, counts)
    for qtype, (_, space) in shapes.QUESTION_TYPES.items():
        per_answer = [counts[qtype][a] for a in space]
        assert max(per_answer) - min(per_answer) <= 1, (qtype, per_answer)
        assert min(per_answer) > 0


def read_split_questions(world):
    """(train, val) question lists read back from llava.json and the VQAv2 annotations."""
    train = []
    for conv in load_json(world / 'instruct' / 'llava.json'):
        if 'image' not in conv:
            continue
        turns = conv['conversations']
        for human, gpt in zip(turns[::2], turns[1::2]):
            # the first question has the short-answer line after it
            question = human['value'].replace('<image>\n', '').split('\n')[0]
            if question not in shapes.DESCRIBE:  # a caption request is no VQA question
                train.append({'question_type': question_type(question), 'answer': gpt['value']})
    annotations = load_json(world / 'vqa' / 'annotations.json')['annotations']
    val = [{'question_type': a['question_type'], 'answer': a['multiple_choice_answer']} for a in annotations]
    return train, val


def test_blind_answerer_is_at_chance(world):
    train, val = read_split_questions(world)
    spaces = {t: v['answers'] for t, v in load_json(world / 'world.json')['question_types'].items()}
    report = shapes.blind_baseline(train, val)
    hits, chance = 0, 0.0
    for qtype, space in spaces.items():
        train_counts = Counter(q['answer'] for q in train if q['question_type'] == qtype)
        top = max(train_counts.values())
        val_counts = Counter(q['answer'] for q in val if q['question_type'] == qtype)
        n = sum(val_counts.values())
        assert n >= 30, qtype
        assert set(val_counts) == set(space), qtype  # every answer occurs
        # whichever most frequent train answer a blind answerer picks, it is near chance on val
        for blind in [a for a, c in train_counts.items() if c == top]:
            assert abs(val_counts[blind] / n - 1 / len(space)) <= 0.05, (qtype, blind, val_counts, len(space))
        # the module's baseline picks one of them and scores it the same way
        entry = report['per_type'][qtype]
        assert train_counts[entry['blind_answer']] == top
        assert math.isclose(entry['accuracy'], val_counts[entry['blind_answer']] / n)
        assert math.isclose(entry['chance'], 1 / len(space))
        hits += val_counts[entry['blind_answer']]
        chance += n / len(space)
    assert math.isclose(report['accuracy'], hits / len(val))
    assert math.isclose(report['chance'], chance / len(val))
    assert abs(report['accuracy'] - report['chance']) <= 0.05


def test_unbound_answerer_by_hand():
    """Knows the scene's colors, shapes, sizes, positions and count, not which object has which."""
    red = {'shape': 'circle', 'color': 'red', 'size': 'small', 'position': 'left'}
    blue = {'shape': 'square', 'color': 'blue', 'size': 'small', 'position': 'right'}
    green = {'shape': 'star', 'color': 'green', 'size': 'large', 'position': 'top'}
    two, three, one = {'objects': [red, blue]}, {'objects': [red, blue, green]}, {'objects': [green]}

    def ask(scene, qtype, question=''):
        return shapes.unbound_accuracy(scene, {'question_type': qtype, 'question': question})

    assert ask(two, 'what color is the') == 1 / 2 and ask(three, 'what shape is the') == 1 / 3
    assert ask(three, 'where is the') == 1 / 3 and ask(one, 'what color is the') == 1.0
    assert ask(three, 'how many') == 1.0 and ask(two, 'is there a', 'Is there a star?') == 1.0
    assert ask(two, 'is the', 'Is the circle green?') == 1.0  # no green object: "no" for sure
    assert ask(two, 'is the', 'Is the circle blue?') == 1 / 2  # red or blue, one guess
    # "no" is right unless it is the blue one
    assert math.isclose(ask(three, 'is the', 'Is the circle blue?'), 2 / 3)
    assert ask(one, 'is the', 'Is the star green?') == 1.0
    assert ask(two, 'what size is the') == 1.0  # both small
    assert math.isclose(ask(three, 'what size is the'), 2 / 3)  # two small, one large: "small"
    with pytest.raises(ValueError, match='question type'):
        ask(two, 'why is the')


def test_unbound_baseline_matches_the_pixels(world):
    """world.json's unbound answerer, recomputed from the val images alone: the objects of an image are
    the plus-shaped grid's cells that hold a named color (sizes are left to the test above)."""
    names = list(shapes.COLORS)
    questions = load_json(world / 'vqa' / 'questions.json')['questions']
    scenes = {}
    for q in questions:
        if q['image_id'] not in scenes:
            path = world / 'vqa' / 'images' / f"{q['image_id']:012d}.png"
            img = np.asarray(Image.open(path).convert('RGB'))
            labels, cell = nearest_palette(img), img.shape[0] // 3
            colors = []
            for col, row in shapes.CELL.values():
                region = labels[row * cell:(row + 1) * cell, col * cell:(col + 1) * cell]
                if (region >= 0).sum() > 10:
                    colors.append(names[Counter(region[region >= 0].tolist()).most_common(1)[0][0]])
            scenes[q['image_id']] = colors
    expected = {}
    for q, a in zip(questions, load_json(world / 'vqa' / 'annotations.json')['annotations']):
        colors, qtype = scenes[q['image_id']], a['question_type']
        n = len(colors)
        if qtype == 'is the':
            value = 1.0 if q['question'][:-1].split()[-1] not in colors else max(1 / n, 1 - 1 / n)
        elif qtype in ('how many', 'is there a'):
            value = 1.0
        elif qtype == 'what size is the':
            continue
        else:
            value = 1 / n
        expected.setdefault(qtype, []).append(value)
    report = load_json(world / 'world.json')['unbound_baseline']
    for qtype, values in expected.items():
        assert report['per_type'][qtype]['n'] == len(values)
        assert math.isclose(report['per_type'][qtype]['accuracy'], sum(values) / len(values)), qtype
    assert set(report['per_type']) == set(shapes.QUESTION_TYPES)


def nearest_palette(img):
    """Per pixel: index of the nearest named color, or -1 when none is within 60 (the background)."""
    palette = np.array(list(shapes.COLORS.values()), dtype=np.float32)  # (8, 3)
    dist = np.linalg.norm(img[:, :, None, :].astype(np.float32) - palette, axis=-1)  # (S, S, 8)
    return np.where(dist.min(-1) < 60, dist.argmin(-1), -1)


def test_pixels_carry_the_answers():
    """The dominant named color in an object's cell is the object's color; nothing outside the
    objects' cells looks like a named color; large objects cover more pixels than small ones."""
    rng = np.random.default_rng(4)
    names = list(shapes.COLORS)
    areas = {}
    for size in (48, 36):
        cell = size // 3
        for _ in range(200):
            scene = shapes.make_scene(rng)
            labels = nearest_palette(shapes.render(scene, size, rng))
            used = np.zeros(labels.shape, dtype=bool)
            for obj in scene['objects']:
                col, row = shapes.CELL[obj['position']]
                region = labels[row * cell:(row + 1) * cell, col * cell:(col + 1) * cell]
                used[row * cell:(row + 1) * cell, col * cell:(col + 1) * cell] = True
                found = Counter(region[region >= 0].tolist())
                (dominant, n), = found.most_common(1)
                assert names[dominant] == obj['color'], (scene, obj)
                assert n >= 0.9 * sum(found.values())
                areas.setdefault((size, obj['shape'], obj['size']), []).append(n)
            assert (labels[~used] == -1).all(), scene  # the background never passes for an object
    for size in (48, 36):
        for shape in shapes.SHAPES:
            assert min(areas[size, shape, 'large']) > 1.3 * max(areas[size, shape, 'small']), (size, shape)


def test_shapes_are_distinct_masks():
    grid = np.linspace(-1.2, 1.2, 97)
    u, v = np.meshgrid(grid, grid)
    masks = {s: shapes.shape_mask(s, u, v) for s in shapes.SHAPES}
    for a in shapes.SHAPES:
        assert masks[a].mean() > 0.15
        for b in shapes.SHAPES:
            if a < b:
                iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
                assert iou < 0.85, (a, b, iou)
    # a five-pointed star: five separate tips cut by a ring outside the inner corners
    ring = (np.hypot(u, v) > 0.8) & (np.hypot(u, v) < 0.9)
    angles = np.arctan2(v[ring & masks['star']], u[ring & masks['star']])
    tips = np.round(((angles + np.pi / 2) % (2 * np.pi)) / (2 * np.pi / 5)) % 5
    assert set(tips.tolist()) == {0, 1, 2, 3, 4}


def test_captions_name_every_object():
    rng = np.random.default_rng(5)
    for _ in range(300):
        scene = shapes.make_scene(rng)
        text = shapes.caption(scene, rng)
        assert text[0].isupper() and text.endswith('.')
        for obj in scene['objects']:
            assert f"{obj['color']} {obj['shape']}" in text
            assert any(p in text.lower() for p in shapes.POSITION_PHRASES[obj['position']]) or \
                any(r in text for r in ('above', 'below', 'to the left of', 'to the right of'))


def test_relation_words():
    obj = lambda p: {'position': p}
    assert shapes.relation(obj('left'), obj('right')) == 'to the right of'
    assert shapes.relation(obj('middle'), obj('top')) == 'above'
    assert shapes.relation(obj('left'), obj('bottom')) == 'below and to the right of'


# -----------------------------------------------------------------------------
# file formats

def test_vqa_files(world):
    questions = load_json(world / 'vqa' / 'questions.json')['questions']
    annotations = load_json(world / 'vqa' / 'annotations.json')['annotations']
    assert len(questions) == len(annotations) >= 350
    by_id = {a['question_id']: a for a in annotations}
    assert len(by_id) == len(annotations)
    for q in questions:
        a = by_id[q['question_id']]
        assert a['image_id'] == q['image_id'] and isinstance(q['image_id'], int)
        assert a['answer_type'] in ('yes/no', 'number', 'other')
        assert q['question'].lower().startswith(a['question_type'])
        assert [x['answer_id'] for x in a['answers']] == list(range(1, 11))
        assert all(x['answer_confidence'] == 'yes' for x in a['answers'])
        # ten answers that all mean the multiple-choice answer (digits or number words)
        number = a['answer_type'] == 'number'
        normal = {shapes_text.COUNT_WORDS[int(a['multiple_choice_answer'])]} if number else set()
        assert {x['answer'] for x in a['answers']} <= {a['multiple_choice_answer']} | normal
    for image_id in {q['image_id'] for q in questions}:
        img = Image.open(world / 'vqa' / 'images' / f"{image_id:012d}.png")
        assert img.mode == 'RGB' and img.size == (48, 48)


def test_arc_file(world):
    items = load_jsonl(world / 'text_mc' / 'arc_shapes.jsonl')
    assert len(items) == SMALL['n_mc'] and len({i['id'] for i in items}) == len(items)
    positions = {3: Counter(), 4: Counter(), 5: Counter()}
    for item in items:
        choices = item['question']['choices']
        labels = [c['label'] for c in choices]
        assert 3 <= len(choices) <= 5 and labels == list('ABCDE'[:len(choices)])
        assert item['answerKey'] in labels
        assert len({c['text'] for c in choices}) == len(choices)
        assert not {c['text'] for c in choices} & set(item['question']['stem'].rstrip('?').split())
        positions[len(choices)][labels.index(item['answerKey'])] += 1
    assert sum(positions[4].values()) > 0.5 * len(items)  # mostly 4 choices
    for k, counts in positions.items():
        if counts:
            per_position = [counts[p] for p in range(k)]
            assert max(per_position) - min(per_position) <= 1, (k, per_position)
    # every fact is asked once before any is asked twice
    assert len({i['question']['stem'] for i in items}) == len(items)


def test_llava_file(world):
    conversations = load_json(world / 'instruct' / 'llava.json')
    with_image = [c for c in conversations if 'image' in c]
    assert len(with_image) == SMALL['n_instruct']
    assert len(conversations) - len(with_image) == SMALL['n_instruct_text']
    assert len({c['id'] for c in conversations}) == len(conversations)
    for conv in conversations:
        turns = conv['conversations']
        assert len(turns) >= 4 and len(turns) % 2 == 0
        assert [t['from'] for t in turns] == ['human', 'gpt'] * (len(turns) // 2)
        assert all(isinstance(t['value'], str) and t['value'] for t in turns)
        tagged = [i for i, t in enumerate(turns) if '<image>' in t['value']]
        if 'image' in conv:
            assert tagged == [0] and turns[0]['value'].startswith('<image>\n')
            assert os.path.isfile(world / 'instruct' / conv['image'])
        else:
            assert tagged == []


def test_caption_file(world):
    rows = load_jsonl(world / 'captions' / 'captions.jsonl')
    assert len(rows) == SMALL['n_caption']
    for row in rows:
        img = Image.open(world / 'captions' / row['image'])
        assert img.mode == 'RGB' and img.size == (48, 48)
        assert row['caption'][0].isupper() and row['caption'].endswith('.')


def test_world_json(world):
    info = load_json(world / 'world.json')
    assert info['seed'] == 0 and info['image_size'] == 48
    assert info['counts']['vqa_questions'] == len(load_json(world / 'vqa' / 'questions.json')['questions'])
    assert info['counts']['text_documents'] == len(load_jsonl(world / 'text' / 'corpus.jsonl'))
    assert len(info['facts']) == len(shapes_text.FACTS) >= 100
    assert info['vocab']['shapes'] == list(shapes.SHAPES)


# -----------------------------------------------------------------------------
# text: the corpus teaches the facts, the multiple-choice stems are held out

@pytest.fixture(scope='module')
def corpus(world):
    return '\n'.join(d['text'] for d in load_jsonl(world / 'text' / 'corpus.jsonl'))


def test_corpus_size_and_documents(world, corpus):
    docs = load_jsonl(world / 'text' / 'corpus.jsonl')
    assert abs(len(corpus) - SMALL['text_mb'] * 1e6) < 0.05 * SMALL['text_mb'] * 1e6
    assert len(docs) > 300 and all(d['text'].strip() for d in docs)
    assert corpus.isascii()
    val = load_jsonl(world / 'text' / 'val.jsonl')
    corpus_docs = {d['text'] for d in docs}
    assert len(val) > 10 and sum(d['text'] in corpus_docs for d in val) < 0.1 * len(val)


def test_corpus_states_every_fact_in_several_phrasings(corpus):
    text = corpus.lower()
    for fact in shapes_text.FACTS:
        found = [text.count(s.lower()) for s in shapes_text.fact_statements(fact)]
        assert sum(found) >= 3 and sum(f > 0 for f in found) >= 2, (fact['subject'], fact['answer'], found)


def test_mc_stems_are_held_out(world, corpus):
    stems = [i['question']['stem'].lower() for i in load_jsonl(world / 'text_mc' / 'arc_shapes.jsonl')]
    instruct = (world / 'instruct' / 'llava.json').read_text().lower()
    val = (world / 'text' / 'val.jsonl').read_text().lower()
    text = corpus.lower()
    for stem in stems:
        assert stem not in text and stem not in instruct and stem not in val, stem
    # and no held-out phrasing is a taught one
    for fact in shapes_text.FACTS:
        held_out = shapes_text.fact_questions(fact, 'held_out')
        assert not set(held_out) & set(shapes_text.fact_questions(fact, 'taught'))


def test_mc_answers_follow_from_the_corpus(world, corpus):
    """A left-to-right bag-of-words reader gets most items right: it picks the choice that, somewhere in
    the corpus (a sentence, or a quiz question with its answer), follows the most rare words of the stem.
    So the corpus holds the answers and the stems point at them."""
    units = {s for s in re.split(r'(?<=[.!"])\s+|(?<=\?)\s+(?!answer:)|\n(?!answer:)', corpus.lower()) if s}
    units = [re.findall(r'[a-z]+', u) for u in units]
    df = Counter(w for u in units for w in set(u))
    idf = {w: math.log(len(units) / n) for w, n in df.items()}
    index = {}
    for i, u in enumerate(units):
        for w in set(u):
            index.setdefault(w, []).append(i)

    def support(stem, choice):  # the best unit: idf of the stem words that come before the choice
        best = 0.0
        for i in index.get(choice, []):
            before = units[i][:len(units[i]) - units[i][::-1].index(choice) - 1]
            best = max(best, sum(idf[w] for w in stem & set(before)))
        return best

    items = load_jsonl(world / 'text_mc' / 'arc_shapes.jsonl')
    correct, chance = 0, 0.0
    for item in items:
        stem = set(re.findall(r'[a-z]+', item['question']['stem'].lower()))
        choices = item['question']['choices']
        scores = [support(stem, c['text'].lower()) for c in choices]
        correct += choices[int(np.argmax(scores))]['label'] == item['answerKey']
        chance += 1 / len(choices)
    assert chance / len(items) < 0.3
    assert correct / len(items) > 0.8, correct / len(items)  # chance is about 0.26


# -----------------------------------------------------------------------------
# the command line, the module layout

def test_command_line_writes_the_same_world(tmp_path):
    args = [f"--{k}={v}" for k, v in TINY.items()]
    world = shapes.main([f"--out={tmp_path / 'cli'}", '--seed=0'] + args)
    shapes.write_world(str(tmp_path / 'call'), seed=0, **TINY)
    assert hashes(tmp_path / 'cli') == hashes(tmp_path / 'call')
    assert world['sizes']['n_caption'] == TINY['n_caption']
    shapes.main([f"--out={tmp_path / 'cli'}", '--n_caption=2', '--overwrite'] + args[2:])  # a bare flag
    assert len(os.listdir(tmp_path / 'cli' / 'captions' / 'images')) == 2


@pytest.mark.parametrize('argv, message', [
    (['--n_val=0'], 'n_val must be a positive integer'),
    (['--seed=abc'], "'seed' expects int"),
    (['--n-val=3'], "unknown config key 'n-val'"),
    (['--val_text_mb=lots'], 'val_text_mb must be positive'),
    (['--out='], '--out=... is required'),
])
def test_command_line_bad_input_is_one_line(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        shapes.main([f"--out={tmp_path / 'w'}"] + argv)
    assert isinstance(e.value.code, str) and message in e.value.code and '\n' not in e.value.code
    assert not os.path.exists(tmp_path / 'w')


def test_existing_world_on_the_command_line_is_one_line(tmp_path):
    shapes.write_world(str(tmp_path), seed=0, **TINY)
    with pytest.raises(SystemExit) as e:
        shapes.main([f"--out={tmp_path}"] + [f"--{k}={v}" for k, v in TINY.items()])
    assert 'already holds' in e.value.code and '--overwrite' in e.value.code


def test_text_module_stands_alone():
    """shapes_text needs nothing of the image side: importing it loads neither shapes nor PIL."""
    code = "import sys, shapes_text; print(sorted(m for m in ('shapes', 'PIL') if m in sys.modules))"
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == '[]'


@pytest.mark.parametrize('name', ['shapes.py', 'shapes_text.py', 'tests/test_shapes.py'])
def test_source_layout(name):
    """Lines of at most 110 characters, functions of at most 100 lines, files under 1,000 lines."""
    with open(os.path.join(ROOT, name)) as f:
        source = f.read()
    lines = source.splitlines()
    assert len(lines) < 1000, name
    assert not [i + 1 for i, line in enumerate(lines) if len(line) > 110], name
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            assert node.end_lineno - node.lineno < 100, (name, node.name)
