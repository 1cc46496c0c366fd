"""
Evaluation of a checkpoint: open-ended VQA (VQAv2 and any set in its layout), multiple-choice text
tasks (ARC-easy and any set in the generic JSONL form), the Vision and Text Stable Scores, and the
table that compares runs.

    python eval.py --ckpt=out/frozen_1b/ckpt.pt --tasks=vqav2,arc_easy
    python eval.py --ckpt=out/tiny_frozen_s0/ckpt.pt --tasks=shapes_vqa,shapes_mc \
        --shapes_root=data/shapes/raw
    python eval.py --ckpt=out/frozen_1b/ckpt.pt --tasks=vqav2 --limit=1000     # a fixed, seeded subset
    python eval.py --tasks=vqav2 --predictions=out/frozen_1b/predictions_vqav2.json   # score a results file
    python eval.py --compare=out/frozen_s0,out/frozen_s1,out/mlp1_s0 --plot=out/compare.png
    python eval.py --compare='out/study/*_seed*' --plot=out/compare.png

Tasks (--tasks, comma-separated):
  vqav2       the official val files: --vqa_questions (v2_OpenEnded_mscoco_val2014_questions.json),
              --vqa_annotations (v2_mscoco_val2014_annotations.json), --vqa_images (COCO val2014/)
  arc_easy    --arc_file: AI2's ARC-Easy JSONL, or the HF parquet (pyarrow)
  shapes_vqa  {--shapes_root}/vqa/questions.json, annotations.json, images/   (shapes.py writes these)
  shapes_mc   {--shapes_root}/text_mc/arc_shapes.jsonl
  NAME=PATH   any other set, no code needed: a folder holding questions.json, annotations.json and
              images/ in the VQAv2 layout is open-ended VQA; a .jsonl or .parquet file is multiple
              choice, each record in AI2's ARC layout, the HF ARC layout, or the generic
              {"query": prompt, "choices": [text, ...], "gold": index} (each choice is scored as
              " " + choice right after the query)
Open-ended VQA tasks are the vision tasks, multiple-choice tasks the text tasks. Images are found
in the image folder as COCO_val2014_{image_id:012d}.jpg, COCO_{folder}_{image_id:012d}.jpg,
{image_id:012d}.png or {image_id:012d}.jpg.

Outputs, beside the checkpoint: results.json (results_{name}.json for a checkpoint not named
ckpt.pt) with per-task scores, counts, skipped counts, the two Stable Scores and what each task
measured (data files, --limit, --seed, the number of items drawn and a fingerprint of them), and
predictions_{task}.json per task (VQA in the official results format [{"question_id", "answer"}],
so the official script can score it). Items that cannot be used (no annotation, an image that does
not open, a malformed line) are named on stderr, skipped, and counted in results.json.
A results file is replaced only by an evaluation of the same items. One of other items (another
--limit, --seed, task list or data) goes to the file named after it, results_{tasks}_limit{N}_seed{S}.json
(or _all), its predictions_{task}_{tasks}_... beside it, and is refused where that file holds other items
too; --overwrite replaces results.json; --out names the file (its predictions go beside it).

--compare takes run folders, results files or globs of them, comma-separated (a glob's matches in
sorted order), groups runs by configuration and prints a markdown table of mean ± std over seeds
(sample std); --plot draws it as a bar chart. A run's group is its `run_name` config key, else its
folder name; a trailing _seedN, -seedN, _sN or -sN is removed from it (out/frozen_s0 and
out/frozen_s1 are two seeds of "frozen"). The seed is the checkpoint config's `seed`. Runs scored
on different items (of a task) are refused.
"""
import glob
import hashlib
import json
import math
import os
import random
import re
import sys

import torch
import torch.nn.functional as F
from tqdm import tqdm

import configurator
from shards import atomic_write_bytes
from tokenizer import TOKENIZERS, decode, encode, get_tokenizer, vqa_prompt

DEFAULTS = {
    'ckpt': '',  # a checkpoint to evaluate (or --predictions, or --compare)
    'predictions': '',  # an official-format VQA results file to score (one VQA task in --tasks)
    'compare': '',  # run folders, results files or globs, comma-separated: the table over seeds
    'tasks': 'shapes_vqa,shapes_mc',  # comma-separated built-in names or NAME=PATH
    'vqa_questions': 'data/vqav2/v2_OpenEnded_mscoco_val2014_questions.json',  # vqav2's questions
    'vqa_annotations': 'data/vqav2/v2_mscoco_val2014_annotations.json',  # vqav2's human answers
    'vqa_images': 'data/vqav2/val2014',  # vqav2's images (COCO val2014)
    'arc_file': 'data/arc/ARC-Easy-Test.jsonl',  # ARC-Easy .jsonl (AI2) or .parquet (HF)
    'shapes_root': 'data/shapes/raw',  # the world shapes.py wrote (prepare_data.py shapes: OUT/raw)
    'limit': 0,  # a fixed, seeded subset of N items per task (0 = all)
    'seed': 0,  # seed of the --limit subset
    'batch_size': 32,  # questions (VQA) or choices (multiple choice) per forward
    'max_new_tokens': 16,  # longest VQA answer, in tokens
    'device': 'cuda' if torch.cuda.is_available() else 'cpu',  # a GPU where there is one
    # the weights' dtype, one of DTYPES: float32 runs TF32 matmuls on CUDA; bfloat16 is faster but
    # rounds the log-likelihoods that multiple choice compares
    'dtype': 'float32',
    'out': '',  # the results file (default: beside the checkpoint / the predictions file)
    'overwrite': False,  # replace a results file that holds an evaluation of other items
    'plot': '',  # with --compare: write a bar chart PNG here
}
DTYPES = ('float32', 'bfloat16', 'float16')

TASKS = {'vqav2': 'vqa', 'arc_easy': 'mc', 'shapes_vqa': 'vqa', 'shapes_mc': 'mc'}
GROUP_OF_KIND = {'vqa': 'vision', 'mc': 'text'}
SHOW_PROBLEMS = 10  # problems printed per task; all of them are counted


class EvalError(ValueError):
    """A task that cannot run at all (a missing or unreadable file); per-item problems are skipped instead."""


# -----------------------------------------------------------------------------
# VQA accuracy, as the official VQA evaluation computes it (vqaEval.py)

CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've",
    "she'dve": "she'd've", "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "someonell": "someone'll", "someones": "someone's",
    "somethingd": "something'd", "somethingd've": "something'd've", "something'dve": "something'd've",
    "somethingll": "something'll", "thats": "that's", "thered": "there'd", "thered've": "there'd've",
    "there'dve": "there'd've", "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're",
    "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's", "whereve": "where've",
    "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll", "whos": "who's",
    "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've",
    "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've",
    "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}
NUMBER_WORDS = {'none': '0', 'zero': '0', 'one': '1', 'two': '2', 'three': '3', 'four': '4', 'five': '5',
                'six': '6', 'seven': '7', 'eight': '8', 'nine': '9', 'ten': '10'}
ARTICLES = ('a', 'an', 'the')
PUNCTUATION = [';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+', '\\', '_', '-', '>', '<', '@', '`', ',',
               '?', '!']
COMMA_BETWEEN_DIGITS = re.compile(r'(\d)(,)(\d)')
# The official pattern, kept as published: "(?!<=\d)" is a lookahead, not a lookbehind, so the rule that
# applies is "a period not followed by a digit".
PERIOD = re.compile(r'(?!<=\d)(\.)(?!\d)')


def normalize_answer(text):
    """The official VQA answer normalisation: whitespace, punctuation, periods, case, number words,
    articles, contractions (in that order)."""
    text = text.replace('\n', ' ').replace('\t', ' ').strip()
    # punctuation: deleted where it touches a space or when the answer has a comma between digits
    # ("1,000" -> "1000"), else replaced by a space ("yes/no" -> "yes no"); the test is on the input text
    out = text
    strip_all = COMMA_BETWEEN_DIGITS.search(text) is not None
    for p in PUNCTUATION:
        if strip_all or p + ' ' in text or ' ' + p in text:
            out = out.replace(p, '')
        else:
            out = out.replace(p, ' ')
    # the official script passes re.UNICODE (32) where sub() takes its count: at most 32 periods go
    out = PERIOD.sub('', out, count=re.UNICODE)
    words = [NUMBER_WORDS.get(w, w) for w in out.lower().split()]
    words = [CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES]
    return ' '.join(words)


def vqa_accuracy(prediction, answers):
    """Average over the human answers of min(1, matches among the other answers / 3): with 10 answers,
    1, 2, 3 and 4+ matches score 0.3, 0.6, 0.9 and 1.0. Prediction and answers are always normalised
    (the official script skips normalisation when the 10 answers are identical)."""
    if not answers:
        raise ValueError("vqa_accuracy needs at least one human answer")
    prediction = normalize_answer(prediction)
    matches = [normalize_answer(a) == prediction for a in answers]
    total = sum(matches)
    return sum(min(1.0, (total - m) / 3) for m in matches) / len(matches)


# -----------------------------------------------------------------------------
# Stable score

def stable_score(tasks):
    """Mean over tasks of (acc - chance) / (1 - chance); tasks: [(acc, chance)]. None for no tasks."""
    tasks = list(tasks)
    if not tasks:
        return None
    return sum((acc - chance) / (1 - chance) for acc, chance in tasks) / len(tasks)


# -----------------------------------------------------------------------------
# Task specs: a name -> its kind and files

def vqa_folder_spec(name, folder):
    return dict(name=name, kind='vqa', questions=os.path.join(folder, 'questions.json'),
                annotations=os.path.join(folder, 'annotations.json'), images=os.path.join(folder, 'images'))


def task_specs(settings):
    """The comma-separated --tasks -> [dict(name, kind, files...)] (built-in names or NAME=PATH); the
    built-in tasks' files come from the other settings."""
    specs = []
    for entry in [t.strip() for t in settings['tasks'].split(',') if t.strip()]:
        if '=' in entry:
            name, path = (s.strip() for s in entry.split('=', 1))
            if os.path.isdir(path):
                specs.append(vqa_folder_spec(name, path))
            elif path.endswith(('.jsonl', '.parquet')):
                specs.append(dict(name=name, kind='mc', path=path))
            else:
                raise EvalError(f"task {entry!r}: {path} is neither a VQA folder (questions.json, "
                                f"annotations.json, images/) nor a .jsonl / .parquet multiple-choice file")
        elif entry == 'vqav2':
            specs.append(dict(name=entry, kind='vqa', questions=settings['vqa_questions'],
                              annotations=settings['vqa_annotations'], images=settings['vqa_images']))
        elif entry == 'arc_easy':
            specs.append(dict(name=entry, kind='mc', path=settings['arc_file']))
        elif entry == 'shapes_vqa':
            specs.append(vqa_folder_spec(entry, os.path.join(settings['shapes_root'], 'vqa')))
        elif entry == 'shapes_mc':
            path = os.path.join(settings['shapes_root'], 'text_mc', 'arc_shapes.jsonl')
            specs.append(dict(name=entry, kind='mc', path=path))
        else:
            raise EvalError(f"unknown task {entry!r}: the built-in tasks are {', '.join(TASKS)}; "
                            f"other sets are given as NAME=PATH")
    names = [s['name'] for s in specs]
    if len(set(names)) != len(names):
        raise EvalError(f"a task is listed twice in --tasks: {names}")
    return specs


def subset(n, limit, seed):
    """Indices of a fixed, seeded subset of `limit` out of n (all of them when limit is 0 or >= n), in
    order."""
    if not limit or limit >= n:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), limit))


def read_json(path, what):
    if not os.path.isfile(path):
        raise EvalError(f"{what} file not found: {path}")
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EvalError(f"{path}: not a valid JSON file ({e})") from None


def json_list(path, data, key):
    """The list of a VQAv2 file: under `key` of the top-level object (or the top level itself)."""
    if isinstance(data, dict):
        if key not in data:
            raise EvalError(f"{path}: no '{key}' key (keys: {', '.join(list(data)[:8])})")
        data = data[key]
    if not isinstance(data, list):
        raise EvalError(f"{path}: '{key}' must be a list, got {type(data).__name__}")
    return data


# -----------------------------------------------------------------------------
# Open-ended VQA data: questions + annotations (+ images) -> items

def image_path(images_dir, names, image_id):
    folder = os.path.basename(os.path.normpath(images_dir))
    for name in (f"COCO_val2014_{image_id:012d}.jpg", f"COCO_{folder}_{image_id:012d}.jpg",
                 f"{image_id:012d}.png", f"{image_id:012d}.jpg"):
        if name in names:
            return os.path.join(images_dir, name)
    return None


def load_vqa(questions_path, annotations_path, images_dir=None, limit=0, seed=0):
    """VQAv2-layout files -> (items, problems). An item: question_id, image_id, question, answers (the
    human answers), answer_type, image (a path; None when images_dir is None: scoring a results file).
    The subset (--limit) is drawn from the questions as listed, so it does not depend on what is skipped."""
    questions = json_list(questions_path, read_json(questions_path, 'VQA questions'), 'questions')
    annotations = json_list(annotations_path, read_json(annotations_path, 'VQA annotations'), 'annotations')
    names = None
    if images_dir is not None:
        if not os.path.isdir(images_dir):
            raise EvalError(f"VQA image folder not found: {images_dir}")
        names = set(os.listdir(images_dir))
    problems = []
    by_question = {}
    for i, a in enumerate(annotations):
        if not isinstance(a, dict) or 'question_id' not in a:
            problems.append(f"{annotations_path}: annotation {i} has no question_id")
            continue
        by_question[a['question_id']] = a
    items = []
    for i in subset(len(questions), limit, seed):
        q = questions[i]
        missing = [k for k in ('question_id', 'image_id', 'question')
                   if not isinstance(q, dict) or k not in q]
        if missing:
            problems.append(f"{questions_path}: question {i} has no {', '.join(missing)}")
            continue
        qid = q['question_id']
        a = by_question.get(qid)
        if a is None:
            problems.append(f"question_id {qid}: no annotation in {annotations_path}")
            continue
        answers = [x.get('answer') for x in a.get('answers') or [] if isinstance(x, dict)]
        if not answers or not all(isinstance(x, str) for x in answers):
            problems.append(f"question_id {qid}: the annotation in {annotations_path} has no usable "
                            f"'answers'")
            continue
        if not isinstance(q['question'], str) or not isinstance(q['image_id'], int):
            problems.append(f"question_id {qid}: 'question' must be text and 'image_id' an integer in "
                            f"{questions_path}")
            continue
        path = None
        if names is not None:
            path = image_path(images_dir, names, q['image_id'])
            if path is None:
                problems.append(f"question_id {qid}: no image for image_id {q['image_id']} in {images_dir}")
                continue
        items.append(dict(question_id=qid, image_id=q['image_id'], question=q['question'], answers=answers,
                          answer_type=a.get('answer_type', 'other'), question_type=a.get('question_type', ''),
                          image=path))
    return items, problems


def load_predictions(path):
    """An official VQA results file [{"question_id", "answer"}] -> ({question_id: answer}, problems)."""
    data = read_json(path, 'VQA predictions')
    if not isinstance(data, list):
        raise EvalError(f"{path}: a VQA results file is a list of {{\"question_id\", \"answer\"}}, "
                        f"got {type(data).__name__}")
    predictions, problems = {}, []
    for i, p in enumerate(data):
        if not isinstance(p, dict) or 'question_id' not in p or not isinstance(p.get('answer'), str):
            problems.append(f"{path}: entry {i} is not {{\"question_id\", \"answer\": text}}")
        elif p['question_id'] in predictions:
            problems.append(f"{path}: question_id {p['question_id']} is answered twice; "
                            f"the first answer counts")
        else:
            predictions[p['question_id']] = p['answer']
    return predictions, problems


# -----------------------------------------------------------------------------
# Open-ended VQA with the model: tokenizer.vqa_prompt (the chat template after the image positions),
# batched greedy generation

@torch.no_grad()
def generate_batch(model, prompts, images, max_new_tokens, eot_id):
    """Greedy answers to prompts of any lengths in one left-padded batch. prompts: lists of ids;
    images uint8 (B, S, S, 3). The padding has doc id 0 and the prompt 1, so no prompt token attends to
    it. Returns the new tokens of each row, cut before the first <|endoftext|>.
    Each row gets min(max_new_tokens, block_size - its length) tokens, whatever else is in the batch:
    rows that would lose room to a longer prompt go to a batch of their own."""
    device = model.lm.output.weight.device
    block_size = model.lm.config.block_size
    B, width = len(prompts), max(len(p) for p in prompts)
    limits = [min(max_new_tokens, block_size - len(p)) for p in prompts]
    if min(limits) < 1:
        raise ValueError(f"a prompt of {width} tokens leaves no room in block_size {block_size}")
    short = [i for i in range(B) if limits[i] > block_size - width]  # shorter prompts, so the recursion ends
    if short:
        rest = [i for i in range(B) if i not in short]
        done = {}
        for part in (short, rest):
            rows = generate_batch(model, [prompts[i] for i in part], images[part], max_new_tokens, eot_id)
            done.update(zip(part, rows))
        return [done[i] for i in range(B)]
    max_new = max(limits)
    idx = torch.full((B, width), eot_id, dtype=torch.long)  # any id but <|image|>: padding is never attended
    doc_ids = torch.zeros((B, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        idx[i, width - len(p):] = torch.tensor(p)
        doc_ids[i, width - len(p):] = 1
    padded = any(len(p) < width for p in prompts)
    out = model.generate(idx.to(device), images.to(device), torch.ones(B, dtype=torch.bool, device=device),
                         max_new, doc_ids=doc_ids.to(device) if padded else None, temperature=0.0,
                         stop_token=eot_id)  # (B, <= max_new)
    rows = [row[:limit] for row, limit in zip(out.tolist(), limits)]
    return [row[:row.index(eot_id)] if eot_id in row else row for row in rows]


def answer_questions(model, enc, items, batch_size, max_new_tokens, problems, desc='vqa'):
    """Greedy answers {question_id: text}; an item whose image does not open or whose prompt does not
    fit is named in `problems` and left out."""
    from vision import ImageError, preprocess
    eot_id = TOKENIZERS[enc.name]['eot_id']
    size, block_size = model.vision.cfg.image_size, model.lm.config.block_size
    answers = {}
    with tqdm(total=len(items), desc=desc, unit='q', dynamic_ncols=True) as bar:
        for start in range(0, len(items), batch_size):
            batch = items[start:start + batch_size]
            prompts, images, ids, decoded = [], [], [], {}
            for it in batch:
                prompt = vqa_prompt(enc, it['question'], model.num_patches)
                if len(prompt) >= block_size:
                    problems.append(f"question_id {it['question_id']}: the prompt ({len(prompt)} tokens) "
                                    f"does not fit block_size {block_size}")
                    continue
                if it['image'] not in decoded:
                    try:
                        decoded[it['image']] = torch.from_numpy(preprocess(it['image'], size))
                    except ImageError as e:
                        decoded[it['image']] = e
                if isinstance(decoded[it['image']], ImageError):
                    problems.append(f"question_id {it['question_id']}: {decoded[it['image']]}")
                    continue
                prompts.append(prompt)
                images.append(decoded[it['image']])
                ids.append(it['question_id'])
            if prompts:
                rows = generate_batch(model, prompts, torch.stack(images), max_new_tokens, eot_id)
                for qid, row in zip(ids, rows):
                    answers[qid] = decode(enc, row).strip()
            bar.update(len(batch))
    return answers


def score_vqa(items, predictions):
    """VQA accuracy over the items that have a prediction, overall, per answer type and per question type."""
    per_type, per_question_type, scores = {}, {}, []
    for it in items:
        if it['question_id'] not in predictions:
            continue
        acc = vqa_accuracy(predictions[it['question_id']], it['answers'])
        scores.append(acc)
        per_type.setdefault(it['answer_type'], []).append(acc)
        per_question_type.setdefault(it.get('question_type') or '', []).append(acc)
    summary = lambda groups: {t: dict(acc=sum(s) / len(s), n=len(s)) for t, s in sorted(groups.items())}
    return dict(acc=sum(scores) / len(scores) if scores else None, chance=0.0, n=len(scores),
                by_answer_type=summary(per_type), by_question_type=summary(per_question_type))


# -----------------------------------------------------------------------------
# Multiple-choice data: AI2 ARC JSONL, HF ARC (parquet or JSONL), or the generic JSONL

def mc_item(record, where):
    """One record -> dict(id, query, choices, gold); raises ValueError saying what is wrong."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: a record must be a JSON object")
    if 'query' in record:  # generic: the prompt as given
        query, choices, gold = record['query'], record.get('choices'), record.get('gold')
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            raise ValueError(f"{where}: 'choices' must be a list of texts")
        if not isinstance(gold, int) or isinstance(gold, bool) or not 0 <= gold < len(choices):
            raise ValueError(f"{where}: 'gold' must be an index into the {len(choices)} choices, "
                             f"got {gold!r}")
    else:
        question, key = record.get('question'), record.get('answerKey')
        if isinstance(question, dict):  # AI2: question.stem, question.choices [{text, label}]
            stem, listed = question.get('stem'), question.get('choices')
            if not isinstance(listed, list) or not all(isinstance(c, dict) for c in listed):
                raise ValueError(f"{where}: 'question.choices' must be a list of {{text, label}}")
            texts, labels = [c.get('text') for c in listed], [c.get('label') for c in listed]
        elif isinstance(question, str):  # HF: question, choices {text: [...], label: [...]}
            stem, listed = question, record.get('choices')
            if not isinstance(listed, dict):
                raise ValueError(f"{where}: 'choices' must be {{text: [...], label: [...]}}")
            texts, labels = list(listed.get('text') or []), list(listed.get('label') or [])
        else:
            raise ValueError(f"{where}: neither an ARC record (question, answerKey) nor a generic one "
                             f"(query, choices, gold)")
        if not isinstance(stem, str):
            raise ValueError(f"{where}: the question stem must be text")
        if len(texts) != len(labels) or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"{where}: every choice needs a text and a label")
        labels = [str(l) for l in labels]
        if str(key) not in labels:
            raise ValueError(f"{where}: answerKey {key!r} is not one of the labels {labels}")
        query, choices, gold = f"Question: {stem}\nAnswer:", texts, labels.index(str(key))
    if not isinstance(query, str):
        raise ValueError(f"{where}: the query must be text")
    if len(choices) < 2:
        raise ValueError(f"{where}: needs at least 2 choices, has {len(choices)}")
    if any(not c.strip() for c in choices):
        raise ValueError(f"{where}: a choice is empty")
    return dict(id=record.get('id'), query=query, choices=choices, gold=gold)


def mc_records(path):
    """[(where, record or ValueError)] of a .jsonl or .parquet file."""
    if not os.path.isfile(path):
        raise EvalError(f"multiple-choice file not found: {path}")
    if path.endswith('.parquet'):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise EvalError(f"reading {path} needs the 'pyarrow' package: pip install pyarrow") from None
        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as e:
            raise EvalError(f"{path}: not a readable parquet file ({type(e).__name__}: {e})") from None
        return [(f"{path}: row {i}", row) for i, row in enumerate(rows)]
    records = []
    with open(path, 'rb') as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                records.append((f"{path}:{n}", json.loads(line.decode('utf-8'))))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                records.append((f"{path}:{n}", ValueError(f"{path}:{n}: not a valid JSON line ({e})")))
    return records


def load_mc(path, limit=0, seed=0):
    """A multiple-choice file -> (items, problems); the subset is drawn from the records as listed."""
    records = mc_records(path)
    items, problems = [], []
    for i in subset(len(records), limit, seed):
        where, record = records[i]
        try:
            if isinstance(record, ValueError):
                raise record
            items.append(mc_item(record, where))
        except ValueError as e:
            problems.append(str(e))
    return items, problems


# -----------------------------------------------------------------------------
# Multiple choice with the model: summed log-likelihood of " {choice}" after the prompt

def mc_requests(enc, items):
    """(context, continuation) token lists for every choice of every item, in order; the context
    starts with <|endoftext|> (the BOS of plain text)."""
    eot_id = TOKENIZERS[enc.name]['eot_id']
    requests = []
    for it in items:
        context = [eot_id] + encode(enc, it['query'])
        requests += [(context, encode(enc, ' ' + c)) for c in it['choices']]
    return requests


@torch.no_grad()
def loglikelihoods(lm, requests, batch_size, pad_id, desc='mc'):
    """Sum of log p(continuation | context) per request, in right-padded batches (a causal model never
    looks at the padding after a row). A context that does not fit is cut from the left."""
    block_size = lm.config.block_size
    device = lm.output.weight.device
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i][0]) - len(requests[i][1]))
    results = [0.0] * len(requests)
    for start in tqdm(range(0, len(order), batch_size), desc=desc, unit='batch', dynamic_ncols=True):
        chunk = order[start:start + batch_size]
        seqs = [(requests[i][0] + requests[i][1])[-(block_size + 1):] for i in chunk]
        width = max(len(s) for s in seqs) - 1
        idx = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        for row, s in enumerate(seqs):
            idx[row, :len(s) - 1] = torch.tensor(s[:-1])
        logits, _ = lm(idx.to(device))  # (B, T, V)
        for row, (i, s) in enumerate(zip(chunk, seqs)):
            n, end = len(requests[i][1]), len(s) - 1
            # (n, V): the positions that predict the continuation
            logp = F.log_softmax(logits[row, end - n:end].float(), dim=-1)
            target = torch.tensor(s[-n:], device=logp.device)
            results[i] = logp.gather(1, target[:, None]).sum().item()
    return results


def score_mc(items, lls):
    """acc (argmax of the summed log-likelihood), acc_norm (argmax of log-likelihood / characters of the
    choice, without the leading space), chance (mean of 1 / #choices). lls: per item, one value per choice."""
    if not items:
        return dict(acc=None, acc_norm=None, chance=None, n=0), []
    acc = acc_norm = chance = 0.0
    predictions = []
    for it, ll in zip(items, lls):
        if len(ll) != len(it['choices']):
            raise ValueError(f"item {it.get('id')}: {len(ll)} log-likelihoods for "
                             f"{len(it['choices'])} choices")
        pred = max(range(len(ll)), key=lambda k: ll[k])  # the first on a tie
        pred_norm = max(range(len(ll)), key=lambda k: ll[k] / len(it['choices'][k]))
        acc += pred == it['gold']
        acc_norm += pred_norm == it['gold']
        chance += 1 / len(ll)
        predictions.append(dict(id=it.get('id'), prediction=pred, prediction_norm=pred_norm, gold=it['gold'],
                                loglikelihoods=list(ll)))
    n = len(items)
    return dict(acc=acc / n, acc_norm=acc_norm / n, chance=chance / n, n=n), predictions


def mc_loglikelihoods(lm, enc, items, batch_size, desc='mc'):
    """Per item, the summed log-likelihood of each choice."""
    flat = loglikelihoods(lm, mc_requests(enc, items), batch_size, TOKENIZERS[enc.name]['eot_id'], desc)
    out, pos = [], 0
    for it in items:
        out.append(flat[pos:pos + len(it['choices'])])
        pos += len(it['choices'])
    return out


# -----------------------------------------------------------------------------
# Results files: beside the checkpoint, each with its predictions beside it

def results_beside(ckpt_path):
    """results.json beside ckpt.pt, results_{stem}.json beside any other checkpoint."""
    folder = os.path.dirname(os.path.abspath(ckpt_path))
    stem = os.path.splitext(os.path.basename(ckpt_path))[0]
    return os.path.join(folder, 'results.json' if stem == 'ckpt' else f"results_{stem}.json")


def prediction_path(results_path, task):
    """A task's predictions file, beside its results file and named after it: results.json ->
    predictions_{task}.json, results_{x}.json -> predictions_{task}_{x}.json."""
    folder, name = os.path.split(os.path.abspath(results_path))
    stem = os.path.splitext(name)[0]
    suffix = stem[len('results'):] if stem.startswith('results') else f"_{stem}"
    return os.path.join(folder, f"predictions_{task}{suffix}.json")


def run_group(name):
    """The configuration a run belongs to: its name without a trailing _seedN, -seedN, _sN or -sN."""
    return re.sub(r'[_-](seed|s)\d+$', '', name) or name


def write_json(path, obj):
    atomic_write_bytes(path, json.dumps(obj, indent=1).encode())


def report(name, problems):
    for p in problems[:SHOW_PROBLEMS]:
        tqdm.write(f"[{name}] skipped: {p}", file=sys.stderr)
    if len(problems) > SHOW_PROBLEMS:
        tqdm.write(f"[{name}] ... and {len(problems) - SHOW_PROBLEMS} more skipped "
                   f"(all counted in results.json)", file=sys.stderr)


# -----------------------------------------------------------------------------
# What an evaluation measured: results of other items are never mixed, nor written over each other

def load_tasks(specs, limit, seed, with_images=True):
    """Every task's data, before any model loads: {name: (items, problems, measured)}; `measured` names the
    data files, limit and seed, and the items drawn: their number and a fingerprint of ids and content."""
    data = {}
    for spec in specs:
        if spec['kind'] == 'vqa':
            files = [spec['questions'], spec['annotations'], spec['images']]
            items, problems = load_vqa(*files[:2], files[2] if with_images else None, limit, seed)
            rows = [[it['question_id'], it['image_id'], it['question'], it['answers']] for it in items]
        else:
            files = [spec['path']]
            items, problems = load_mc(spec['path'], limit, seed)
            rows = [[it['id'], it['query'], it['choices'], it['gold']] for it in items]
        measured = dict(task=spec['name'], files=[os.path.abspath(f) for f in files], limit=limit, seed=seed,
                        items=len(items),
                        items_sha256=hashlib.sha256(json.dumps(rows, default=str).encode()).hexdigest())
        data[spec['name']] = (items, problems, measured)
    return data


def planned(data, limit, seed):
    """The part of the results an evaluation of `data` will write that says what it measured."""
    return dict(limit=limit, subset_seed=seed, tasks={n: dict(measured=m) for n, (_, _, m) in data.items()})


def task_difference(name, a, b, scored=False):
    """None when task `name` of results a and b was measured on the same items, else (what a measured, what
    b measured) in words. Items agree by their number and fingerprint; a results file of an older eval.py,
    without them, by its limit and subset seed. `scored`: the numbers of items scored must agree too."""
    ta, tb = a['tasks'][name], b['tasks'][name]
    ma, mb = ta.get('measured') or {}, tb.get('measured') or {}
    if 'items_sha256' in ma and 'items_sha256' in mb:
        fa, fb = ({'items': m.get('items'), 'sha256': m['items_sha256'][:12]} for m in (ma, mb))
    else:
        fa, fb = ({'limit': r.get('limit'), 'seed': r.get('subset_seed') if r.get('limit') else None}
                  for r in (a, b))
    if scored:
        fa['scored'], fb['scored'] = ta.get('n'), tb.get('n')
    if all(fa[k] is None or fb[k] is None or fa[k] == fb[k] for k in fa):
        return None
    words = lambda f: ', '.join(f"{v} {k}" if k in ('items', 'scored') else f"{k} {v}"
                                for k, v in f.items() if v is not None)
    return words(fa), words(fb)


def measured_differently(old, new):
    """Why results `old` (a dict, or the path of a results file) did not measure what `new` does: its
    tasks, each on the same items. None when they agree, or when there is no such file."""
    if isinstance(old, str):
        if not os.path.exists(old):
            return None
        try:
            old = load_results(old)
        except EvalError as e:
            return str(e)
    if set(old['tasks']) != set(new['tasks']):
        return f"tasks {','.join(old['tasks'])} in the file, {','.join(new['tasks'])} in this evaluation"
    for name in new['tasks']:
        differ = task_difference(name, old, new)
        if differ:
            return f"{name}: {differ[0]} in the file, {differ[1]} in this evaluation"
    return None


def results_path(default, new, out='', overwrite=False):
    """(where results that measured `new` go, a line to print or None). A results file is replaced only by
    one of the same items or with --overwrite: other items go to the file named after them, and where
    that file (or --out) holds other items too, they are refused (an EvalError)."""
    if out or overwrite:
        why = None if overwrite else measured_differently(out, new)
        if why:
            raise EvalError(f"{out} holds an evaluation of other items ({why}); --overwrite replaces it")
        return out or default, None
    why = measured_differently(default, new)
    if why is None:
        return default, None
    what = f"limit{new['limit']}_seed{new['subset_seed']}" if new['limit'] else 'all'
    tasks = re.sub(r'[^A-Za-z0-9+.=-]', '_', '+'.join(new['tasks']))
    other = f"{os.path.splitext(default)[0]}_{tasks}_{what}.json"
    why_other = measured_differently(other, new)
    if why_other is not None:
        raise EvalError(f"{default} and {other} hold evaluations of other items ({why_other}); "
                        f"--overwrite replaces {default}, or name another file with --out=FILE")
    return other, (f"{default} holds an evaluation of other items ({why}): kept; this one goes to {other} "
                   f"(--overwrite would replace {default})")


def measured_as(results, argv):
    """Whether `results` (of load_results) measured what `python eval.py ARGV` would: the same tasks, each
    on the same items (task_difference); the checkpoint is not compared. Unreadable data: False."""
    settings = configurator.parse(DEFAULTS, argv, 'eval.py')
    try:
        data = load_tasks(task_specs(settings), settings['limit'], settings['seed'])
    except (EvalError, OSError):
        return False
    return measured_differently(results, planned(data, settings['limit'], settings['seed'])) is None


# -----------------------------------------------------------------------------
# Evaluating a checkpoint: results.json, prediction files, the printed table

def task_result(spec, metrics, problems, measured):
    """One task's entry of results.json; `score` is its (acc - chance) / (1 - chance)."""
    score = None if metrics.get('acc') is None else stable_score([(metrics['acc'], metrics['chance'])])
    return dict(kind=spec['kind'], group=GROUP_OF_KIND[spec['kind']], **metrics, skipped=len(problems),
                skipped_examples=problems[:50], score=score, measured=measured)


def with_stable_scores(results):
    for group in ('vision', 'text'):
        scored = [(t['acc'], t['chance']) for t in results['tasks'].values()
                  if t['group'] == group and t.get('acc') is not None]
        results[f"{group}_stable_score"] = stable_score(scored)
    return results


def evaluate(ckpt, specs, limit=0, seed=0, batch_size=32, max_new_tokens=16, device='cpu', dtype='float32',
             data=None):
    """Load every task's data (a missing file fails here, before the model loads; `data` of load_tasks
    when given), then the model; run each task. Returns (results dict, {task: predictions to write})."""
    from model import VLM, model_from_checkpoint
    data = data or load_tasks(specs, limit, seed)
    try:
        model, checkpoint = model_from_checkpoint(ckpt, device)
    except ValueError as e:  # model_from_checkpoint names the file and the cause
        raise EvalError(str(e)) from None
    if dtype != 'float32':
        model = model.to(getattr(torch, dtype))
    enc = get_tokenizer(checkpoint['tokenizer'])
    config = checkpoint.get('config') if isinstance(checkpoint.get('config'), dict) else {}
    run = config.get('run_name') or os.path.basename(os.path.dirname(os.path.abspath(ckpt)))
    results = dict(checkpoint=os.path.abspath(ckpt), step=checkpoint.get('step'), run=run,
                   group=run_group(run), seed=config.get('seed'), tokenizer=checkpoint['tokenizer'],
                   limit=limit, subset_seed=seed, tasks={})
    predictions = {}
    lm = model.lm if isinstance(model, VLM) else model
    for spec in specs:
        name = spec['name']
        items, problems, measured = data[name]
        if spec['kind'] == 'vqa':
            if not isinstance(model, VLM):
                tqdm.write(f"[{name}] not run: {ckpt} holds a text-only model", file=sys.stderr)
                results['tasks'][name] = dict(kind='vqa', group='vision', acc=None, chance=0.0, n=0,
                                              score=None, skipped=len(items) + len(problems),
                                              not_run='text-only checkpoint', measured=measured)
                continue
            answers = answer_questions(model, enc, items, batch_size, max_new_tokens, problems, desc=name)
            metrics = score_vqa(items, answers)
            predictions[name] = [dict(question_id=it['question_id'], answer=answers[it['question_id']])
                                 for it in items if it['question_id'] in answers]
        else:
            fit = []
            for it in items:
                if all(len(c) < lm.config.block_size for _, c in mc_requests(enc, [it])):
                    fit.append(it)
                else:
                    problems.append(f"item {it['id']}: a choice is longer than block_size "
                                    f"{lm.config.block_size} tokens")
            items = fit
            lls = mc_loglikelihoods(lm, enc, items, batch_size, desc=name)
            metrics, predictions[name] = score_mc(items, lls)
        report(name, problems)
        results['tasks'][name] = task_result(spec, metrics, problems, measured)
    return with_stable_scores(results), predictions


def score_predictions(spec, predictions_path, limit=0, seed=0):
    """Score an official-format VQA results file against a task's annotations (no model)."""
    items, problems, measured = load_tasks([spec], limit, seed, with_images=False)[spec['name']]
    predictions, bad = load_predictions(predictions_path)
    problems += bad
    problems += [f"question_id {it['question_id']}: no prediction in {predictions_path}"
                 for it in items if it['question_id'] not in predictions]
    report(spec['name'], problems)
    results = dict(predictions=os.path.abspath(predictions_path), limit=limit, subset_seed=seed,
                   tasks={spec['name']: task_result(spec, score_vqa(items, predictions), problems, measured)})
    return with_stable_scores(results)


def pct(x, digits=1):
    return '-' if x is None else f"{100 * x:.{digits}f}"


def format_results(results):
    lines = ["| task | kind | n | skipped | acc | acc_norm | chance | score |",
             "|---|---|---|---|---|---|---|---|"]
    for name, t in results['tasks'].items():
        lines.append(f"| {name} | {t['kind']} | {t['n']} | {t['skipped']} | {pct(t['acc'])} | "
                     f"{pct(t.get('acc_norm'))} | {pct(t['chance'])} | {pct(t['score'])} |")
        for answer_type, a in (t.get('by_answer_type') or {}).items():
            lines.append(f"|   {answer_type} | | {a['n']} | | {pct(a['acc'])} | | | |")
    lines.append(f"\nVision Stable Score: {pct(results['vision_stable_score'])}   "
                 f"Text Stable Score: {pct(results['text_stable_score'])}")
    return '\n'.join(lines)


# -----------------------------------------------------------------------------
# Comparing runs: mean ± std over seeds per configuration, a markdown table and a bar chart

TASK_TITLES = {'vqav2': 'VQAv2', 'arc_easy': 'ARC-easy', 'shapes_vqa': 'VQA (shapes)',
               'shapes_mc': 'MC (shapes)'}


def results_file(path):
    """The results file of a run folder (its results.json), of a checkpoint (the one beside it) or itself."""
    if os.path.isdir(path):
        return os.path.join(path, 'results.json')
    if path.endswith('.pt'):
        return results_beside(path)
    if os.path.isfile(path):
        return path
    raise EvalError(f"{path}: no such run folder, checkpoint or results file")


def load_results(path):
    """The results dict eval.py wrote, from a run folder, a checkpoint or a results file (the one results
    loader: study.py reads its runs with it). A missing or foreign file is an EvalError naming it."""
    file = results_file(path)
    if not os.path.isfile(file):
        raise EvalError(f"{path}: no {os.path.basename(file)} (run eval.py --ckpt on its checkpoint first)")
    results = read_json(file, 'results')
    tasks = results.get('tasks') if isinstance(results, dict) else None
    if not isinstance(tasks, dict) or not all(isinstance(t, dict) for t in tasks.values()):
        raise EvalError(f"{file}: not a results.json written by eval.py")
    return results


def compare_paths(items):
    """--compare's comma-separated items -> paths, in order; a glob gives its matches, sorted."""
    paths = []
    for item in [x.strip() for x in items.split(',') if x.strip()]:
        if any(c in item for c in '*?['):
            matches = sorted(glob.glob(item))
            if not matches:
                raise EvalError(f"--compare: {item!r} matches nothing")
            paths += matches
        else:
            paths.append(item)
    if not paths:
        raise EvalError("--compare names no runs")
    return paths


def mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None, 0
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
    return mean, std, len(values)


def compare(paths):
    """Group runs by configuration -> (columns, rows): rows of (group, seeds, {column: (mean, std, n)}).
    Runs scored on different items, task by task, are refused (an EvalError naming two of their files)."""
    runs = [(load_results(p), results_file(p)) for p in paths]
    for name in dict.fromkeys(name for r, _ in runs for name in r['tasks']):
        scored = [(r, f) for r, f in runs if (r['tasks'].get(name) or {}).get('acc') is not None]
        for results, file in scored[1:]:
            differ = task_difference(name, scored[0][0], results, scored=True)
            if differ:
                raise EvalError(f"--compare: {name} was scored on different items ({scored[0][1]}: "
                                f"{differ[0]}; {file}: {differ[1]}); compare runs evaluated alike "
                                f"(the same --tasks, --limit, --seed and data)")
    every = {name: t['kind'] for r, _ in runs for name, t in r['tasks'].items()}
    # the column of each kind: the standard set where a run has it, else the first of that kind
    vqa = next((n for n in ('vqav2', 'shapes_vqa') if n in every),
               next((n for n, k in every.items() if k == 'vqa'), None))
    mc = next((n for n in ('arc_easy', 'shapes_mc') if n in every),
              next((n for n, k in every.items() if k == 'mc'), None))
    columns = [('Vision Stable', 'vision_stable_score'), ('Text Stable', 'text_stable_score')]
    columns += [(TASK_TITLES.get(n, n), n) for n in (vqa, mc) if n is not None]
    groups = {}
    for results, file in runs:
        group = results.get('group') or run_group(os.path.basename(os.path.dirname(os.path.abspath(file))))
        groups.setdefault(group, []).append(results)
    rows = []
    for group, members in groups.items():
        stats = {}
        for title, key in columns:
            if key.endswith('stable_score'):
                values = [r.get(key) for r in members]
            else:
                values = [r['tasks'].get(key, {}).get('acc') for r in members]
            stats[title] = mean_std(values)
        rows.append((group, [r.get('seed') for r in members], stats))
    return [title for title, _ in columns], rows


def format_compare(columns, rows):
    def cell(stat):
        mean, std, n = stat
        if mean is None:
            return '-'
        return f"{100 * mean:.1f} ± {100 * std:.1f}" if std is not None else f"{100 * mean:.1f}"
    lines = ['| config | seeds | ' + ' | '.join(columns) + ' |', '|---|---|' + '---|' * len(columns)]
    for group, seeds, stats in rows:
        seed_text = ','.join('?' if s is None else str(s) for s in seeds)
        cells = ' | '.join(cell(stats[c]) for c in columns)
        lines.append(f"| {group} | {len(seeds)} ({seed_text}) | {cells} |")
    return '\n'.join(lines)


# -----------------------------------------------------------------------------

def parse_settings(argv=None):
    """DEFAULTS updated by argv, checked; a bad combination exits with one line."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if '--help' in argv or '-h' in argv:
        print(__doc__)  # what the tasks and outputs are; configurator lists the keys after it
    settings = configurator.parse(DEFAULTS, argv, 'eval.py')
    given = [k for k in ('ckpt', 'predictions', 'compare') if settings[k]]
    if len(given) != 1:
        what = f"got {', '.join('--' + k for k in given)}" if given else "got none"
        sys.exit(f"config error: give exactly one of --ckpt, --predictions, --compare ({what})")
    if settings['limit'] < 0:
        sys.exit(f"config error: --limit must be >= 0 (0 = every item), got {settings['limit']}")
    for key in ('batch_size', 'max_new_tokens'):
        if settings[key] < 1:
            sys.exit(f"config error: --{key} must be >= 1, got {settings[key]}")
    if settings['dtype'] not in DTYPES:
        sys.exit(f"config error: --dtype must be one of {', '.join(DTYPES)}, got {settings['dtype']!r}")
    if settings['plot'] and not settings['compare']:
        sys.exit("config error: --plot goes with --compare")
    return settings


def main(argv=None):
    settings = parse_settings(argv)
    try:
        if settings['compare']:
            columns, rows = compare(compare_paths(settings['compare']))
            print(format_compare(columns, rows))
            if settings['plot']:
                from plots import bar_chart
                bar_chart(columns, rows, settings['plot'])
                print(f"wrote {settings['plot']}")
            return columns, rows
        specs = task_specs(settings)
        limit, seed = settings['limit'], settings['seed']
        if settings['predictions']:
            vqa = [s for s in specs if s['kind'] == 'vqa']
            if len(vqa) != 1:
                raise EvalError(f"--predictions scores one open-ended VQA task; --tasks names {len(vqa)}")
            results = score_predictions(vqa[0], settings['predictions'], limit, seed)
            default = os.path.splitext(settings['predictions'])[0] + '_scores.json'
            out, note = results_path(default, results, settings['out'], settings['overwrite'])
        else:
            if settings['device'].startswith('cuda'):
                torch.backends.cuda.matmul.allow_tf32 = True
                torch.backends.cudnn.allow_tf32 = True
            # where the results go is settled before the model runs: a refusal costs nothing
            data = load_tasks(specs, limit, seed)
            out, note = results_path(results_beside(settings['ckpt']), planned(data, limit, seed),
                                     settings['out'], settings['overwrite'])
            results, predictions = evaluate(settings['ckpt'], specs, limit, seed, settings['batch_size'],
                                            settings['max_new_tokens'], settings['device'], settings['dtype'],
                                            data)
            for name, preds in predictions.items():
                write_json(prediction_path(out, name), preds)
                results['tasks'][name]['predictions'] = prediction_path(out, name)
        write_json(out, results)  # last: a results file that exists is whole, its predictions written
    except (EvalError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    except OSError as e:
        sys.exit(f"error: cannot write {e.filename or 'the results'}: {e.strerror or e}")
    print(format_results(results))
    if note:
        print(note)
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
