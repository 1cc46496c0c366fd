"""
Evaluation of a checkpoint: the paper's vision suite (VQAv2, GQA, VizWiz, TextVQA, POPE, the RefCOCO
family, OCID-Ref), multiple-choice text tasks (ARC-easy and any set in the generic JSONL form), the text
suite through lm-eval-harness, the Vision and Text Stable Scores, and the table that compares runs.
The datasets' readers and metrics are in tasks.py; this file runs the model over them and keeps the books.

    python eval.py --ckpt=out/frozen_1b/ckpt.pt --tasks=vision_suite,text_suite --data_root=data/eval
    python eval.py --ckpt=out/frozen_1b/ckpt.pt --tasks=vision_suite --limit=1024   # vlm-evaluation's "slim"
    python eval.py --ckpt=out/tiny_s0/ckpt.pt --tasks=shapes_vqa,shapes_mc --shapes_root=data/shapes/raw
    python eval.py --tasks=vqav2 --predictions=out/frozen_1b/predictions_vqav2.json   # score a results file
    python eval.py --compare=out/frozen_s0,out/frozen_s1,out/mlp1_s0 --plot=out/compare.png
    python eval.py --compare='out/study/*_seed*' --plot=out/compare.png

Tasks (--tasks, comma-separated):
  vision_suite  every vision task below that --data_root holds (its layout: docs/data.md); the ones
                missing are named and recorded, the others run
  vqav2         the official val files: --vqa_questions (v2_OpenEnded_mscoco_val2014_questions.json),
                --vqa_annotations (v2_mscoco_val2014_annotations.json), --vqa_images (COCO val2014/);
                in vision_suite, {--data_root}/vqav2/
  gqa, vizwiz, textvqa, textvqa_ocr, pope_adversarial, pope_popular, pope_random, refcoco, refcoco+,
  refcocog, ocidref
                the released files under --data_root (docs/data.md)
  text_suite    DCLM's six text tasks through lm-eval-harness (lm_eval_bridge.py), at DCLM's shots
                (TEXT_SUITE); lm_eval:TASK,TASK runs others
  arc_easy      --arc_file: AI2's ARC-Easy JSONL, or the HF parquet (pyarrow)
  shapes_vqa    {--shapes_root}/vqa/questions.json, annotations.json, images/   (shapes.py writes these)
  shapes_mc     {--shapes_root}/text_mc/arc_shapes.jsonl
  NAME=PATH     any other set, no code needed: a folder holding questions.json, annotations.json and
                images/ in the VQAv2 layout is open-ended VQA; a .jsonl or .parquet file is multiple
                choice, each record in AI2's ARC layout, the HF ARC layout, or the generic
                {"query": prompt, "choices": [text, ...], "gold": index} (each choice is scored as
                " " + choice right after the query)
Greedy decoding: 128 new tokens (a box 20, shapes_vqa and NAME=PATH 16; --max_new_tokens overrides
them). POPE compares P(" Yes") with P(" No"). VQAv2-layout images are COCO_val2014_{image_id:012d}.jpg,
COCO_{folder}_{image_id:012d}.jpg, {image_id:012d}.png or {image_id:012d}.jpg in the image folder.
Under torchrun (torchrun --nproc_per_node=8 eval.py ...) each rank runs a slice of every task's items
and the outputs are gathered; the first rank writes the results (lm_eval tasks run whole on that rank).

Outputs, beside the checkpoint: results.json (results_{name}.json for a checkpoint not named ckpt.pt)
with per-task scores and counts, the two Stable Scores (members, baselines, formula) and what each task
measured (data files, --limit, --seed, the items drawn and a fingerprint of them), and
predictions_{task}.json per task (VQA in the official format [{"question_id", "answer"}]). Items that
cannot be used (no annotation, an image that does not open, a malformed line) are named on stderr,
skipped, and counted. A results file is replaced only by an evaluation of the same items; one of other
items (--limit, --seed, tasks or data) goes to results_{tasks}_limit{N}_seed{S}.json (or _all), its
predictions_{task}_{tasks}_... beside it, refused where that file holds other items too; --overwrite
replaces results.json; --out names the file (its predictions go beside it).

--compare takes run folders, results files or globs (matches sorted), comma-separated, groups runs by
configuration and prints mean ± sample std over seeds of both Stable Scores, VQAv2 and ARC-easy; --plot
draws it. A run's group is its `run_name` config key, else its folder name, less a trailing _seedN,
-seedN, _sN or -sN; its seed is the config's `seed`. Runs scored on different items are refused; Stable
Scores made over different members are named below the table.
"""
import glob
import hashlib
import importlib.util
import json
import math
import os
import re
import sys

import torch
from tqdm import tqdm

import configurator
from shards import atomic_write_bytes
from tasks import (POPE_SPLITS, EvalError, load_predictions, read_json, read_task, score_boxes, score_gqa,
                   score_mc, score_pope, score_vqa)
from model import loglikelihoods
from tokenizer import chat_tokens, decode, encode, get_tokenizer, token_ids, vqa_prompt

DEFAULTS = {
    'ckpt': '',  # a checkpoint to evaluate (or --predictions, or --compare)
    'predictions': '',  # an official-format VQA results file to score (one VQA task in --tasks)
    'compare': '',  # run folders, results files or globs, comma-separated: the table over seeds
    'tasks': 'shapes_vqa,shapes_mc',  # comma-separated built-in names, suites or NAME=PATH
    'data_root': 'data/eval',  # the vision suite's datasets, in the layout docs/data.md gives
    'vqa_questions': 'data/vqav2/v2_OpenEnded_mscoco_val2014_questions.json',  # vqav2's questions
    'vqa_annotations': 'data/vqav2/v2_mscoco_val2014_annotations.json',  # vqav2's human answers
    'vqa_images': 'data/vqav2/val2014',  # vqav2's images (COCO val2014)
    'arc_file': 'data/arc/ARC-Easy-Test.jsonl',  # ARC-Easy .jsonl (AI2) or .parquet (HF)
    'lm_eval_tasks': '',  # a folder of lm-eval YAML task configs (e.g. on a local JSONL), besides lm-eval's
    'shapes_root': 'data/shapes/raw',  # the world shapes.py wrote (prepare_data.py shapes: OUT/raw)
    'limit': 0,  # a fixed, seeded subset of N items per task (0 = all; 1024 = vlm-evaluation's "slim")
    'seed': 0,  # seed of the --limit subset
    'batch_size': 32,  # questions (VQA) or choices (multiple choice) per forward
    'max_new_tokens': 0,  # longest generated answer, in tokens (0 = each task's own: 128, a box 20, 16)
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
# the vision suite: name -> (reader, its files under --data_root); the reader sets the kind
SUITE_FILES = {
    'vqav2': ('vqa', dict(questions='vqav2/v2_OpenEnded_mscoco_val2014_questions.json',
                          annotations='vqav2/v2_mscoco_val2014_annotations.json', images='vqav2/val2014')),
    'gqa': ('gqa', dict(questions='gqa/testdev_balanced_questions.json', images='gqa/images')),
    'vizwiz': ('vizwiz', dict(annotations='vizwiz/val.json', images='vizwiz/val')),
    'textvqa': ('textvqa', dict(questions='textvqa/TextVQA_0.5.1_val.json', images='textvqa/train_images')),
    'textvqa_ocr': ('textvqa', dict(questions='textvqa/TextVQA_0.5.1_val.json', images='textvqa/train_images',
                                    ocr='textvqa/TextVQA_Rosetta_OCR_v0.2_val.json')),
    **{f'pope_{s}': ('pope', dict(questions=f'pope/coco_pope_{s}.json', images='vqav2/val2014'))
       for s in POPE_SPLITS},
    'refcoco': ('refer', dict(refs='refcoco/refcoco/refs(unc).p', instances='refcoco/refcoco/instances.json',
                              images='refcoco/train2014')),
    'refcoco+': ('refer', dict(refs='refcoco/refcoco+/refs(unc).p',
                               instances='refcoco/refcoco+/instances.json', images='refcoco/train2014')),
    'refcocog': ('refer', dict(refs='refcoco/refcocog/refs(umd).p',
                               instances='refcoco/refcocog/instances.json', images='refcoco/train2014')),
    'ocidref': ('ocidref', dict(expressions='ocidref/val_expressions.json', images='ocidref/OCID-dataset')),
}
KIND_OF_READER = {'vqa': 'vqa', 'vizwiz': 'vqa', 'textvqa': 'vqa', 'gqa': 'gqa', 'pope': 'pope',
                  'refer': 'box', 'ocidref': 'box'}
GROUP_OF_KIND = {'vqa': 'vision', 'gqa': 'vision', 'box': 'vision', 'pope': 'vision', 'mc': 'text',
                 'lm_eval': 'text'}
# a box is right at IoU >= 0.5 (RefCOCO family); OCID-Ref's own rule, kept by vlm-evaluation, is 0.25
IOU_THRESHOLD = {'refer': 0.5, 'ocidref': 0.25}
NEW_TOKENS = {'vqa': 128, 'gqa': 128, 'box': 20}  # the suite's defaults; shapes and NAME=PATH keep 16
# DCLM's small text set (rw_small): name -> shots, and its fixed baselines b for (acc - b) / (1 - b)
TEXT_SUITE = {'hellaswag': 0, 'arc_easy': 10, 'arc_challenge': 10, 'copa': 0, 'winogrande': 0, 'boolq': 10}
DCLM_BASELINES = {'hellaswag': 0.25, 'arc_easy': 0.25, 'arc_challenge': 0.25, 'copa': 0.5, 'winogrande': 0.5,
                  'boolq': 0.62}
# the Vision Stable Score's six families (each the mean of its members) and what is reported beside it
VISION_FAMILIES = {'VQAv2': ('vqav2',), 'GQA': ('gqa',), 'VizWiz': ('vizwiz',),
                   'TextVQA': ('textvqa', 'textvqa_ocr'), 'RefCOCO': ('refcoco', 'refcocog'),
                   'OCID-Ref': ('ocidref',)}
VISION_BESIDE = ('refcoco+',) + tuple(f'pope_{s}' for s in POPE_SPLITS)
SHOW_PROBLEMS = 10  # problems printed per task; all of them are counted


# -----------------------------------------------------------------------------
# The Stable Scores: this project's definition (the authors' aggregate was a z-score across their runs)

def stable_score(tasks):
    """Mean over tasks of (acc - chance) / (1 - chance); tasks: [(acc, chance)]. None for no tasks."""
    tasks = list(tasks)
    if not tasks:
        return None
    return sum((acc - chance) / (1 - chance) for acc, chance in tasks) / len(tasks)


def member(task):
    return dict(raw=task['acc'], baseline=task['chance'],
                centred=stable_score([(task['acc'], task['chance'])]))


def vision_stable(tasks):
    """The Vision Stable Score and its record. With any of the suite's families: the mean over the families
    present of each family's score, the mean of its members' accuracy (chance 0); the rest beside it.
    Otherwise (the shapes world, NAME=PATH sets): the mean score of the vision tasks given."""
    scored = [n for n, t in tasks.items() if t['group'] == 'vision' and t.get('acc') is not None]
    if not any(n in tasks for names in VISION_FAMILIES.values() for n in names):
        names = [n for n in scored if n not in VISION_BESIDE]
        return dict(score=stable_score((tasks[n]['acc'], tasks[n]['chance']) for n in names),
                    formula='mean over the vision tasks of (acc - chance) / (1 - chance)',
                    members={n: member(tasks[n]) for n in names}, missing=[],
                    beside={n: member(tasks[n]) for n in scored if n in VISION_BESIDE})
    families, missing = {}, []
    for family, names in VISION_FAMILIES.items():
        present = [n for n in names if n in scored]
        missing += [n for n in names if n not in scored]
        if present:
            mean = sum(tasks[n]['acc'] for n in present) / len(present)
            families[family] = dict(members=present, score=mean)
    score = sum(f['score'] for f in families.values()) / len(families) if families else None
    return dict(score=score, formula='mean over the families present (VQAv2, GQA, VizWiz, TextVQA = mean of '
                'its two variants, RefCOCO = mean of RefCOCO and RefCOCOg, OCID-Ref) of the mean accuracy of '
                'their members; chance 0', families=families,
                members={n: member(tasks[n]) for f in families.values() for n in f['members']},
                missing=missing, beside={n: member(tasks[n]) for n in scored if n not in
                                         [m for names in VISION_FAMILIES.values() for m in names]})


def text_stable(tasks):
    """The Text Stable Score and its record: the mean over the text tasks of (acc - b) / (1 - b), b DCLM's
    fixed baseline for the text suite's tasks and the mean of 1 / #choices for the built-in sets. With any
    lm_eval task, only those count and the built-in sets are reported beside."""
    scored = [n for n, t in tasks.items() if t['group'] == 'text' and t.get('acc') is not None]
    suite = any(t['kind'] == 'lm_eval' for t in tasks.values())
    names = [n for n in scored if tasks[n]['kind'] == 'lm_eval' or not suite]
    missing = [f'lm_eval:{n}' for n in TEXT_SUITE if f'lm_eval:{n}' not in names] if suite else []
    return dict(score=stable_score((tasks[n]['acc'], tasks[n]['chance']) for n in names),
                formula='mean over the text tasks of (acc - b) / (1 - b); b: DCLM\'s baseline for lm_eval '
                'tasks, else the mean of 1 / #choices', members={n: member(tasks[n]) for n in names},
                missing=missing, beside={n: member(tasks[n]) for n in scored if n not in names})


def with_stable_scores(results):
    vision, text = vision_stable(results['tasks']), text_stable(results['tasks'])
    results['vision_stable_score'], results['text_stable_score'] = vision['score'], text['score']
    results['stable_scores'] = dict(vision=vision, text=text)
    return results


# -----------------------------------------------------------------------------
# Task specs: a name -> its kind and files

def vqa_folder_spec(name, folder):
    return dict(name=name, kind='vqa', questions=os.path.join(folder, 'questions.json'),
                annotations=os.path.join(folder, 'annotations.json'), images=os.path.join(folder, 'images'),
                max_new_tokens=16)


def suite_spec(name, root):
    """A vision-suite task's spec, its files under root; 'missing' says which of them are not there."""
    reader, files = SUITE_FILES[name]
    paths = {key: os.path.join(root, path) for key, path in files.items()}
    if reader == 'refer' and not os.path.exists(paths['refs']):  # a JSON export of the refs will do
        export = os.path.join(os.path.dirname(paths['refs']), 'refs.json')
        paths['refs'] = export if os.path.exists(export) else paths['refs']
    kind = KIND_OF_READER[reader]
    spec = dict(name=name, kind=kind, reader=reader, paths=paths, max_new_tokens=NEW_TOKENS.get(kind))
    if reader == 'vqa':
        spec.update(questions=paths['questions'], annotations=paths['annotations'], images=paths['images'])
    absent = [p for p in paths.values() if not os.path.exists(p)]
    if absent:
        spec['missing'] = f"not found: {', '.join(absent)}"
    return spec


def task_specs(settings):
    """The comma-separated --tasks -> [dict(name, kind, files...)] (built-in names, suites or NAME=PATH);
    the built-in tasks' files come from the other settings. A suite's task whose files are not there is
    kept with 'missing' saying so; a task named on its own must be there."""
    specs, root = [], settings['data_root']
    for entry in [t.strip() for t in settings['tasks'].split(',') if t.strip()]:
        if entry.startswith('lm_eval:') or entry == 'text_suite':
            names = list(TEXT_SUITE) if entry == 'text_suite' else [entry[len('lm_eval:'):]]
            specs += [dict(name=f'lm_eval:{n}', kind='lm_eval', task=n, shots=TEXT_SUITE.get(n, 0),
                           task_dir=settings['lm_eval_tasks'] or None) for n in names]
        elif '=' in entry:
            name, path = (s.strip() for s in entry.split('=', 1))
            if os.path.isdir(path):
                specs.append(vqa_folder_spec(name, path))
            elif path.endswith(('.jsonl', '.parquet')):
                specs.append(dict(name=name, kind='mc', path=path))
            else:
                raise EvalError(f"task {entry!r}: {path} is neither a VQA folder (questions.json, "
                                f"annotations.json, images/) nor a .jsonl / .parquet multiple-choice file")
        elif entry == 'vision_suite':
            suite = [suite_spec(name, root) for name in SUITE_FILES]
            if all(s.get('missing') for s in suite):
                raise EvalError(f"vision_suite: none of its datasets is under --data_root={root} "
                                f"(its layout: docs/data.md)")
            specs += suite
        elif entry == 'vqav2':
            specs.append(dict(name=entry, kind='vqa', questions=settings['vqa_questions'],
                              annotations=settings['vqa_annotations'], images=settings['vqa_images'],
                              max_new_tokens=NEW_TOKENS['vqa']))
        elif entry in SUITE_FILES:
            specs.append({k: v for k, v in suite_spec(entry, root).items() if k != 'missing'})
        elif entry == 'arc_easy':
            specs.append(dict(name=entry, kind='mc', path=settings['arc_file']))
        elif entry == 'shapes_vqa':
            specs.append(vqa_folder_spec(entry, os.path.join(settings['shapes_root'], 'vqa')))
        elif entry == 'shapes_mc':
            path = os.path.join(settings['shapes_root'], 'text_mc', 'arc_shapes.jsonl')
            specs.append(dict(name=entry, kind='mc', path=path))
        else:
            raise EvalError(f"unknown task {entry!r}: the built-in tasks are {', '.join(TASKS)}, "
                            f"{', '.join(n for n in SUITE_FILES if n not in TASKS)}, the suites vision_suite "
                            f"and text_suite, and lm_eval:NAME; other sets are given as NAME=PATH")
    names = [s['name'] for s in specs]
    if len(set(names)) != len(names):
        raise EvalError(f"a task is listed twice in --tasks: {names}")
    bridge = 'lm_eval_bridge' in sys.modules or importlib.util.find_spec('lm_eval_bridge') is not None
    if any(s['kind'] == 'lm_eval' for s in specs) and not bridge:
        raise EvalError("the text suite (lm_eval:...) runs through lm_eval_bridge.py, which is not there")
    return specs


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


def question_prompt(enc, item, num_patches):
    """An item's prompt tokens: its own user turn (tasks.py's readers write one) or the VQA prompt."""
    if 'prompt' in item:
        return chat_tokens(enc, [('user', item['prompt'])], n_image=num_patches)[0]
    return vqa_prompt(enc, item['question'], num_patches)


def prompt_batches(model, enc, items, batch_size, problems, desc):
    """(question ids, prompts, images uint8 (B, S, S, 3)) per batch of items; an item whose image does not
    open or whose prompt does not fit is named in `problems` and left out."""
    from vision import ImageError, preprocess
    size, block_size = model.vision.cfg.image_size, model.lm.config.block_size
    with tqdm(total=len(items), desc=desc, unit='q', dynamic_ncols=True) as bar:
        for start in range(0, len(items), batch_size):
            batch = items[start:start + batch_size]
            prompts, images, ids, decoded = [], [], [], {}
            for it in batch:
                prompt = question_prompt(enc, it, model.num_patches)
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
                yield ids, prompts, torch.stack(images)
            bar.update(len(batch))


def answer_questions(model, enc, items, batch_size, max_new_tokens, problems, desc='vqa'):
    """Greedy answers {question_id: text}; items that cannot run are named in `problems` and left out."""
    eot_id = token_ids(enc)['eot_id']
    answers = {}
    for ids, prompts, images in prompt_batches(model, enc, items, batch_size, problems, desc):
        rows = generate_batch(model, prompts, images, max_new_tokens, eot_id)
        for qid, row in zip(ids, rows):
            answers[qid] = decode(enc, row).strip()
    return answers


@torch.no_grad()
def yes_probabilities(model, enc, items, batch_size, problems, desc='pope'):
    """{question_id: P(" Yes") / (P(" Yes") + P(" No"))} of the first token where the two answers differ
    (after the tokens they share: none with GPT-2's, " " with bytes), the two answers' probabilities
    vlm-evaluation compares; prompts left-padded as in generate_batch."""
    eot_id = token_ids(enc)['eot_id']
    yes_ids, no_ids = encode(enc, ' Yes'), encode(enc, ' No')
    k = next(i for i, (a, b) in enumerate(zip(yes_ids, no_ids)) if a != b)
    yes, no = yes_ids[k], no_ids[k]
    device = model.lm.output.weight.device
    out = {}
    for ids, prompts, images in prompt_batches(model, enc, items, batch_size, problems, desc):
        prompts = [p + yes_ids[:k] for p in prompts]
        B, width = len(prompts), max(len(p) for p in prompts)
        idx = torch.full((B, width), eot_id, dtype=torch.long)
        doc_ids = torch.zeros((B, width), dtype=torch.long)
        for i, p in enumerate(prompts):
            idx[i, width - len(p):] = torch.tensor(p)
            doc_ids[i, width - len(p):] = 1
        idx = idx.to(device)
        x = model.embed(idx, images.to(device), torch.ones(B, dtype=torch.bool, device=device))
        logits, _ = model.lm(idx, doc_ids=doc_ids.to(device), inputs_embeds=x, last_only=True)  # (B, 1, V)
        last = logits[:, -1].float()
        out.update(zip(ids, torch.sigmoid(last[:, yes] - last[:, no]).tolist()))
    return out


# -----------------------------------------------------------------------------
# Multiple choice with the model: summed log-likelihood of " {choice}" after the prompt

def mc_requests(enc, items):
    """(context, continuation) token lists for every choice of every item, in order; the context
    starts with <|endoftext|> (the BOS of plain text)."""
    eot_id = token_ids(enc)['eot_id']
    requests = []
    for it in items:
        context = [eot_id] + encode(enc, it['query'])
        requests += [(context, encode(enc, ' ' + c)) for c in it['choices']]
    return requests


def mc_loglikelihoods(lm, enc, items, batch_size, desc='mc'):
    """Per item, the summed log-likelihood of each choice."""
    flat = loglikelihoods(lm, mc_requests(enc, items), batch_size, token_ids(enc)['eot_id'], desc)
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
    return os.path.join(folder, f"predictions_{task.replace(':', '_')}{suffix}.json")


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
    data files, limit and seed, and the items drawn: their number and a fingerprint of ids and content.
    A suite's missing task has none; an lm_eval task's data is read by lm-eval itself."""
    data = {}
    for spec in specs:
        if spec.get('missing'):
            continue
        if spec['kind'] == 'lm_eval':
            data[spec['name']] = ([], [], dict(task=spec['name'], files=[], limit=limit, seed=seed,
                                               shots=spec['shots']))
            continue
        files, items, problems, rows = read_task(spec, limit, seed, with_images)
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


def gather(obj, world):
    """Every rank's obj, in rank order (torch.distributed.all_gather_object)."""
    import torch.distributed as dist
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


def run_task(model, enc, spec, items, problems, batch_size, max_new_tokens, rank=0, world=1):
    """One task on the model -> (metrics, predictions to write); problems gain the items left out. Under
    torchrun each rank runs every world-th item and the outputs are gathered, so that every rank scores
    them all."""
    name, kind, lm = spec['name'], spec['kind'], getattr(model, 'lm', model)
    part, known = list(range(len(items)))[rank::world], len(problems)
    new_tokens = max_new_tokens or spec.get('max_new_tokens') or 16
    if kind == 'mc':
        fit = []
        for i in part:
            if all(len(c) < lm.config.block_size for _, c in mc_requests(enc, [items[i]])):
                fit.append(i)
            else:
                problems.append(f"item {items[i]['id']}: a choice is longer than block_size "
                                f"{lm.config.block_size} tokens")
        lls = mc_loglikelihoods(lm, enc, [items[i] for i in fit], batch_size, desc=name)
        outputs = dict(zip(fit, lls))  # item index -> the log-likelihood of each choice
    elif kind == 'pope':
        outputs = yes_probabilities(model, enc, [items[i] for i in part], batch_size, problems, desc=name)
    else:
        outputs = answer_questions(model, enc, [items[i] for i in part], batch_size, new_tokens, problems,
                                   desc=name)
    if world > 1:
        everything, outputs = gather((outputs, problems[known:]), world), {}
        del problems[known:]
        for out, new in everything:
            outputs.update(out)
            problems += new
    if kind == 'mc':
        return score_mc([items[i] for i in sorted(outputs)], [outputs[i] for i in sorted(outputs)])
    if kind == 'pope':
        return score_pope(items, outputs), [dict(question_id=q, p_yes=outputs[q]) for q in
                                            (it['question_id'] for it in items) if q in outputs]
    if kind == 'vqa':
        metrics = score_vqa(items, outputs)
    elif kind == 'gqa':
        metrics = score_gqa(items, outputs)
    else:
        metrics = score_boxes(items, outputs, IOU_THRESHOLD[spec['reader']])
    metrics['max_new_tokens'] = new_tokens
    return metrics, [dict(question_id=it['question_id'], answer=outputs[it['question_id']])
                     for it in items if it['question_id'] in outputs]


def run_bridge(lm, enc, specs, data, limit, seed, batch_size, device):
    """The lm_eval tasks through lm_eval_bridge, at their shots -> ({name: results entry}, {name: its items});
    chance is DCLM's fixed baseline for the text suite's tasks, the mean of 1 / #choices for others."""
    from lm_eval_bridge import BridgeError, evaluate_lm_eval
    try:
        scores = evaluate_lm_eval(lm, enc, [s['task'] for s in specs], limit, seed, batch_size, device,
                                  shots={s['task']: s['shots'] for s in specs}, task_dir=specs[0]['task_dir'])
    except BridgeError as e:  # one line naming the task or the dataset
        raise EvalError(str(e)) from None
    entries, items = {}, {}
    for spec in specs:
        got = scores.get(spec['task'])
        if not got or got.get('acc') is None:
            entries[spec['name']] = dict(kind='lm_eval', group='text', acc=None, chance=None, n=0, score=None,
                                         skipped=0, not_run='lm_eval_bridge returned no accuracy',
                                         measured=data[spec['name']][2])
            continue
        chance = DCLM_BASELINES.get(spec['task'], got.get('chance') or 0.0)
        metrics = dict(acc=got['acc'], acc_norm=got.get('acc_norm'), chance=chance, n=got.get('n'),
                       shots=got.get('num_fewshot', spec['shots']), choices_chance=got.get('chance'))
        entries[spec['name']] = task_result(spec, metrics, [], data[spec['name']][2])
        items[spec['name']] = got.get('items') or []
    return entries, items


def evaluate(ckpt, specs, limit=0, seed=0, batch_size=32, max_new_tokens=0, device='cpu', dtype='float32',
             data=None, rank=0, world=1):
    """Load every task's data (a missing file fails here, before the model loads; `data` of load_tasks
    when given), then the model; run each task (under torchrun: this rank's slice, see run_task). Returns
    (results dict, {task: predictions to write}). max_new_tokens 0: each task's own."""
    from model import VLM, model_from_checkpoint
    data = data or load_tasks(specs, limit, seed)
    try:
        model, checkpoint = model_from_checkpoint(ckpt, device)
    except ValueError as e:  # model_from_checkpoint names the file and the cause
        raise EvalError(str(e)) from None
    if dtype != 'float32':
        model = model.to(getattr(torch, dtype))
    enc = get_tokenizer(checkpoint['tokenizer'], tokenizer_file=checkpoint.get('tokenizer_file'))
    config = checkpoint.get('config') if isinstance(checkpoint.get('config'), dict) else {}
    run = config.get('run_name') or os.path.basename(os.path.dirname(os.path.abspath(ckpt)))
    results = dict(checkpoint=os.path.abspath(ckpt), step=checkpoint.get('step'), run=run,
                   group=run_group(run), seed=config.get('seed'), tokenizer=checkpoint['tokenizer'],
                   limit=limit, subset_seed=seed, tasks={})
    missing = {s['name']: s['missing'] for s in specs if s.get('missing')}
    if missing:
        results['missing'] = missing
        for name, why in missing.items():
            tqdm.write(f"[{name}] not run: {why}", file=sys.stderr)
    predictions = {}
    for spec in specs:
        name = spec['name']
        if name in missing or spec['kind'] == 'lm_eval':
            continue
        items, problems, measured = data[name]
        if spec['kind'] != 'mc' and not isinstance(model, VLM):
            tqdm.write(f"[{name}] not run: {ckpt} holds a text-only model", file=sys.stderr)
            results['tasks'][name] = dict(kind=spec['kind'], group='vision', acc=None, chance=0.0, n=0,
                                          score=None, skipped=len(items) + len(problems),
                                          not_run='text-only checkpoint', measured=measured)
            continue
        metrics, predictions[name] = run_task(model, enc, spec, items, problems, batch_size, max_new_tokens,
                                              rank, world)
        if rank == 0:
            report(name, problems)
        results['tasks'][name] = task_result(spec, metrics, problems, measured)
    bridge = [s for s in specs if s['kind'] == 'lm_eval']
    if bridge and rank == 0:  # lm-eval runs whole in one process; the other ranks' results are not written
        lm = model.lm if isinstance(model, VLM) else model
        entries, items = run_bridge(lm, enc, bridge, data, limit, seed, batch_size, device)
        results['tasks'].update(entries)
        predictions.update(items)
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
        for auc in ('auc_roc', 'auc_pr'):
            if auc in t:
                lines.append(f"|   {auc} | | | | {pct(t[auc])} | | | |")
    lines.append(f"\nVision Stable Score: {pct(results['vision_stable_score'])}   "
                 f"Text Stable Score: {pct(results['text_stable_score'])}")
    for key, record in (results.get('stable_scores') or {}).items():
        missing = f"; missing: {', '.join(record['missing'])}" if record['missing'] else ''
        lines.append(f"  {key} averages: {', '.join(record['members']) or 'nothing'}{missing}")
    for name, why in (results.get('missing') or {}).items():
        lines.append(f"  {name} not run: {why}")
    return '\n'.join(lines)


# -----------------------------------------------------------------------------
# Comparing runs: mean ± std over seeds per configuration, a markdown table and a bar chart

TASK_TITLES = {'vqav2': 'VQAv2', 'arc_easy': 'ARC-easy', 'lm_eval:arc_easy': 'ARC-easy (lm-eval)',
               'shapes_vqa': 'VQA (shapes)',
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
    mc = next((n for n in ('arc_easy', 'lm_eval:arc_easy', 'shapes_mc') if n in every),
              next((n for n, k in every.items() if k in ('mc', 'lm_eval')), None))
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


def member_differences(paths):
    """Lines naming the Stable Scores that the runs made over different members (tasks)."""
    runs = [(load_results(p), results_file(p)) for p in paths]
    lines = []
    for key in ('vision', 'text'):
        seen = {}
        for results, file in runs:
            record = (results.get('stable_scores') or {}).get(key)
            seen.setdefault(tuple(record['members']) if record else None, file)
        if len(seen) > 1:
            said = '; '.join(f"{file}: {', '.join(m) if m else 'members not recorded'}"
                             for m, file in seen.items())
            lines.append(f"note: the {key} Stable Scores average different tasks ({said})")
    return lines


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
    if settings['batch_size'] < 1:
        sys.exit(f"config error: --batch_size must be >= 1, got {settings['batch_size']}")
    if settings['max_new_tokens'] < 0:
        sys.exit(f"config error: --max_new_tokens must be >= 0 (0 = each task's own), "
                 f"got {settings['max_new_tokens']}")
    if settings['dtype'] not in DTYPES:
        sys.exit(f"config error: --dtype must be one of {', '.join(DTYPES)}, got {settings['dtype']!r}")
    if settings['plot'] and not settings['compare']:
        sys.exit("config error: --plot goes with --compare")
    return settings


def distributed(settings):
    """(rank, world size) under torchrun (its WORLD_SIZE, RANK and LOCAL_RANK), the process group joined and
    a CUDA device set to this rank's GPU; (0, 1) otherwise."""
    world = int(os.environ.get('WORLD_SIZE', '1'))
    if world == 1:
        return 0, 1
    import torch.distributed as dist
    cuda = settings['device'].startswith('cuda')
    if cuda:
        settings['device'] = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(settings['device'])
    if not dist.is_initialized():
        dist.init_process_group('nccl' if cuda else 'gloo')
    return dist.get_rank(), world


def main(argv=None):
    settings = parse_settings(argv)
    try:
        if settings['compare']:
            columns, rows = compare(compare_paths(settings['compare']))
            print(format_compare(columns, rows))
            for line in member_differences(compare_paths(settings['compare'])):
                print(line)
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
            rank, world = distributed(settings)
            results, predictions = evaluate(settings['ckpt'], specs, limit, seed, settings['batch_size'],
                                            settings['max_new_tokens'], settings['device'], settings['dtype'],
                                            data, rank, world)
            if rank:  # every rank holds every result; the first writes them
                return results
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
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # under torchrun: leave the process group, then exit directly; on the CPU (gloo) a background
        # thread is sometimes torn down badly at interpreter exit (SIGABRT after the results are written)
        torch.distributed.destroy_process_group()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
