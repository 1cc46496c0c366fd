"""
The "shapes world": a synthetic, seeded data set on which the whole study runs on a CPU.

Images of 1-3 colored shapes on a textured background, their captions, VQA questions about them
and LLaVA-style conversations; with shapes_text.py's text corpus about a fixed set of world facts
and its multiple-choice questions, which ask those facts in phrasings the corpus never uses. A tiny
model can learn it from a few million tokens; the vision questions need the image (their answers are
balanced, so a blind answerer is at chance); the text questions need the facts (the corpus is the
only place they are taught).

    python shapes.py --out=data/shapes_raw --seed=0 --n_caption=2000 --overwrite

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

Here: the world's sizes, scenes, rendering, captions, VQA questions and the blind and unbound reference
answerers, image conversations, the tokenizer's vocabulary(), and write_world. Spelling is American
("color"), as in VQAv2.
"""
import json
import numbers
import os
import random
import re
import shutil
import sys
import time
from collections import Counter
from functools import lru_cache

import numpy as np
from PIL import Image

import configurator
from shapes_text import (COUNT_WORDS, FACTS, FactDecks, capitalize, corpus_documents, max_mc_questions,
                         mc_questions, text_conversation)
from shards import atomic_write_bytes
from tokenizer import VQA_INSTRUCTION

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

# the command line: write_world's arguments (val_text_mb None: 5 % of text_mb, at least 0.02)
DEFAULTS = dict(out='data/shapes_raw', seed=0, image_size=IMAGE_SIZE, n_caption=N_CAPTION,
                n_instruct=N_INSTRUCT, n_instruct_text=N_INSTRUCT_TEXT, n_val=N_VAL,
                val_questions_per_image=VAL_QUESTIONS_PER_IMAGE, text_mb=TEXT_MB, val_text_mb=None, n_mc=N_MC,
                overwrite=False)

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
CELL = {'left': (0, 1), 'middle': (1, 1), 'right': (2, 1), 'top': (1, 0), 'bottom': (1, 2)}  # (col, row), 3x3
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
    return {'objects': [{'shape': SHAPES[s], 'color': color_names[c], 'size': SIZES[z],
                         'position': POSITIONS[p]} for s, c, z, p in zip(shapes, colors, sizes, positions)]}


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
        if obj.get('shape') not in SHAPES or obj.get('color') not in COLORS \
                or obj.get('size') not in SIZE_RADIUS or obj.get('position') not in CELL:
            raise ValueError(f"bad object in scene: {obj}")
    # all random numbers of the image in two calls (one call per number would dominate the time)
    draws = iter(rng.random(8 + 6 * len(objects)))
    noise = rng.integers(-12, 13, (size, size, 3), dtype=np.int16)  # (S, S, 3)
    xs, ys = _pixel_grid(size)
    grey = np.float32(BACKGROUND_GREY[0] + (BACKGROUND_GREY[1] - BACKGROUND_GREY[0]) * next(draws))
    tint = np.array([next(draws) for _ in range(3)], dtype=np.float32) * 16 - 8  # (3,)
    angle, freq = np.pi * next(draws), 0.15 + 0.35 * next(draws)
    phase, amplitude = 2 * np.pi * next(draws), 4 + 6 * next(draws)
    across = xs * np.float32(np.cos(angle)) + ys * np.float32(np.sin(angle))  # (S, S) along the angle
    stripes = np.float32(amplitude) * np.sin(np.float32(freq) * across + np.float32(phase))  # (S, S)
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
            f"{capitalize(placed[0])}.",
            f"There is {placed[0]}.",
            f"A picture with one object: {placed[0]}.",
            f"{capitalize(where[0])}, there is {phrases[0]}.",
            f"A single {o['size']} {o['color']} {o['shape']} {where[0]}.",
        ]
    else:
        rel = f"There is {placed[0]}, and {phrases[1]} {relation(objs[0], objs[1])} it"
        if n == 3:
            rel += f"; {phrases[2]} is {where[2]}"
        choices = [
            f"{capitalize(_join(placed))}.",
            f"{capitalize(COUNT_WORDS[n])} objects: {_join(placed)}.",
            f"{rel}.",
            f"An image of {COUNT_WORDS[n]} shapes: {_join(placed)}.",
            '; '.join(capitalize(f"{w} there is {p}") for w, p in zip(where, phrases)) + '.',
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
        'is the': [(f"Is the {o['shape']} {c}?", 'yes' if c == o['color'] else 'no')
                   for o in objs for c in COLORS],
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
        out.append({'question': question, 'answer': answer, 'answer_type': answer_type,
                    'question_type': qtype})
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
# image conversations (the instruction data) and VQA annotations

DESCRIBE = ['Describe the image briefly.', 'What is in this picture?',
            'Write a short caption for this image.']


def image_conversation(scene, rng, answer_counts, n_questions):
    """A LLaVA-style conversation about one image: sometimes a caption request first, then QA turns.
    The short-answer instruction follows the first question only: evaluation asks each question as a
    first turn, and repeating the instruction would take half of every later turn's tokens."""
    qs = questions(scene, rng, n_questions, answer_counts)
    turns = []
    if rng.random() < 0.2:
        turns += [{'from': 'human', 'value': pick(rng, DESCRIBE)},
                  {'from': 'gpt', 'value': caption(scene, rng)}]
    for i, q in enumerate(qs):
        turns += [{'from': 'human', 'value': q['question'] + (f"\n{VQA_INSTRUCTION}" if i == 0 else '')},
                  {'from': 'gpt', 'value': q['answer']}]
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

    def chat(turns):  # as tokenizer.chat_tokens lays a conversation out: the answer after a space
        return '\n'.join(f"{'User:' if t['from'] == 'human' else 'Assistant:'} {t['value']}"
                         for t in turns)

    texts = []
    for _ in range(400):
        scene = make_scene(rng)
        texts += [caption(scene, rng), chat(image_conversation(scene, rng, {}, len(QUESTION_TYPES))[0])]
    texts += corpus_documents(text_rng, 200_000)
    decks = FactDecks(text_rng)
    texts += [chat(text_conversation(text_rng, decks)) for _ in range(200)]
    for item in mc_questions(text_rng, max_mc_questions()):
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
    atomic_write_bytes(path, json.dumps(obj).encode())  # world.json, written last, marks a finished world


OUTPUTS = ('captions', 'instruct', 'vqa', 'text', 'text_mc', 'world.json')


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_sizes(seed, image_size, n_caption, n_instruct, n_instruct_text, n_val, val_questions_per_image,
                 text_mb, val_text_mb, n_mc):
    """Raise a ValueError naming the first bad argument of write_world."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    for name, value in [('n_caption', n_caption), ('n_instruct', n_instruct), ('n_val', n_val),
                        ('n_mc', n_mc), ('val_questions_per_image', val_questions_per_image)]:
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not isinstance(n_instruct_text, int) or n_instruct_text < 0:
        raise ValueError(f"n_instruct_text must be a non-negative integer, got {n_instruct_text!r}")
    if not val_questions_per_image <= len(QUESTION_TYPES):
        raise ValueError(f"val_questions_per_image must be at most {len(QUESTION_TYPES)} "
                         f"(one per question type)")
    if n_mc > max_mc_questions():
        raise ValueError(f"n_mc must be at most {max_mc_questions()} (facts x held-out phrasings), "
                         f"got {n_mc}")
    if not (_is_number(text_mb) and text_mb > 0 and _is_number(val_text_mb) and val_text_mb > 0):
        raise ValueError(f"text_mb and val_text_mb must be positive, got {text_mb!r} and {val_text_mb!r}")
    if not isinstance(image_size, int) or image_size < 12:
        raise ValueError(f"image_size must be an integer of at least 12 px, got {image_size!r}")


def _clear_outputs(out_dir, overwrite):
    """Make the output folders, removing an earlier world's outputs first when overwrite is True."""
    existing = [p for p in OUTPUTS if os.path.exists(os.path.join(out_dir, p))]
    if existing and not overwrite:
        raise FileExistsError(f"{out_dir} already holds {', '.join(existing)}; pass overwrite=True "
                              f"(--overwrite) to replace them")
    for p in existing:
        path = os.path.join(out_dir, p)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    for sub in ('captions/images', 'instruct/images', 'vqa/images', 'text', 'text_mc'):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)


def _write_captions(out_dir, seed, image_size, n_caption):
    rng = split_rng(seed, 'captions')
    rows = []
    for i in range(n_caption):
        scene = make_scene(rng)
        image = f"images/{i:06d}.png"
        _save_png(render(scene, image_size, rng), os.path.join(out_dir, 'captions', image))
        rows.append({'image': image, 'caption': caption(scene, rng)})
    _write_jsonl(os.path.join(out_dir, 'captions', 'captions.jsonl'), rows)


def _write_instruct(out_dir, seed, image_size, n_instruct, n_instruct_text):
    """Image conversations (the VQA train split) and text-only conversations, in one llava.json.
    Returns (conversations, the questions of the image conversations)."""
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
    decks = FactDecks(text_rng)
    for i in range(n_instruct_text):
        turns = text_conversation(text_rng, decks)
        conversations.append({'id': f"shapes-text-{i:06d}", 'conversations': turns})
    order = list(range(len(conversations)))
    text_rng.shuffle(order)  # text-only conversations spread through the list, as in the LLaVA mix
    conversations = [conversations[i] for i in order]
    _write_json(os.path.join(out_dir, 'instruct', 'llava.json'), conversations)
    return conversations, train_questions


def _write_vqa(out_dir, seed, image_size, n_val, val_questions_per_image):
    """The VQA val split in the VQAv2 layout. Returns (its questions, the unbound answerer's expected
    accuracy per question, by question type)."""
    rng = split_rng(seed, 'vqa')
    vqa_questions, annotations, val_questions, counts, unbound = [], [], [], {}, {}
    for i in range(n_val):
        image_id = i + 1
        scene = make_scene(rng)
        image = os.path.join(out_dir, 'vqa', 'images', f"{image_id:012d}.png")
        _save_png(render(scene, image_size, rng), image)
        for k, q in enumerate(questions(scene, rng, val_questions_per_image, counts)):
            question_id = image_id * 1000 + k
            vqa_questions.append({'image_id': image_id, 'question': q['question'],
                                  'question_id': question_id})
            annotations.append({'question_id': question_id, 'image_id': image_id,
                                'question_type': q['question_type'], 'answer_type': q['answer_type'],
                                'multiple_choice_answer': q['answer'],
                                'answers': vqa_answers(q['answer'], q['answer_type'])})
            val_questions.append(q)
            unbound.setdefault(q['question_type'], []).append(unbound_accuracy(scene, q))
    info = {'description': 'shapes world VQA, val split', 'seed': seed}
    _write_json(os.path.join(out_dir, 'vqa', 'questions.json'),
                {'info': info, 'task_type': 'Open-Ended', 'data_type': 'shapes', 'data_subtype': 'val',
                 'questions': vqa_questions})
    _write_json(os.path.join(out_dir, 'vqa', 'annotations.json'),
                {'info': info, 'data_type': 'shapes', 'data_subtype': 'val', 'annotations': annotations})
    return val_questions, unbound


def _write_text(out_dir, seed, text_mb, val_text_mb, n_mc):
    """The text corpus, its held-out val documents and the multiple-choice questions."""
    corpus = corpus_documents(split_random(seed, 'corpus'), int(text_mb * 1e6))
    val_docs = corpus_documents(split_random(seed, 'text_val'), int(val_text_mb * 1e6))
    _write_jsonl(os.path.join(out_dir, 'text', 'corpus.jsonl'), ({'text': d} for d in corpus))
    _write_jsonl(os.path.join(out_dir, 'text', 'val.jsonl'), ({'text': d} for d in val_docs))
    mc = mc_questions(split_random(seed, 'mc'), n_mc)
    _write_jsonl(os.path.join(out_dir, 'text_mc', 'arc_shapes.jsonl'), mc)
    return corpus, val_docs, mc


def written_world(path):
    """world.json's dict; None when there is none or it was cut short (write_world writes it last)."""
    try:
        with open(path, 'rb') as f:
            world = json.loads(f.read().decode('utf-8'))
    except (FileNotFoundError, ValueError):
        return None
    return world if isinstance(world, dict) else None


def kept_world(raw, **asked):
    """The world an earlier run wrote under raw with the settings asked (seed, image_size, sizes); None
    when there is none or it was cut short; one line naming the settings that differ when they do."""
    world = written_world(os.path.join(raw, 'world.json'))
    if world is None:
        return None
    found = dict(seed=world['seed'], image_size=world['image_size'], **world['sizes'])
    differ = {k: (v, found.get(k)) for k, v in asked.items() if found.get(k) != v}
    if differ:
        found = ', '.join(f'{k}={b} there, {a} asked' for k, (a, b) in differ.items())
        raise SystemExit(f"{raw} holds a world made with other settings ({found}); "
                         f"remove {os.path.dirname(raw)} or choose another --out")
    return world


def write_world(out_dir, seed=0, image_size=IMAGE_SIZE, n_caption=N_CAPTION, n_instruct=N_INSTRUCT,
                n_instruct_text=N_INSTRUCT_TEXT, n_val=N_VAL, val_questions_per_image=VAL_QUESTIONS_PER_IMAGE,
                text_mb=TEXT_MB, val_text_mb=None, n_mc=N_MC, overwrite=False, verbose=False):
    """Write the shapes world under out_dir (layout in the module docstring); returns world.json's dict.

    val_text_mb defaults to 5 % of text_mb (at least 0.02). With overwrite=True the outputs of an
    earlier world in out_dir are removed first; other files there are left alone."""
    if val_text_mb is None and _is_number(text_mb):
        val_text_mb = max(0.02, text_mb * 0.05)
    _check_sizes(seed, image_size, n_caption, n_instruct, n_instruct_text, n_val, val_questions_per_image,
                 text_mb, val_text_mb, n_mc)
    _clear_outputs(out_dir, overwrite)
    t0 = time.time()
    _write_captions(out_dir, seed, image_size, n_caption)
    conversations, train_questions = _write_instruct(out_dir, seed, image_size, n_instruct, n_instruct_text)
    val_questions, unbound = _write_vqa(out_dir, seed, image_size, n_val, val_questions_per_image)
    corpus, val_docs, mc = _write_text(out_dir, seed, text_mb, val_text_mb, n_mc)

    unbound_report = {'accuracy': sum(map(sum, unbound.values())) / max(len(val_questions), 1),
                      'per_type': {t: {'n': len(v), 'accuracy': sum(v) / len(v)}
                                   for t, v in sorted(unbound.items())}}
    n_text_turns = sum(len(c['conversations']) // 2 for c in conversations if 'image' not in c)
    world = {
        'seed': seed,
        'image_size': image_size,
        'sizes': {'n_caption': n_caption, 'n_instruct': n_instruct, 'n_instruct_text': n_instruct_text,
                  'n_val': n_val, 'val_questions_per_image': val_questions_per_image, 'text_mb': text_mb,
                  'val_text_mb': val_text_mb, 'n_mc': n_mc},
        'vocab': {'shapes': list(SHAPES), 'colors': list(COLORS), 'sizes': list(SIZES),
                  'positions': list(POSITIONS)},
        'question_types': {t: {'answer_type': at, 'answers': list(space)}
                           for t, (at, space) in QUESTION_TYPES.items()},
        'image_roots': {'captions/captions.jsonl': 'captions', 'instruct/llava.json': 'instruct'},
        'facts': [{'relation': f['relation'], 'subject': f['subject'], 'answer': f['answer']} for f in FACTS],
        'counts': {
            'caption_images': n_caption,
            'instruct_images': n_instruct,
            'instruct_image_qa_turns': len(train_questions),
            'instruct_text_conversations': n_instruct_text,
            'instruct_text_turns': n_text_turns,
            'vqa_images': n_val,
            'vqa_questions': len(val_questions),
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


# -----------------------------------------------------------------------------
# the command line

def main(argv=None):
    """python shapes.py [config.py ...] [--key=value ...] (keys: DEFAULTS); returns world.json's dict."""
    settings = configurator.parse(DEFAULTS, argv, 'shapes.py')
    configurator.require(settings, 'out')
    try:
        return write_world(settings.pop('out'), **settings, verbose=True)
    except (ValueError, OSError) as e:  # a bad size, a world already there, an unwritable folder
        sys.exit(f"shapes.py: {e}")


if __name__ == "__main__":
    main()
