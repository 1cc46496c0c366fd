"""
The "shapes world": a synthetic, seeded data set on which the whole study runs on a CPU.

Images of 1-3 colored shapes on a textured background, their captions, VQA questions about them,
a text corpus built around a fixed set of world facts, and multiple-choice text questions that ask
those facts in phrasings the corpus never uses. A tiny model can learn it from a few million tokens;
the vision questions need the image (their answers are balanced, so a blind answerer is at chance);
the text questions need the facts (the corpus is the only place they are taught).

    python shapes.py --out data/shapes_raw --seed 0

writes, under --out (all deterministic in the seed; every split has its own seed stream):

  captions/captions.jsonl   {"image": "images/000000.png", "caption": "..."} per line (train split);
                            image paths are relative to the folder holding the .jsonl
  captions/images/*.png
  instruct/llava.json       LLaVA v1.5 list of {"id", "image", "conversations"}; "image" is relative
                            to instruct/; text-only conversations have no "image" key
  instruct/images/*.png     scenes of their own (not the caption scenes)
  vqa/questions.json        the val split in the official VQAv2 layout ({"questions": [...]})
  vqa/annotations.json      {"annotations": [...]}, 10 answers per question
  vqa/images/{image_id:012d}.png
  text/corpus.jsonl         {"text": ...} one document per line (the text-shard preparation puts
                            <|endoftext|> between documents); documents may hold newlines
  text/val.jsonl            held-out documents from the same generator, another seed
  text_mc/arc_shapes.jsonl  multiple-choice questions in AI2's ARC JSONL layout
  world.json                seed, sizes, vocabularies, facts, counts, the blind and unbound VQA baselines

World rules that make every question unambiguous: objects sit in distinct cells of a plus-shaped
grid (left, middle, right in the middle row; top and bottom in the middle column), so they never
overlap and their position has one name; the objects of one scene differ in shape and in color, so
"the circle" and "the red object" each name one object.

Text: quiz documents in the corpus use the ARC prompt layout ("Question: ...\\nAnswer: ...") with
the taught phrasings, so a tiny LM learns the layout; the multiple-choice stems use held-out
phrasings that neither the corpus nor the instruction data contain.

Spelling is American ("color"), as in VQAv2.
"""
import argparse
import json
import os
import random
import re
import shutil
import time
from collections import Counter
from functools import lru_cache

import numpy as np
from PIL import Image

# -----------------------------------------------------------------------------
# defaults: sized for the CPU study (about 20 minutes on 2 cores, all stages)

IMAGE_SIZE = 48             # 48 px with 16 px patches = 9 image positions, one per grid cell
N_CAPTION = 10_000          # caption images (mixed stage, tower pre-training)
N_INSTRUCT = 4_000          # instruction-tuning images, 5-7 QA turns each
N_INSTRUCT_TEXT = 1_000     # text-only instruction conversations about the facts
N_VAL = 500                 # VQA val images
VAL_QUESTIONS_PER_IMAGE = 4
TEXT_MB = 3.0               # corpus size in MB of UTF-8 text (it is ASCII)
N_MC = 300                  # multiple-choice text questions

# split ids: each split draws from its own seed stream, so sizes of one never change another
SPLITS = {'captions': 0, 'instruct': 1, 'vqa': 2, 'corpus': 3, 'text_val': 4, 'mc': 5, 'instruct_text': 6}

# -----------------------------------------------------------------------------
# the visual vocabulary

SHAPES = ('circle', 'square', 'triangle', 'star', 'cross')
COLORS = {  # well apart from each other (>= 85 in RGB distance) and from the grey background;
           # every channel in 18..237, so the jitter of render() never leaves 0..255
    'red': (210, 35, 35),
    'green': (35, 160, 50),
    'blue': (40, 70, 215),
    'yellow': (235, 215, 30),
    'purple': (140, 45, 185),
    'orange': (235, 130, 20),
    'white': (235, 235, 235),
    'black': (25, 25, 25),
}
SIZES = ('small', 'large')
SIZE_RADIUS = {'small': 0.30, 'large': 0.45}  # half-extent of the object, as a fraction of a cell
POSITIONS = ('left', 'middle', 'right', 'top', 'bottom')
CELL = {'left': (0, 1), 'middle': (1, 1), 'right': (2, 1), 'top': (1, 0), 'bottom': (1, 2)}  # (col, row) in 3x3
BACKGROUND_GREY = (95, 155)   # per-image base grey level range


def pick(rng, seq):
    """One element of a sequence from a numpy Generator, as a plain Python value."""
    return seq[int(rng.integers(len(seq)))]


def make_scene(rng):
    """A scene: 1-3 objects in distinct cells, with distinct shapes and distinct colors."""
    n = int(rng.integers(1, 4))
    positions = rng.permutation(len(POSITIONS))[:n]
    shapes = rng.permutation(len(SHAPES))[:n]
    colors = rng.permutation(len(COLORS))[:n]
    sizes = rng.integers(0, len(SIZES), n)
    color_names = list(COLORS)
    return {'objects': [{'shape': SHAPES[s], 'color': color_names[c], 'size': SIZES[z], 'position': POSITIONS[p]}
                        for s, c, z, p in zip(shapes, colors, sizes, positions)]}


# -----------------------------------------------------------------------------
# rendering: numpy only, a few thousand images per second

@lru_cache(maxsize=8)
def _pixel_grid(size):
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5  # pixel centres
    return xs, ys


_STAR_OUTER, _STAR_INNER = 1.05, 0.45
_STAR_TIP = (_STAR_OUTER, 0.0)  # a tip and the next inner corner, in the folded sector below
_STAR_NOTCH = (_STAR_INNER * np.cos(np.pi / 5), _STAR_INNER * np.sin(np.pi / 5))


def shape_mask(shape, u, v):
    """Boolean mask of a shape centred at (0, 0) with half-extent about 1, on offset arrays u, v
    (v points down, like image rows)."""
    if shape == 'circle':
        return u * u + v * v <= 1.0
    if shape == 'square':
        return np.maximum(np.abs(u), np.abs(v)) <= 0.82
    if shape == 'triangle':  # apex up at (0, -1), base at v = 0.85 from u = -1 to 1
        return (v <= 0.85) & (1.85 * np.abs(u) <= v + 1.0)
    if shape == 'star':
        # five points, one up: fold the angle into the sector between a tip and the next inner corner,
        # then test against the edge joining them
        rho = np.sqrt(u * u + v * v)
        phi = np.mod(np.arctan2(v, u) + np.pi / 2, 2 * np.pi / 5)
        phi = np.minimum(phi, 2 * np.pi / 5 - phi)
        px, py = rho * np.cos(phi), rho * np.sin(phi)
        (ax, _), (bx, by) = _STAR_TIP, _STAR_NOTCH
        return (bx - ax) * py - by * (px - ax) >= 0
    if shape == 'cross':
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.32) & (av <= 1.0)) | ((av <= 0.32) & (au <= 1.0))
    raise ValueError(f"unknown shape {shape!r}, expected one of {SHAPES}")


def render(scene, size=IMAGE_SIZE, rng=None):
    """Draw a scene as a (size, size, 3) uint8 RGB image.

    The background is a grey of random level and tint with random stripes and per-pixel noise, each
    object gets a jittered color, radius and (where its cell leaves room) position, so no fixed pixel
    or exact color value gives an answer away."""
    if size < 12:
        raise ValueError(f"image size must be at least 12 px, got {size}")
    rng = rng if rng is not None else np.random.default_rng(0)
    objects = scene['objects']
    for obj in objects:
        if obj.get('shape') not in SHAPES or obj.get('color') not in COLORS or obj.get('size') not in SIZE_RADIUS \
                or obj.get('position') not in CELL:
            raise ValueError(f"bad object in scene: {obj}")
    # all random numbers of the image in two calls (one call per number would dominate the time)
    draws = iter(rng.random(8 + 6 * len(objects)))
    noise = rng.integers(-12, 13, (size, size, 3), dtype=np.int16)  # (S, S, 3)
    xs, ys = _pixel_grid(size)
    grey = np.float32(BACKGROUND_GREY[0] + (BACKGROUND_GREY[1] - BACKGROUND_GREY[0]) * next(draws))
    tint = np.array([next(draws) for _ in range(3)], dtype=np.float32) * 16 - 8  # (3,)
    angle, freq = np.pi * next(draws), 0.15 + 0.35 * next(draws)
    phase, amplitude = 2 * np.pi * next(draws), 4 + 6 * next(draws)
    stripes = np.float32(amplitude) * np.sin(
        np.float32(freq) * (xs * np.float32(np.cos(angle)) + ys * np.float32(np.sin(angle))) + np.float32(phase))  # (S, S)
    img = stripes[..., None] + (grey + tint) + noise  # (S, S, 3) float32
    img = np.clip(img, 0, 255, out=img).astype(np.uint8)
    cell = size / 3
    for obj in objects:
        col, row = CELL[obj['position']]
        r = SIZE_RADIUS[obj['size']] * cell * (0.95 + 0.1 * next(draws))
        room = int(cell / 2 - r)  # whole pixels the object can move and stay inside its cell
        cx = (col + 0.5) * cell + int(next(draws) * (2 * room + 1)) - room
        cy = (row + 0.5) * cell + int(next(draws) * (2 * room + 1)) - room
        x0, x1 = max(0, int(cx - r - 1)), min(size, int(cx + r + 2))
        y0, y1 = max(0, int(cy - r - 1)), min(size, int(cy + r + 2))
        mask = shape_mask(obj['shape'], (xs[y0:y1, x0:x1] - cx) / r, (ys[y0:y1, x0:x1] - cy) / r)
        color = np.array(COLORS[obj['color']]) + np.array([int(next(draws) * 25) - 12 for _ in range(3)])
        # half the background's noise at the same pixels: the object is not flat either (7..253, no overflow)
        img[y0:y1, x0:x1][mask] = (color + noise[y0:y1, x0:x1][mask] // 2).astype(np.uint8)
    return img


# -----------------------------------------------------------------------------
# captions

POSITION_PHRASES = {
    'left': ('on the left', 'on the left side'),
    'right': ('on the right', 'on the right side'),
    'top': ('at the top', 'near the top'),
    'bottom': ('at the bottom', 'near the bottom'),
    'middle': ('in the middle', 'in the center'),
}
COUNT_WORDS = ('zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine', 'ten')


def _capitalize(text):
    return text[:1].upper() + text[1:]


def _join(items):
    return items[0] if len(items) == 1 else ', '.join(items[:-1]) + ' and ' + items[-1]


def relation(a, b):
    """Where object b is seen from object a: 'above', 'to the left of', 'below and to the right of', ..."""
    (ac, ar), (bc, br) = CELL[a['position']], CELL[b['position']]
    vertical = 'above' if br < ar else 'below' if br > ar else ''
    horizontal = 'to the left of' if bc < ac else 'to the right of' if bc > ac else ''
    return ' and '.join(p for p in (vertical, horizontal) if p)


def caption(scene, rng):
    """One caption of a scene, from several templates; names every object, its color and position."""
    objs = [scene['objects'][i] for i in rng.permutation(len(scene['objects']))]
    with_size = [bool(rng.random() < 0.75) for _ in objs]  # the size is left out now and then
    phrases = [f"a {o['size'] + ' ' if s else ''}{o['color']} {o['shape']}" for o, s in zip(objs, with_size)]
    where = [pick(rng, POSITION_PHRASES[o['position']]) for o in objs]
    placed = [f"{p} {w}" for p, w in zip(phrases, where)]
    n = len(objs)
    if n == 1:
        o = objs[0]
        choices = [
            f"{_capitalize(placed[0])}.",
            f"There is {placed[0]}.",
            f"A picture with one object: {placed[0]}.",
            f"{_capitalize(where[0])}, there is {phrases[0]}.",
            f"A single {o['size']} {o['color']} {o['shape']} {where[0]}.",
        ]
    else:
        rel = f"There is {placed[0]}, and {phrases[1]} {relation(objs[0], objs[1])} it"
        if n == 3:
            rel += f"; {phrases[2]} is {where[2]}"
        choices = [
            f"{_capitalize(_join(placed))}.",
            f"{_capitalize(COUNT_WORDS[n])} objects: {_join(placed)}.",
            f"{rel}.",
            f"An image of {COUNT_WORDS[n]} shapes: {_join(placed)}.",
            '; '.join(_capitalize(f"{w} there is {p}") for w, p in zip(where, phrases)) + '.',
        ]
    return pick(rng, choices)


# -----------------------------------------------------------------------------
# VQA questions: one phrasing per question type; answers balanced per type across a split

QUESTION_TYPES = {  # question_type (VQAv2 style: the question's first words) -> (answer_type, answer space)
    'what color is the': ('other', tuple(COLORS)),
    'what shape is the': ('other', SHAPES),
    'how many': ('number', ('1', '2', '3')),
    'is there a': ('yes/no', ('yes', 'no')),
    'is the': ('yes/no', ('yes', 'no')),
    'where is the': ('other', POSITIONS),
    'what size is the': ('other', SIZES),
}


def candidate_questions(scene):
    """Every unambiguous (question, answer) of a scene, by question type."""
    objs = scene['objects']
    present = {o['shape'] for o in objs}
    return {
        'what color is the': [(f"What color is the {o['shape']}?", o['color']) for o in objs],
        'what shape is the': [(f"What shape is the {o['color']} object?", o['shape']) for o in objs],
        'how many': [("How many objects are there?", str(len(objs)))],
        'is there a': [(f"Is there a {s}?", 'yes' if s in present else 'no') for s in SHAPES],
        'is the': [(f"Is the {o['shape']} {c}?", 'yes' if c == o['color'] else 'no') for o in objs for c in COLORS],
        'where is the': [(f"Where is the {o['color']} {o['shape']}?", o['position']) for o in objs],
        'what size is the': [(f"What size is the {o['color']} {o['shape']}?", o['size']) for o in objs],
    }


def questions(scene, rng, n=None, answer_counts=None):
    """Up to n questions about a scene, of distinct types (all types when n is None).

    Each is {question, answer, answer_type, question_type}. With answer_counts (a dict shared across
    the scenes of a split, filled in here) the split stays balanced: a question is only asked when its
    answer is among the least used answers of its type so far (so per type the counts differ by at
    most one), and the least asked types go first."""
    candidates = candidate_questions(scene)
    counts = answer_counts if answer_counts is not None else {}
    order = sorted(QUESTION_TYPES, key=lambda t: (sum(counts.get(t, Counter()).values()), rng.random()))
    out = []
    for qtype in order:
        if n is not None and len(out) >= n:
            break
        answer_type, space = QUESTION_TYPES[qtype]
        answers = sorted({a for _, a in candidates[qtype]}, key=space.index)
        if answer_counts is not None:
            seen = answer_counts.setdefault(qtype, Counter())
            floor = min(seen[a] for a in space)
            answers = [a for a in answers if seen[a] == floor]
            if not answers:
                continue
        answer = pick(rng, answers)
        question = pick(rng, [q for q, a in candidates[qtype] if a == answer])
        if answer_counts is not None:
            answer_counts[qtype][answer] += 1
        out.append({'question': question, 'answer': answer, 'answer_type': answer_type, 'question_type': qtype})
    return out


def blind_baseline(train_questions, val_questions):
    """Accuracy on val of answering each question type with its most frequent train answer.

    Chance of a type is 1 / its number of possible answers. Returns per-type and overall numbers."""
    train_counts = {}
    for q in train_questions:
        train_counts.setdefault(q['question_type'], Counter())[q['answer']] += 1
    per_type, hits, chance_sum = {}, 0, 0.0
    for qtype in sorted({q['question_type'] for q in val_questions}):
        val = [q for q in val_questions if q['question_type'] == qtype]
        if qtype not in train_counts:
            raise ValueError(f"question type {qtype!r} is in val but not in train")
        # ties broken by the answer text, so the baseline does not depend on data order
        blind = min(train_counts[qtype].items(), key=lambda kv: (-kv[1], kv[0]))[0]
        space = QUESTION_TYPES[qtype][1] if qtype in QUESTION_TYPES else \
            {q['answer'] for q in train_questions + val_questions if q['question_type'] == qtype}
        correct = sum(q['answer'] == blind for q in val)
        per_type[qtype] = {'n': len(val), 'blind_answer': blind, 'accuracy': correct / len(val),
                           'chance': 1 / len(space)}
        hits += correct
        chance_sum += len(val) / len(space)
    n = len(val_questions)
    return {'per_type': per_type, 'accuracy': hits / max(n, 1), 'chance': chance_sum / max(n, 1)}


def unbound_accuracy(scene, question):
    """Expected accuracy on one question of an answerer that knows what a scene holds (its colors, shapes,
    sizes and positions, and how many objects) but not which object has which: what reading the image
    without binding its attributes gives, a second reference beside the blind answerer. It answers at
    random among what the scene holds, or with the likelier answer ("is the" and size questions)."""
    objects, qtype = scene['objects'], question['question_type']
    n = len(objects)
    if qtype in ('how many', 'is there a'):
        return 1.0
    if qtype == 'is the':  # "Is the <shape> <color>?": "no" for sure when no object has that color
        color = question['question'].rstrip('?').split()[-1]
        return 1.0 if color not in {o['color'] for o in objects} else max(1 / n, 1 - 1 / n)
    if qtype == 'what size is the':
        small = sum(o['size'] == 'small' for o in objects)
        return max(small, n - small) / n
    if qtype in ('what color is the', 'what shape is the', 'where is the'):
        return 1 / n  # one of the n colors / shapes / positions the scene holds
    raise ValueError(f"unknown question type {qtype!r}")


# -----------------------------------------------------------------------------
# world facts: what the text corpus teaches and the multiple-choice questions test
#
# Each relation has facts (subject -> one-word answer), statement templates (clauses the corpus uses),
# taught question templates (corpus quizzes and instruction data) and held-out question templates
# (only the multiple-choice stems). Answers of one relation are each other's distractors.

def _article(word):
    return 'an' if word[0] in 'aeiou' else 'a'


def _noun_fields(s, ss, ans, ans_pl=None):
    fields = {'s': s, 'a_s': f"{_article(s)} {s}", 'ss': ss, 'ans': ans, 'a_ans': f"{_article(ans)} {ans}"}
    if ans_pl:
        fields['ans_pl'] = ans_pl
    return fields


def _color_fields(s, ans, plural):
    agree = ('are', 'have', 'look', 'they', 'do') if plural else ('is', 'has', 'looks', 'it', 'does')
    return dict(zip(('be', 'have', 'look', 'it', 'do'), agree), s=s, ans=ans)


_COLOR_FACTS = [  # (subject, color, plural)
    ('ripe plums', 'purple', True), ('eggplants', 'purple', True), ('violets', 'purple', True),
    ('ripe bananas', 'yellow', True), ('lemons', 'yellow', True), ('baby chicks', 'yellow', True),
    ('fresh grass', 'green', False), ('limes', 'green', True), ('cucumbers', 'green', True),
    ('the clear sky', 'blue', False), ('blueberries', 'blue', True), ('the deep sea', 'blue', False),
    ('fresh snow', 'white', False), ('milk', 'white', False), ('swans', 'white', True),
    ('coal', 'black', False), ('crows', 'black', True), ('ravens', 'black', True),
    ('ripe tomatoes', 'red', True), ('ripe strawberries', 'red', True), ('fire trucks', 'red', True),
    ('carrots', 'orange', True), ('pumpkins', 'orange', True), ('tangerines', 'orange', True),
]
_LEG_FACTS = [  # (animal, plural, legs)
    ('bird', 'birds', 'two'), ('chicken', 'chickens', 'two'), ('duck', 'ducks', 'two'),
    ('dog', 'dogs', 'four'), ('cat', 'cats', 'four'), ('horse', 'horses', 'four'),
    ('ant', 'ants', 'six'), ('bee', 'bees', 'six'), ('beetle', 'beetles', 'six'),
    ('spider', 'spiders', 'eight'), ('scorpion', 'scorpions', 'eight'), ('tick', 'ticks', 'eight'),
    ('crab', 'crabs', 'ten'), ('lobster', 'lobsters', 'ten'), ('shrimp', 'shrimp', 'ten'),
]
_SIDE_FACTS = [('triangle', 'triangles', 'three'), ('square', 'squares', 'four'), ('rectangle', 'rectangles', 'four'),
               ('pentagon', 'pentagons', 'five'), ('hexagon', 'hexagons', 'six'), ('heptagon', 'heptagons', 'seven'),
               ('octagon', 'octagons', 'eight')]
_OPPOSITES = [('hot', 'cold'), ('up', 'down'), ('big', 'little'), ('fast', 'slow'), ('day', 'night'),
              ('open', 'closed'), ('wet', 'dry'), ('happy', 'sad'), ('full', 'empty'), ('early', 'late'),
              ('loud', 'quiet'), ('hard', 'soft'), ('long', 'short'), ('heavy', 'light'), ('young', 'old'),
              ('thick', 'thin')]
_CATEGORY_FACTS = {  # category (plural) -> [(member, plural)]
    ('bird', 'birds'): [('robin', 'robins'), ('sparrow', 'sparrows'), ('eagle', 'eagles')],
    ('fish', 'fish'): [('salmon', 'salmon'), ('trout', 'trout'), ('tuna', 'tuna')],
    ('flower', 'flowers'): [('rose', 'roses'), ('tulip', 'tulips'), ('daisy', 'daisies')],
    ('tree', 'trees'): [('oak', 'oaks'), ('pine', 'pines'), ('maple', 'maples')],
    ('vegetable', 'vegetables'): [('carrot', 'carrots'), ('potato', 'potatoes'), ('onion', 'onions')],
    ('fruit', 'fruits'): [('apple', 'apples'), ('pear', 'pears'), ('cherry', 'cherries')],
    ('tool', 'tools'): [('hammer', 'hammers'), ('saw', 'saws'), ('wrench', 'wrenches')],
    ('instrument', 'instruments'): [('piano', 'pianos'), ('violin', 'violins'), ('drum', 'drums')],
    ('insect', 'insects'): [('butterfly', 'butterflies'), ('grasshopper', 'grasshoppers'), ('ladybug', 'ladybugs')],
}
_SOUND_FACTS = [('cow', 'cows', 'moo'), ('dog', 'dogs', 'woof'), ('cat', 'cats', 'meow'), ('duck', 'ducks', 'quack'),
                ('sheep', 'sheep', 'baa'), ('owl', 'owls', 'hoot'), ('pig', 'pigs', 'oink'), ('horse', 'horses', 'neigh'),
                ('bee', 'bees', 'buzz'), ('snake', 'snakes', 'hiss'), ('lion', 'lions', 'roar'), ('frog', 'frogs', 'ribbit')]
_BABY_FACTS = [('cat', 'cats', 'kitten'), ('dog', 'dogs', 'puppy'), ('cow', 'cows', 'calf'), ('sheep', 'sheep', 'lamb'),
               ('horse', 'horses', 'foal'), ('chicken', 'chickens', 'chick'), ('duck', 'ducks', 'duckling'),
               ('bear', 'bears', 'cub'), ('frog', 'frogs', 'tadpole')]
_HOME_FACTS = [('bee', 'bees', 'hive'), ('bird', 'birds', 'nest'), ('spider', 'spiders', 'web'),
               ('rabbit', 'rabbits', 'burrow'), ('horse', 'horses', 'stable'), ('bear', 'bears', 'den'),
               ('pig', 'pigs', 'sty'), ('dog', 'dogs', 'kennel'), ('ant', 'ants', 'anthill')]
_DAYS = ('Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday', 'Sunday')
_MONTHS = ('January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October',
           'November', 'December')
_SENSE_FACTS = [('see', 'eyes'), ('hear', 'ears'), ('smell', 'nose'), ('taste', 'tongue'), ('touch', 'fingers')]

RELATIONS = {
    'color': dict(
        topic='colors',
        facts=[(s, c, _color_fields(s, c, pl)) for s, c, pl in _COLOR_FACTS],
        statements=['{s} {be} {ans}', 'the color of {s} is {ans}', '{s} {have} a {ans} color',
                    '{ans} is the color of {s}', '{s} {look} {ans}', 'if you look at {s}, you will see that {it} {be} {ans}'],
        taught=['Which color {do} {s} have?', 'Name the color of {s}.', 'Do you know the color of {s}?',
                'What is the usual color of {s}?', '{s} {be} which color?'],
        held_out=['What color {be} {s}?', 'What is the color of {s}?'],
    ),
    'legs': dict(
        topic='animal legs',
        facts=[(s, n, _noun_fields(s, ss, n)) for s, ss, n in _LEG_FACTS],
        statements=['{a_s} has {ans} legs', '{ss} have {ans} legs', 'every {s} walks on {ans} legs',
                    'if you count the legs of {a_s}, you get {ans}', 'the {s} is an animal with {ans} legs'],
        taught=['Tell me how many legs {a_s} has.', 'Count the legs of {a_s}.', 'How many legs do {ss} have?',
                'Do you know how many legs {a_s} has?', '{ss} have how many legs?'],
        held_out=['How many legs does {a_s} have?', 'What is the number of legs on {a_s}?'],
    ),
    'sides': dict(
        topic='shapes',
        facts=[(s, n, _noun_fields(s, ss, n)) for s, ss, n in _SIDE_FACTS],
        statements=['{a_s} has {ans} sides', '{a_s} has {ans} corners', '{a_s} is a shape with {ans} sides',
                    'every {s} has {ans} straight sides', 'if you draw {a_s}, you draw {ans} sides'],
        taught=['Tell me how many sides {a_s} has.', 'Count the corners of {a_s}.', 'How many sides do {ss} have?',
                'How many corners are there on {a_s}?', '{a_s} has how many sides?'],
        held_out=['How many sides does {a_s} have?', 'How many corners does {a_s} have?'],
    ),
    'sums': dict(
        topic='adding numbers',
        facts=[(f"{COUNT_WORDS[x]} plus {COUNT_WORDS[y]}", COUNT_WORDS[x + y],
                {'x': COUNT_WORDS[x], 'y': COUNT_WORDS[y], 'ans': COUNT_WORDS[x + y]})
               for x in range(1, 6) for y in range(1, 6)],
        statements=['{x} plus {y} is {ans}', '{x} plus {y} equals {ans}', 'if you add {y} to {x}, you get {ans}',
                    'the sum of {x} and {y} is {ans}', '{x} and {y} make {ans}'],
        taught=['Tell me what {x} plus {y} makes.', 'Add {x} and {y}.', 'What do {x} and {y} make?',
                'What is the sum of {x} and {y}?', '{x} plus {y} equals what?'],
        held_out=['What is {x} plus {y}?', 'How much is {x} plus {y}?'],
    ),
    'opposites': dict(
        topic='opposite words',
        facts=[(s, a, {'s': s, 'ans': a}) for p, q in _OPPOSITES for s, a in ((p, q), (q, p))],
        statements=['the opposite of {s} is {ans}', '{s} is the opposite of {ans}', '{s} and {ans} are opposites',
                    'the reverse of {s} is {ans}', '{s} and {ans} mean opposite things'],
        taught=['Name the opposite of {s}.', 'Which word is the opposite of {s}?', 'Tell me the opposite of {s}.',
                'What is the reverse of {s}?', 'The opposite of {s} is what?'],
        held_out=['What is the opposite of {s}?', 'What word means the opposite of {s}?'],
    ),
    'categories': dict(
        topic='kinds of things',
        facts=[(m, c, _noun_fields(m, mp, c, cp)) for (c, cp), members in _CATEGORY_FACTS.items() for m, mp in members],
        statements=['{a_s} is a kind of {ans}', '{a_s} is {a_ans}', 'the {s} is a type of {ans}', '{ss} are {ans_pl}',
                    'you can think of {a_s} as {a_ans}'],
        taught=['Tell me what kind of thing {a_s} is.', 'Name the group that {a_s} belongs to.',
                'What type of thing is {a_s}?', '{a_s} is a kind of what?', 'To which group do {ss} belong?'],
        held_out=['What kind of thing is {a_s}?', 'Which group does {a_s} belong to?'],
    ),
    'sounds': dict(
        topic='animal sounds',
        facts=[(s, a, _noun_fields(s, ss, a)) for s, ss, a in _SOUND_FACTS],
        statements=['{a_s} says {ans}', 'the {s} goes {ans}', 'when {a_s} makes a sound, it goes {ans}',
                    'you can hear {a_s} say {ans}', 'the sound of {a_s} is {ans}'],
        taught=['Tell me the sound {a_s} makes.', 'Which sound comes from {a_s}?', 'What noise does {a_s} make?',
                'What do {ss} say?', '{a_s} makes which sound?'],
        held_out=['What sound does {a_s} make?', 'What does {a_s} say?'],
    ),
    'babies': dict(
        topic='baby animals',
        facts=[(s, a, _noun_fields(s, ss, a)) for s, ss, a in _BABY_FACTS],
        statements=['a baby {s} is called {a_ans}', 'a young {s} is {a_ans}', '{a_ans} is a baby {s}',
                    'when {a_s} is little, we call it {a_ans}', 'the baby of {a_s} is {a_ans}'],
        taught=['Tell me the name for a baby {s}.', 'Name a young {s}.', 'What is the name of a baby {s}?',
                'What are baby {ss} called?', 'A baby {s} is called what?'],
        held_out=['What is a baby {s} called?', 'What do we call a young {s}?'],
    ),
    'homes': dict(
        topic='animal homes',
        facts=[(s, a, _noun_fields(s, ss, a)) for s, ss, a in _HOME_FACTS],
        statements=['{a_s} lives in {a_ans}', '{ss} make their home in {a_ans}', 'the home of {a_s} is called {a_ans}',
                    '{a_ans} is where {a_s} lives', '{ss} sleep in {a_ans}'],
        taught=['Tell me where {a_s} lives.', 'Name the home of {a_s}.', 'Where do {ss} live?',
                'In what kind of home does {a_s} live?', '{ss} live in what?'],
        held_out=['Where does {a_s} live?', 'What is the home of {a_s} called?'],
    ),
    'days': dict(
        topic='the days of the week',
        facts=[(d, _DAYS[(i + 1) % 7], {'s': d, 'ans': _DAYS[(i + 1) % 7]}) for i, d in enumerate(_DAYS)],
        statements=['the day after {s} is {ans}', '{ans} comes after {s}', '{s} is followed by {ans}',
                    'after {s} comes {ans}', '{ans} is the day right after {s}'],
        taught=['Tell me the day after {s}.', 'Name the day that comes after {s}.', 'What is the day after {s}?',
                'What day is it after {s}?', 'The day after {s} is which day?'],
        held_out=['Which day comes after {s}?', 'What day follows {s}?'],
    ),
    'months': dict(
        topic='the months of the year',
        facts=[(m, _MONTHS[(i + 1) % 12], {'s': m, 'ans': _MONTHS[(i + 1) % 12]}) for i, m in enumerate(_MONTHS)],
        statements=['the month after {s} is {ans}', '{ans} comes after {s}', '{s} is followed by {ans}',
                    'after {s} comes {ans}', '{ans} is the month right after {s}'],
        taught=['Tell me the month after {s}.', 'Name the month that comes after {s}.', 'What is the month after {s}?',
                'What month is it after {s}?', 'The month after {s} is which month?'],
        held_out=['Which month comes after {s}?', 'What month follows {s}?'],
    ),
    'senses': dict(
        topic='the senses',
        facts=[(s, a, {'s': s, 'ans': a}) for s, a in _SENSE_FACTS],
        statements=['we {s} with our {ans}', 'people use their {ans} to {s}', 'to {s}, you use your {ans}',
                    'we need our {ans} to {s}'],
        taught=['Tell me which body part we use to {s}.', 'Name the part of the body that lets us {s}.',
                'What part of the body do we {s} with?', 'What do people use to {s}?', 'We {s} with which body part?'],
        held_out=['Which body part do we use to {s}?', 'What do we {s} with?'],
    ),
}

# the flat list of facts: {relation, subject, answer, fields}
FACTS = [{'relation': name, 'subject': s, 'answer': a, 'fields': fields}
         for name, rel in RELATIONS.items() for s, a, fields in rel['facts']]


def fact_statements(fact):
    """Every clause the corpus may use to state a fact (lower-case start, no final period)."""
    return [t.format(**fact['fields']) for t in RELATIONS[fact['relation']]['statements']]


def fact_questions(fact, kind):
    """The fact's questions of one kind: 'taught' (corpus quizzes, instruction data) or 'held_out' (MC only)."""
    return [_capitalize(t.format(**fact['fields'])) for t in RELATIONS[fact['relation']][kind]]


def answer_pool(relation_name):
    """The distinct answers of a relation, in a fixed order: the distractors of its questions."""
    return list(dict.fromkeys(a for _, a, _ in RELATIONS[relation_name]['facts']))


# -----------------------------------------------------------------------------
# the text corpus: short documents of varied prose around the facts

NAMES = [('Mia', 'she'), ('Tom', 'he'), ('Ana', 'she'), ('Leo', 'he'), ('Sam', 'he'), ('Lily', 'she'), ('Max', 'he'),
         ('Emma', 'she'), ('Noah', 'he'), ('Ava', 'she'), ('Ben', 'he'), ('Zoe', 'she'), ('Eli', 'he'), ('Ruby', 'she'),
         ('Omar', 'he'), ('Nina', 'she'), ('Jack', 'he'), ('Ivy', 'she'), ('Finn', 'he'), ('Maya', 'she'),
         ('Hugo', 'he'), ('Lena', 'she'), ('Theo', 'he'), ('Rosa', 'she')]
FILLER = {
    'relative': ['mother', 'father', 'grandmother', 'grandfather', 'aunt', 'uncle', 'teacher', 'best friend',
                 'older sister', 'older brother', 'neighbor', 'cousin'],
    'place': ['the market', 'the park', 'school', 'the library', 'the farm', 'the beach', 'the garden', 'the zoo',
              'the forest', 'the river', 'the kitchen', 'the museum', 'the lake', 'the hill', 'the bakery',
              'the town square', 'the train station', 'the old bridge'],
    'time': ['in the morning', 'after lunch', 'on a sunny day', 'one rainy afternoon', 'last summer',
             'early on Saturday', 'before dinner', 'late in the evening', 'on the first day of spring',
             'during the holidays', 'after school', 'at the end of the week'],
    'activity': ['read a book', 'draw a picture', 'play a game', 'sing a song', 'bake bread', 'plant seeds',
                 'fly a kite', 'ride a bike', 'build a tower of blocks', 'write a letter', 'paint the fence',
                 'feed the ducks', 'walk the dog', 'clean the room', 'count the stars', 'fix the old clock'],
    'thing': ['a round ball', 'an old map', 'a small box', 'a tin cup', 'a wooden spoon', 'a paper boat',
              'a warm coat', 'a shiny coin', 'a big basket', 'a new pencil', 'a striped scarf', 'a little bell'],
    'feeling': ['happy', 'tired', 'curious', 'excited', 'calm', 'proud', 'hungry', 'sleepy', 'surprised', 'glad'],
    'weather': ['sunny', 'cloudy', 'windy', 'rainy', 'cold', 'warm', 'quiet', 'bright', 'foggy'],
    'book': ['a big book', 'an old book', 'a picture book', 'a school book', 'a thin book'],
}
FILLER_SENTENCES = [
    '{name} went to {place} {time}.',
    '{Time}, {name} wanted to {activity}.',
    '{Pron} took {thing} and walked to {place}.',
    'It was a {weather} day, and {name} felt {feeling}.',
    '{name} and {name2} liked to {activity} together.',
    'At {place}, {name} met {pos} {relative}.',
    '{Pron} decided to {activity} before going home.',
    'The {weather} weather made everyone feel {feeling}.',
    'Later, {name} wrote about the day in a notebook.',
    '{name} smiled and thanked {pos} {relative}.',
    'On the way home, {name} found {thing} near {place}.',
    '{name}\'s {relative} liked to {activity} {time}.',
    '{Pron} was {feeling}, so {pron} sat down for a while.',
    'The weather at {place} was {weather} that day.',
    '{name2} asked {name} to {activity}, and {pron} said yes.',
    'There was {thing} on the table, next to {book}.',
    '{name} put {thing} in a bag and went out.',
    'Nobody at {place} wanted to {activity} {time}.',
]
FACT_SENTENCES = [
    '{Fact}.',
    '{Fact}.',
    '{name}\'s {relative} once said that {fact}.',
    '{name} learned that {fact}.',
    'Everyone at {place} knows that {fact}.',
    'It is true that {fact}.',
    '"{Fact}," said {name}.',
    '{name} told {name2} that {fact}.',
    'Remember that {fact}.',
    'In class, the teacher explained that {fact}.',
    'Did you know that {fact}?',
    '{book} at {place} says that {fact}.',
    'As {name} found out {time}, {fact}.',
]
LESSON_OPENINGS = ['This is a short lesson about {topic}.', 'Today we learn about {topic}.',
                   'Here are some facts about {topic}.', 'Let us talk about {topic}.']
LESSON_LINKS = ['', '', 'Also, ', 'And ', 'Remember: ', 'Next, ', 'It is also true that ']
LESSON_CLOSINGS = ['That is all for today.', 'Try to remember these facts.', 'Now you know a little more about {topic}.',
                   'Read them again tomorrow.', '']
STORY_OPENINGS = [t for t in FILLER_SENTENCES if t.startswith('{name}')]  # the first sentence names the hero
DIALOGUE_REPLIES = ['"Yes," said {name2}.', '"I know," said {name2}.', '"Really?" asked {name2}.',
                    '"That is right," said {name2}.', '"I did not know that," said {name2}.']


class _Fields(dict):
    """Template fields that are filled on first use: names of one document stay fixed, filler is random."""

    def __init__(self, rng, fixed):
        super().__init__(fixed)
        self.rng = rng

    def __missing__(self, key):
        value = self.rng.choice(FILLER[key.lower()])
        value = _capitalize(value) if key[0].isupper() else value
        self[key] = value
        return value


class _FactDecks:
    """Hands out facts and their phrasings round-robin, so every fact is stated equally often and in
    every phrasing once the corpus is a few times larger than the fact list."""

    def __init__(self, rng):
        self.rng = rng
        self.decks = {name: [] for name in RELATIONS}
        self.weights = [len(rel['facts']) for rel in RELATIONS.values()]
        self.phrasing = {}

    def relation(self):
        return self.rng.choices(list(RELATIONS), weights=self.weights)[0]

    def fact(self, relation=None):
        relation = relation or self.relation()
        deck = self.decks[relation]
        if not deck:
            deck.extend(f for f in FACTS if f['relation'] == relation)
            self.rng.shuffle(deck)
        return deck.pop()

    def statement(self, fact):
        statements = fact_statements(fact)
        key = (fact['relation'], fact['subject'])
        i = self.phrasing.get(key, self.rng.randrange(len(statements)))
        self.phrasing[key] = i + 1
        return statements[i % len(statements)]


def _fact_sentence(rng, fields, clause):
    f = _Fields(rng, fields)
    f['fact'], f['Fact'] = clause, _capitalize(clause)
    return _capitalize(rng.choice(FACT_SENTENCES).format_map(f))


def _filler_sentence(rng, fields, templates=FILLER_SENTENCES):
    return _capitalize(rng.choice(templates).format_map(_Fields(rng, fields)))


def _people(rng):
    (name, pron), (name2, _) = rng.sample(NAMES, 2)
    return {'name': name, 'name2': name2, 'pron': pron, 'Pron': _capitalize(pron),
            'pos': 'her' if pron == 'she' else 'his'}


def _story(rng, decks, n_facts):
    fields = _people(rng)
    sentences = [_filler_sentence(rng, fields, STORY_OPENINGS)]
    sentences += [_filler_sentence(rng, fields) for _ in range(rng.randint(2, 6))]
    for _ in range(n_facts):
        fact = decks.fact()
        sentences.insert(rng.randint(1, len(sentences)), _fact_sentence(rng, fields, decks.statement(fact)))
    return ' '.join(sentences)


def _lesson(rng, decks):
    relation = decks.relation()
    topic = RELATIONS[relation]['topic']
    fields = _people(rng)
    sentences = [rng.choice(LESSON_OPENINGS).format(topic=topic)]
    for i in range(rng.randint(3, 6)):
        clause = decks.statement(decks.fact(relation))
        if rng.random() < 0.3:
            sentences.append(_fact_sentence(rng, fields, clause))
        else:
            sentences.append(_capitalize((rng.choice(LESSON_LINKS) if i else '') + clause) + '.')
    sentences.append(rng.choice(LESSON_CLOSINGS).format(topic=topic))
    return ' '.join(s for s in sentences if s)


def _dialogue(rng, decks):
    """Two people trade facts, or one asks (a taught question) and the other answers."""
    fields = _people(rng)
    name, name2 = fields['name'], fields['name2']
    lines = [_filler_sentence(rng, fields, STORY_OPENINGS)]
    if rng.random() < 0.5:
        first, second = decks.fact(), decks.fact()
        lines += [f'"Did you know that {decks.statement(first)}?" asked {name}.',
                  rng.choice(DIALOGUE_REPLIES).format(**fields),
                  f'"And {decks.statement(second)}," said {name}.']
    else:
        for _ in range(rng.randint(1, 2)):
            fact = decks.fact()
            question = rng.choice(fact_questions(fact, 'taught'))
            lines.append(f'"{question}" asked {name}.' if question.endswith('?') else f'"{question[:-1]}," said {name}.')
            answer = _capitalize(decks.statement(fact) if rng.random() < 0.5 else fact['answer'])
            lines.append(f'"{answer}," said {name2}.')
    if rng.random() < 0.5:
        lines.append(_filler_sentence(rng, fields))
    return ' '.join(lines)


def _quiz(rng, decks):
    relation = decks.relation()
    lines = [f"Here is a short quiz about {RELATIONS[relation]['topic']}."]
    for _ in range(rng.randint(2, 4)):
        fact = decks.fact(relation)
        lines.append(f"Question: {rng.choice(fact_questions(fact, 'taught'))}\nAnswer: {fact['answer']}")
    return '\n'.join(lines)


def corpus_documents(rng, n_bytes):
    """Documents (strings) of the text corpus, until about n_bytes of text; rng is a random.Random.

    Mix: stories with facts woven in, lessons on one topic, dialogues, quizzes in the ARC prompt
    layout with taught phrasings, and stories without facts (structure only)."""
    decks = _FactDecks(rng)
    docs, total = [], 0
    while total < n_bytes:
        kind = rng.random()
        if kind < 0.35:
            doc = _story(rng, decks, rng.randint(1, 2))
        elif kind < 0.57:
            doc = _lesson(rng, decks)
        elif kind < 0.72:
            doc = _dialogue(rng, decks)
        elif kind < 0.92:
            doc = _quiz(rng, decks)
        else:
            doc = _story(rng, decks, 0)
        docs.append(doc)
        total += len(doc) + 1
    return docs


# -----------------------------------------------------------------------------
# multiple-choice text questions (ARC layout) and text-only instruction conversations

def mc_questions(rng, n):
    """n ARC-style items asking the facts with held-out phrasings; rng is a random.Random.

    Every fact is asked once before any is asked twice; mostly 4 choices (some 3 and 5), distractors
    from the same relation; the correct position is the least used one so far for that many choices."""
    stems = [fact_questions(f, 'held_out') for f in FACTS]
    total = sum(len(s) for s in stems)
    if not 0 < n <= total:
        raise ValueError(f"n_mc must be between 1 and {total} (facts x held-out phrasings), got {n}")
    order = []
    for round_ in range(max(len(s) for s in stems)):  # round r: each fact's r-th phrasing, rotated per fact
        facts = [i for i in range(len(FACTS)) if round_ < len(stems[i])]
        rng.shuffle(facts)
        order += [(FACTS[i], stems[i][(i + round_) % len(stems[i])]) for i in facts]
    position_counts = {k: Counter() for k in (3, 4, 5)}
    items = []
    for idx, (fact, stem) in enumerate(order[:n]):
        # distractors: other answers of the relation, but not a word of the stem (no "opposite of full: full")
        stem_words = set(stem.rstrip('?.').split())
        pool = [a for a in answer_pool(fact['relation']) if a != fact['answer'] and a not in stem_words]
        k = min(rng.choices((3, 4, 5), weights=(0.15, 0.7, 0.15))[0], len(pool) + 1)
        seen = position_counts[k]
        least = min(seen[p] for p in range(k))
        correct = rng.choice([p for p in range(k) if seen[p] == least])
        seen[correct] += 1
        choices = rng.sample(pool, k - 1)
        choices.insert(correct, fact['answer'])
        labels = 'ABCDE'[:k]
        items.append({'id': f"shapes-mc-{idx:04d}",
                      'question': {'stem': stem, 'choices': [{'text': t, 'label': l} for t, l in zip(choices, labels)]},
                      'answerKey': labels[correct]})
    return items


SHORT_ANSWER = 'Answer the question using a single word or phrase.'
DESCRIBE = ['Describe the image briefly.', 'What is in this picture?', 'Write a short caption for this image.']


def text_conversation(rng, decks):
    """A text-only conversation of 2-3 turns about facts: taught questions, answered with the word
    (when asked for a short answer) or with a full sentence."""
    turns = []
    for _ in range(rng.randint(2, 3)):
        fact = decks.fact()
        question = rng.choice(fact_questions(fact, 'taught'))
        if rng.random() < 0.5:
            turns += [{'from': 'human', 'value': f"{question}\n{SHORT_ANSWER}"}, {'from': 'gpt', 'value': fact['answer']}]
        else:
            turns += [{'from': 'human', 'value': question},
                      {'from': 'gpt', 'value': _capitalize(decks.statement(fact)) + '.'}]
    return turns


def image_conversation(scene, rng, answer_counts, n_questions):
    """A LLaVA-style conversation about one image: sometimes a caption request first, then QA turns.
    The short-answer instruction follows the first question only: evaluation asks each question as a
    first turn, and repeating the instruction would take half of every later turn's tokens."""
    qs = questions(scene, rng, n_questions, answer_counts)
    turns = []
    if rng.random() < 0.2:
        turns += [{'from': 'human', 'value': pick(rng, DESCRIBE)}, {'from': 'gpt', 'value': caption(scene, rng)}]
    turns += [t for i, q in enumerate(qs)
              for t in ({'from': 'human', 'value': q['question'] + (f"\n{SHORT_ANSWER}" if i == 0 else '')},
                        {'from': 'gpt', 'value': q['answer']})]
    turns[0]['value'] = '<image>\n' + turns[0]['value']
    return turns, qs


def vqa_answers(answer, answer_type):
    """The 10 annotator answers of a question. Numbers are sometimes written as words (the official
    normalization maps them to digits, so the ground truth stays one answer)."""
    words = [answer] * 10
    if answer_type == 'number':
        words[7:] = [COUNT_WORDS[int(answer)]] * 3
    return [{'answer': w, 'answer_confidence': 'yes', 'answer_id': i + 1} for i, w in enumerate(words)]


# -----------------------------------------------------------------------------
# the world's words: the vocabulary of the CPU study's tokenizer (prepare_data.py, 'shapes')

_WORD_PIECE = re.compile(r" ?[A-Za-z]+| ?[0-9]+")  # GPT-2's letter and number pieces, for ASCII text


@lru_cache(maxsize=1)
def vocabulary():
    """Every word piece (' circle', 'What', ' 2', ...) of a fixed sample of everything the world writes,
    sorted: the same list on every machine for this version of the generators. A tokenizer that
    makes each one a token needs ~4x fewer tokens than bytes, and every VQA answer is one token."""
    rng, text_rng = np.random.default_rng(2024), random.Random(2024)

    def chat(turns):  # as prepare_data.chat_tokens lays a conversation out: the answer after a space
        return '\n'.join(f"{'User:' if t['from'] == 'human' else 'Assistant:'} {t['value']}" for t in turns)

    texts = []
    for _ in range(400):
        scene = make_scene(rng)
        texts += [caption(scene, rng), chat(image_conversation(scene, rng, {}, len(QUESTION_TYPES))[0])]
    texts += corpus_documents(text_rng, 200_000)
    decks = _FactDecks(text_rng)
    texts += [chat(text_conversation(text_rng, decks)) for _ in range(200)]
    for item in mc_questions(text_rng, sum(len(fact_questions(f, 'held_out')) for f in FACTS)):
        texts += [item['question']['stem']] + [c['text'] for c in item['question']['choices']]
    return tuple(sorted({piece for t in texts for piece in _WORD_PIECE.findall(t)}))


# -----------------------------------------------------------------------------
# writing the world

def split_rng(seed, split):
    """The numpy Generator of one split: a seed stream of its own."""
    return np.random.default_rng([seed, SPLITS[split]])


def split_random(seed, split):
    """A random.Random for the text of one split (plain Python is faster for many small choices)."""
    return random.Random(int(np.random.SeedSequence([seed, SPLITS[split]]).generate_state(1)[0]))


def _save_png(img, path):
    Image.fromarray(img).save(path, compress_level=1)


def _write_jsonl(path, rows):
    with open(path, 'w') as f:
        for row in rows:
            f.write(json.dumps(row) + '\n')


def _write_json(path, obj):
    with open(path, 'w') as f:
        json.dump(obj, f)


OUTPUTS = ('captions', 'instruct', 'vqa', 'text', 'text_mc', 'world.json')


def write_world(out_dir, seed=0, image_size=IMAGE_SIZE, n_caption=N_CAPTION, n_instruct=N_INSTRUCT,
                n_instruct_text=N_INSTRUCT_TEXT, n_val=N_VAL, val_questions_per_image=VAL_QUESTIONS_PER_IMAGE,
                text_mb=TEXT_MB, val_text_mb=None, n_mc=N_MC, overwrite=False, verbose=False):
    """Write the shapes world under out_dir (layout in the module docstring); returns world.json's dict.

    val_text_mb defaults to 5 % of text_mb (at least 0.02). With overwrite=True the outputs of an
    earlier world in out_dir are removed first; other files there are left alone."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    for name, value in [('n_caption', n_caption), ('n_instruct', n_instruct), ('n_val', n_val), ('n_mc', n_mc),
                        ('val_questions_per_image', val_questions_per_image)]:
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not isinstance(n_instruct_text, int) or n_instruct_text < 0:
        raise ValueError(f"n_instruct_text must be a non-negative integer, got {n_instruct_text!r}")
    if not val_questions_per_image <= len(QUESTION_TYPES):
        raise ValueError(f"val_questions_per_image must be at most {len(QUESTION_TYPES)} (one per question type)")
    max_mc = sum(len(fact_questions(f, 'held_out')) for f in FACTS)
    if n_mc > max_mc:
        raise ValueError(f"n_mc must be at most {max_mc} (facts x held-out phrasings), got {n_mc}")
    val_text_mb = val_text_mb if val_text_mb is not None else max(0.02, text_mb * 0.05)
    if not (text_mb > 0 and val_text_mb > 0):
        raise ValueError(f"text_mb and val_text_mb must be positive, got {text_mb!r} and {val_text_mb!r}")
    if not isinstance(image_size, int) or image_size < 12:
        raise ValueError(f"image_size must be an integer of at least 12 px, got {image_size!r}")
    existing = [p for p in OUTPUTS if os.path.exists(os.path.join(out_dir, p))]
    if existing and not overwrite:
        raise FileExistsError(f"{out_dir} already holds {', '.join(existing)}; pass overwrite=True (--overwrite) "
                              f"to replace them")
    for p in existing:
        path = os.path.join(out_dir, p)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    for sub in ('captions/images', 'instruct/images', 'vqa/images', 'text', 'text_mc'):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
    t0 = time.time()

    # captions (train)
    rng = split_rng(seed, 'captions')
    rows = []
    for i in range(n_caption):
        scene = make_scene(rng)
        image = f"images/{i:06d}.png"
        _save_png(render(scene, image_size, rng), os.path.join(out_dir, 'captions', image))
        rows.append({'image': image, 'caption': caption(scene, rng)})
    _write_jsonl(os.path.join(out_dir, 'captions', 'captions.jsonl'), rows)

    # instruction data: image conversations (the VQA train split) and text-only conversations
    rng = split_rng(seed, 'instruct')
    conversations, train_questions, counts = [], [], {}
    for i in range(n_instruct):
        scene = make_scene(rng)
        image = f"images/{i:06d}.png"
        _save_png(render(scene, image_size, rng), os.path.join(out_dir, 'instruct', image))
        turns, qs = image_conversation(scene, rng, counts, int(rng.integers(5, 8)))
        conversations.append({'id': f"shapes-{i:06d}", 'image': image, 'conversations': turns})
        train_questions += qs
    text_rng = split_random(seed, 'instruct_text')
    decks = _FactDecks(text_rng)
    for i in range(n_instruct_text):
        conversations.append({'id': f"shapes-text-{i:06d}", 'conversations': text_conversation(text_rng, decks)})
    order = list(range(len(conversations)))
    text_rng.shuffle(order)  # text-only conversations spread through the list, as in the LLaVA mix
    _write_json(os.path.join(out_dir, 'instruct', 'llava.json'), [conversations[i] for i in order])

    # VQA val in the VQAv2 layout
    rng = split_rng(seed, 'vqa')
    vqa_questions, annotations, val_questions, counts, unbound = [], [], [], {}, {}
    for i in range(n_val):
        image_id = i + 1
        scene = make_scene(rng)
        _save_png(render(scene, image_size, rng), os.path.join(out_dir, 'vqa', 'images', f"{image_id:012d}.png"))
        for k, q in enumerate(questions(scene, rng, val_questions_per_image, counts)):
            question_id = image_id * 1000 + k
            vqa_questions.append({'image_id': image_id, 'question': q['question'], 'question_id': question_id})
            annotations.append({'question_id': question_id, 'image_id': image_id, 'question_type': q['question_type'],
                                'answer_type': q['answer_type'], 'multiple_choice_answer': q['answer'],
                                'answers': vqa_answers(q['answer'], q['answer_type'])})
            val_questions.append(q)
            unbound.setdefault(q['question_type'], []).append(unbound_accuracy(scene, q))
    info = {'description': 'shapes world VQA, val split', 'seed': seed}
    _write_json(os.path.join(out_dir, 'vqa', 'questions.json'),
                {'info': info, 'task_type': 'Open-Ended', 'data_type': 'shapes', 'data_subtype': 'val',
                 'questions': vqa_questions})
    _write_json(os.path.join(out_dir, 'vqa', 'annotations.json'),
                {'info': info, 'data_type': 'shapes', 'data_subtype': 'val', 'annotations': annotations})

    # text corpus, its held-out val documents, and the multiple-choice questions
    corpus = corpus_documents(split_random(seed, 'corpus'), int(text_mb * 1e6))
    val_docs = corpus_documents(split_random(seed, 'text_val'), int(val_text_mb * 1e6))
    _write_jsonl(os.path.join(out_dir, 'text', 'corpus.jsonl'), ({'text': d} for d in corpus))
    _write_jsonl(os.path.join(out_dir, 'text', 'val.jsonl'), ({'text': d} for d in val_docs))
    mc = mc_questions(split_random(seed, 'mc'), n_mc)
    _write_jsonl(os.path.join(out_dir, 'text_mc', 'arc_shapes.jsonl'), mc)

    unbound_report = {'accuracy': sum(map(sum, unbound.values())) / max(len(val_questions), 1),
                      'per_type': {t: {'n': len(v), 'accuracy': sum(v) / len(v)} for t, v in sorted(unbound.items())}}
    n_text_turns = sum(len(c['conversations']) // 2 for c in conversations if 'image' not in c)
    world = {
        'seed': seed,
        'image_size': image_size,
        'sizes': {'n_caption': n_caption, 'n_instruct': n_instruct, 'n_instruct_text': n_instruct_text,
                  'n_val': n_val, 'val_questions_per_image': val_questions_per_image, 'text_mb': text_mb,
                  'val_text_mb': val_text_mb, 'n_mc': n_mc},
        'vocab': {'shapes': list(SHAPES), 'colors': list(COLORS), 'sizes': list(SIZES), 'positions': list(POSITIONS)},
        'question_types': {t: {'answer_type': at, 'answers': list(space)} for t, (at, space) in QUESTION_TYPES.items()},
        'image_roots': {'captions/captions.jsonl': 'captions', 'instruct/llava.json': 'instruct'},
        'facts': [{'relation': f['relation'], 'subject': f['subject'], 'answer': f['answer']} for f in FACTS],
        'counts': {
            'caption_images': n_caption,
            'instruct_images': n_instruct,
            'instruct_image_qa_turns': len(train_questions),
            'instruct_text_conversations': n_instruct_text,
            'instruct_text_turns': n_text_turns,
            'vqa_images': n_val,
            'vqa_questions': len(vqa_questions),
            'text_facts': len(FACTS),
            'text_documents': len(corpus),
            'text_bytes': sum(len(d) for d in corpus),
            'val_documents': len(val_docs),
            'val_bytes': sum(len(d) for d in val_docs),
            'mc_questions': len(mc),
        },
        'blind_baseline': blind_baseline(train_questions, val_questions),
        'unbound_baseline': unbound_report,
        'seconds': round(time.time() - t0, 2),
    }
    # the timing is kept out of the file so that the same seed gives byte-identical files
    _write_json(os.path.join(out_dir, 'world.json'), {k: v for k, v in world.items() if k != 'seconds'})
    if verbose:
        for key, value in world['counts'].items():
            print(f"{key:>28}: {value:,}")
        blind = world['blind_baseline']
        print(f"{'blind VQA baseline':>28}: {blind['accuracy']:.3f} (chance {blind['chance']:.3f})")
        print(f"{'unbound VQA baseline':>28}: {world['unbound_baseline']['accuracy']:.3f}")
        print(f"wrote {out_dir} in {world['seconds']:.1f} s")
    return world


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Write the synthetic shapes world (images, captions, VQA, text).")
    parser.add_argument('--out', default='data/shapes_raw', help="output folder")
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--image-size', type=int, default=IMAGE_SIZE)
    parser.add_argument('--n-caption', type=int, default=N_CAPTION, help="caption images (train)")
    parser.add_argument('--n-instruct', type=int, default=N_INSTRUCT, help="instruction images (train)")
    parser.add_argument('--n-instruct-text', type=int, default=N_INSTRUCT_TEXT, help="text-only conversations")
    parser.add_argument('--n-val', type=int, default=N_VAL, help="VQA val images")
    parser.add_argument('--val-questions-per-image', type=int, default=VAL_QUESTIONS_PER_IMAGE)
    parser.add_argument('--text-mb', type=float, default=TEXT_MB, help="text corpus size in MB")
    parser.add_argument('--val-text-mb', type=float, default=None, help="held-out text size (default 5%% of corpus)")
    parser.add_argument('--n-mc', type=int, default=N_MC, help="multiple-choice text questions")
    parser.add_argument('--overwrite', action='store_true', help="replace a world already in --out")
    args = parser.parse_args()
    try:
        write_world(args.out, seed=args.seed, image_size=args.image_size, n_caption=args.n_caption,
                    n_instruct=args.n_instruct, n_instruct_text=args.n_instruct_text, n_val=args.n_val,
                    val_questions_per_image=args.val_questions_per_image, text_mb=args.text_mb,
                    val_text_mb=args.val_text_mb, n_mc=args.n_mc, overwrite=args.overwrite, verbose=True)
    except (ValueError, FileExistsError) as e:
        parser.error(str(e))
