"""
The evaluation datasets, each read from the files its authors release, in their published layout, and
each one's metric as its official scoring computes it. Every item that cannot be used is named and
counted (the caller reports and records the problems); a file that cannot be read at all is an
EvalError naming it. eval.py runs the model over the items and writes the results.

    VQAv2      questions + annotations (VQA's layout), COCO val2014 images       VQA soft accuracy
    GQA        testdev_balanced_questions.json, images/{imageId}.jpg             exact match (see gqa_correct)
    VizWiz     val.json, val/{image}                                             VQA soft accuracy
    TextVQA    TextVQA_0.5.1_val.json (+ TextVQA_Rosetta_OCR_v0.2_val.json),     VQA soft accuracy
               train_images/{image_id}.jpg; plain and with the OCR tokens in the prompt
    POPE       coco_pope_{adversarial,popular,random}.json (JSON lines)           P(Yes) vs P(No): accuracy,
                                                                                  AUC-ROC, AUC-PR
    RefCOCO    refs(unc).p / refs(umd).p + instances.json (the refer toolkit),   box accuracy at IoU >= 0.5
    (+, g)     COCO train2014 images; val split
    OCID-Ref   val_expressions.json, OCID-dataset/{scene_path}                   box accuracy at IoU >= 0.25
    multiple choice: AI2 ARC JSONL, HF ARC (parquet or JSONL), or {"query", "choices", "gold"} JSONL

Prompts (the user turn of the chat template; tokenizer.chat_tokens adds the image and "Assistant:"):
VQA `{question}\\nAnswer the question using a single word or phrase.` (tokenizer.VQA_INSTRUCTION), VizWiz
with VIZWIZ_INSTRUCTION between the two, TextVQA's OCR variant with OCR_LINE between them, grounding
GROUNDING_PROMPT.
"""
import ast
import json
import os
import pickle
import random
import re
import string

from tokenizer import VQA_INSTRUCTION

VIZWIZ_INSTRUCTION = "When the provided information is insufficient, respond with 'Unanswerable'."
OCR_LINE = 'Reference OCR token: {tokens}'  # LLaVA-1.5's TextVQA prompt: the tokens joined by ', '
GROUNDING_PROMPT = ('Please provide the bounding box coordinate of the region this sentence describes: '
                    '"{expression}"')
POPE_SPLITS = ('adversarial', 'popular', 'random')
REFER_SETS = {'refcoco': 'refs(unc).p', 'refcoco+': 'refs(unc).p', 'refcocog': 'refs(umd).p'}
OCID_IMAGE_SIZE = (640, 480)  # every OCID image is 640 x 480 pixels (width, height)


class EvalError(ValueError):
    """A task that cannot run at all (a missing or unreadable file); per-item problems are skipped instead."""


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
    """The list of a released file: under `key` of the top-level object (or the top level itself)."""
    if isinstance(data, dict):
        if key not in data:
            raise EvalError(f"{path}: no '{key}' key (keys: {', '.join(list(data)[:8])})")
        data = data[key]
    if not isinstance(data, list):
        raise EvalError(f"{path}: '{key}' must be a list, got {type(data).__name__}")
    return data


def image_names(images_dir, what='image'):
    """The file names in an image folder (None for None: scoring a results file needs no images)."""
    if images_dir is None:
        return None
    if not os.path.isdir(images_dir):
        raise EvalError(f"{what} folder not found: {images_dir}")
    return set(os.listdir(images_dir))


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
# GQA, boxes and POPE: their metrics

GQA_PUNCTUATION = str.maketrans('', '', string.punctuation)


def gqa_correct(prediction, answer):
    """vlm-evaluation's GQA rule: the prediction lowercased with string.punctuation deleted, compared with
    the released answer as it is (GQA's own eval.py compares the two strings unchanged)."""
    return prediction.translate(GQA_PUNCTUATION).lower() == answer


def parse_box(text):
    """A generated box "[x1, y1, x2, y2]" (fractions of the image) -> 4 floats, or None when it is not
    such a list, a coordinate is outside [0, 1], x1 >= x2 or y1 >= y2 (vlm-evaluation's parse_bbox)."""
    try:
        box = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    if not isinstance(box, list) or len(box) != 4:
        return None
    if not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in box):
        return None
    if not all(0 <= c <= 1 for c in box) or box[0] >= box[2] or box[1] >= box[3]:
        return None
    return [float(c) for c in box]


def box_iou(a, b):
    """Intersection over union of two [x1, y1, x2, y2] boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def box_correct(text, box, threshold):
    """Whether generated `text` is a valid box at IoU >= threshold with the reference box (invalid: wrong)."""
    pred = parse_box(text)
    return pred is not None and box_iou(pred, box) >= threshold


def normalized_box(x1, y1, x2, y2, width, height):
    """Pixel corners -> fractions of the image, 2 decimals (the form the model is asked for); None for a
    box that is empty or leaves the image."""
    if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
        return None
    return [round(x1 / width, 2), round(y1 / height, 2), round(x2 / width, 2), round(y2 / height, 2)]


def auc_roc(labels, scores):
    """Area under the ROC curve: the chance that a positive outscores a negative, a tie counting one half
    (sklearn's roc_auc_score). None with only one class."""
    pos = [s for s, l in zip(scores, labels) if l]
    neg = [s for s, l in zip(scores, labels) if not l]
    if not pos or not neg:
        return None
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks, i = [0.0] * len(scores), 0
    while i < len(order):  # tied scores share their mean rank
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = sum(r for r, l in zip(ranks, labels) if l)
    return (rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def auc_pr(labels, scores):
    """Average precision: sum over the distinct thresholds, highest first, of the recall gained times the
    precision there (sklearn's average_precision_score, no interpolation). None without a positive."""
    n_pos = sum(1 for l in labels if l)
    if not n_pos:
        return None
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    tp = fp = 0
    ap = recall = 0.0
    for k, i in enumerate(order):
        tp, fp = tp + bool(labels[i]), fp + (not labels[i])
        if k + 1 < len(order) and scores[order[k + 1]] == scores[i]:
            continue  # a threshold takes every item of its score at once
        ap += (tp / n_pos - recall) * tp / (tp + fp)
        recall = tp / n_pos
    return ap


def pope_metrics(labels, p_yes):
    """POPE as vlm-evaluation scores it: 'yes' when P(Yes) >= P(No) (p_yes: P(Yes) / (P(Yes) + P(No))),
    accuracy, and the AUCs of p_yes with 'yes' the positive class. labels: True for 'yes'."""
    n = len(labels)
    acc = sum((p >= 0.5) == bool(l) for p, l in zip(p_yes, labels)) / n if n else None
    return dict(acc=acc, auc_roc=auc_roc(labels, p_yes), auc_pr=auc_pr(labels, p_yes))


def score_gqa(items, predictions):
    """GQA accuracy (gqa_correct) over the items that have a prediction."""
    scores = [gqa_correct(predictions[it['question_id']], it['answer']) for it in items
              if it['question_id'] in predictions]
    return dict(acc=sum(scores) / len(scores) if scores else None, chance=0.0, n=len(scores))


def score_boxes(items, predictions, threshold):
    """Box accuracy at IoU >= threshold over the items that have a prediction; `invalid` counts the
    generations that are no valid box (scored wrong)."""
    scored = [(predictions[it['question_id']], it['box']) for it in items if it['question_id'] in predictions]
    correct = sum(box_correct(text, box, threshold) for text, box in scored)
    invalid = sum(parse_box(text) is None for text, _ in scored)
    return dict(acc=correct / len(scored) if scored else None, chance=0.0, n=len(scored), invalid=invalid,
                iou_threshold=threshold, prompt=GROUNDING_PROMPT)


def score_pope(items, p_yes):
    """POPE's accuracy, AUC-ROC and AUC-PR (pope_metrics) over the items that have a P(Yes); a split is
    half yes, half no, so chance is 0.5."""
    scored = [it for it in items if it['question_id'] in p_yes]
    metrics = pope_metrics([it['label'] for it in scored], [p_yes[it['question_id']] for it in scored])
    return dict(metrics, chance=0.5, n=len(scored))


# -----------------------------------------------------------------------------
# VQAv2 (and any set in its layout): questions + annotations (+ images) -> items

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


def vqa_prompt_text(question, instruction=None):
    """The user turn of a VQA prompt: the question, an optional instruction, then VQA_INSTRUCTION."""
    return '\n'.join([question.strip()] + ([instruction] if instruction else []) + [VQA_INSTRUCTION])


def find_image(names, images_dir, name, what, problems):
    """images_dir/name; '' without images (names None: a results file is scored); None after naming the
    missing image in problems."""
    if names is None:
        return ''
    if name not in names:
        problems.append(f"{what}: no image {name} in {images_dir}")
        return None
    return os.path.join(images_dir, name)


# -----------------------------------------------------------------------------
# GQA, VizWiz, TextVQA: open questions

def load_gqa(questions_path, images_dir=None, limit=0, seed=0):
    """GQA's testdev_balanced_questions.json {question id: {imageId, question, answer, ...}} -> (items,
    problems); an item's answer is the one released answer."""
    data = read_json(questions_path, 'GQA questions')
    if not isinstance(data, dict):
        raise EvalError(f"{questions_path}: GQA questions are an object {{question id: question}}, "
                        f"got {type(data).__name__}")
    names, keys = image_names(images_dir, 'GQA image'), list(data)
    items, problems = [], []
    for i in subset(len(keys), limit, seed):
        qid, q = keys[i], data[keys[i]]
        fields = ('imageId', 'question', 'answer')
        if not isinstance(q, dict) or not all(isinstance(q.get(k), str) for k in fields):
            problems.append(f"{questions_path}: question {qid} needs text 'imageId', 'question' and 'answer'")
            continue
        image = find_image(names, images_dir, f"{q['imageId']}.jpg", f"question {qid}", problems)
        if image is not None:
            items.append(dict(question_id=qid, question=q['question'], answer=q['answer'], image=image,
                              prompt=vqa_prompt_text(q['question'])))
    return items, problems


def load_vizwiz(annotations_path, images_dir=None, limit=0, seed=0):
    """VizWiz's val.json [{image, question, answers: [{answer, answer_confidence}], answer_type,
    answerable}] -> (items, problems); an item's id is its image's name (one question per image)."""
    records = json_list(annotations_path, read_json(annotations_path, 'VizWiz annotations'), 'annotations')
    names = image_names(images_dir, 'VizWiz image')
    items, problems = [], []
    for i in subset(len(records), limit, seed):
        r = records[i]
        if not isinstance(r, dict) or not isinstance(r.get('image'), str) or \
                not isinstance(r.get('question'), str):
            problems.append(f"{annotations_path}: record {i} needs text 'image' and 'question'")
            continue
        answers = [a.get('answer') for a in r.get('answers') or [] if isinstance(a, dict)]
        if not answers or not all(isinstance(a, str) for a in answers):
            problems.append(f"{annotations_path}: {r['image']} has no usable 'answers'")
            continue
        image = find_image(names, images_dir, r['image'], r['image'], problems)
        if image is not None:
            items.append(dict(question_id=r['image'], question=r['question'], answers=answers,
                              answer_type=r.get('answer_type') or 'other', image=image,
                              prompt=vqa_prompt_text(r['question'], VIZWIZ_INSTRUCTION)))
    return items, problems


def load_ocr_tokens(path):
    """TextVQA_Rosetta_OCR_v0.2_val.json {data: [{image_id, ocr_tokens}]} -> {image_id: [token]}."""
    tokens = {}
    for i, r in enumerate(json_list(path, read_json(path, 'TextVQA OCR'), 'data')):
        if isinstance(r, dict) and isinstance(r.get('ocr_tokens'), list):
            tokens[r.get('image_id')] = [str(t) for t in r['ocr_tokens']]
    return tokens


def load_textvqa(questions_path, images_dir=None, limit=0, seed=0, ocr_path=None):
    """TextVQA_0.5.1_val.json {data: [{question_id, image_id, question, answers}]} -> (items, problems).
    With ocr_path (the Rosetta OCR file), the prompt carries the image's OCR tokens (OCR_LINE, left out
    where the image has none); an image absent from that file is a problem."""
    records = json_list(questions_path, read_json(questions_path, 'TextVQA questions'), 'data')
    ocr = load_ocr_tokens(ocr_path) if ocr_path else None
    names = image_names(images_dir, 'TextVQA image')
    items, problems = [], []
    for i in subset(len(records), limit, seed):
        r = records[i]
        if not isinstance(r, dict) or not all(k in r for k in ('question_id', 'image_id')) or \
                not isinstance(r.get('question'), str):
            problems.append(f"{questions_path}: record {i} needs 'question_id', 'image_id' and 'question'")
            continue
        qid = r['question_id']
        answers = r.get('answers')
        if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
            problems.append(f"{questions_path}: question_id {qid} has no usable 'answers'")
            continue
        line = None
        if ocr is not None:
            if r['image_id'] not in ocr:
                problems.append(f"question_id {qid}: image {r['image_id']} is not in {ocr_path}")
                continue
            line = OCR_LINE.format(tokens=', '.join(ocr[r['image_id']])) if ocr[r['image_id']] else None
        image = find_image(names, images_dir, f"{r['image_id']}.jpg", f"question_id {qid}", problems)
        if image is not None:
            items.append(dict(question_id=qid, question=r['question'], answers=answers, image=image,
                              answer_type='other', prompt=vqa_prompt_text(r['question'], line)))
    return items, problems


# -----------------------------------------------------------------------------
# POPE: yes/no questions about objects in COCO val2014 images

def load_pope(path, images_dir=None, limit=0, seed=0):
    """One of POPE's COCO split files (JSON lines {question_id, image, text, label}) -> (items, problems);
    an item's label is True for 'yes'."""
    if not os.path.isfile(path):
        raise EvalError(f"POPE file not found: {path}")
    records = []
    with open(path, 'rb') as f:
        for n, line in enumerate(f, start=1):
            if line.strip():
                try:
                    records.append((n, json.loads(line.decode('utf-8'))))
                except (UnicodeDecodeError, json.JSONDecodeError) as e:
                    records.append((n, f"not a valid JSON line ({e})"))
    names = image_names(images_dir, 'POPE image')
    items, problems = [], []
    for i in subset(len(records), limit, seed):
        n, r = records[i]
        if isinstance(r, str):
            problems.append(f"{path}:{n}: {r}")
            continue
        label = r.get('label') if isinstance(r, dict) else None
        if not isinstance(r, dict) or 'question_id' not in r or not isinstance(r.get('image'), str) or \
                not isinstance(r.get('text'), str) or not isinstance(label, str) or \
                label.strip().lower() not in ('yes', 'no'):
            problems.append(f"{path}:{n}: needs 'question_id', text 'image' and 'text', and 'label' "
                            f"yes or no")
            continue
        image = find_image(names, images_dir, r['image'], f"{path}:{n}", problems)
        if image is not None:
            items.append(dict(question_id=r['question_id'], question=r['text'], image=image,
                              label=label.strip().lower() == 'yes', prompt=vqa_prompt_text(r['text'])))
    return items, problems


# -----------------------------------------------------------------------------
# Grounding: RefCOCO, RefCOCO+, RefCOCOg (the refer toolkit's files) and OCID-Ref

class PlainUnpickler(pickle.Unpickler):
    """Reads pickles of plain builtins only (dicts, lists, strings, numbers): a pickle that names any class
    or function, the way a pickle runs code, is refused."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refuses {module}.{name}: only plain builtins are read")


def load_refs(path):
    """The refer toolkit's refs(unc).p / refs(umd).p (or a JSON export of the same list) -> [ref]."""
    if not os.path.isfile(path):
        raise EvalError(f"refer file not found: {path}")
    if path.endswith('.json'):
        refs = read_json(path, 'refer')
    else:
        try:
            with open(path, 'rb') as f:
                refs = PlainUnpickler(f, encoding='latin1').load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
            raise EvalError(f"{path}: not a readable refs pickle ({e})") from None
    if not isinstance(refs, list):
        raise EvalError(f"{path}: a refs file is a list of refs, got {type(refs).__name__}")
    return refs


def load_refcoco(refs_path, instances_path, images_dir=None, limit=0, seed=0, split='val'):
    """A RefCOCO-family set: its refs (ref_id, ann_id, image_id, split, sentences [{sent_id, sent}]) and
    instances.json (annotations' bbox [x, y, w, h] in pixels, images' width and height) -> (items, problems).
    An item is one sentence of a ref of `split`; its box is the annotation's, as fractions with 2 decimals."""
    refs = [r for r in load_refs(refs_path) if isinstance(r, dict) and r.get('split') == split]
    instances = read_json(instances_path, 'refer instances')
    boxes = {a.get('id'): a.get('bbox') for a in json_list(instances_path, instances, 'annotations')
             if isinstance(a, dict)}
    sizes = {m.get('id'): (m.get('width'), m.get('height'))
             for m in json_list(instances_path, instances, 'images') if isinstance(m, dict)}
    names = image_names(images_dir, 'RefCOCO image')
    sentences = [(r, s) for r in refs for s in (r.get('sentences') or [])]
    items, problems = [], []
    for i in subset(len(sentences), limit, seed):
        ref, sent = sentences[i]
        where = f"{refs_path}: ref {ref.get('ref_id')}"
        if not isinstance(sent, dict) or not isinstance(sent.get('sent'), str):
            problems.append(f"{where}: a sentence without text 'sent'")
            continue
        bbox, size = boxes.get(ref.get('ann_id')), sizes.get(ref.get('image_id'))
        if bbox is None or size is None:
            problems.append(f"{where}: ann_id {ref.get('ann_id')} or image_id {ref.get('image_id')} is not "
                            f"in {instances_path}")
            continue
        try:
            x, y, w, h = (float(v) for v in bbox)
            box = normalized_box(x, y, x + w, y + h, float(size[0]), float(size[1]))
        except (TypeError, ValueError):
            box = None
        if box is None:
            problems.append(f"{where}: box {bbox} does not fit its image {size}")
            continue
        image_id = ref.get('image_id')
        name = f"COCO_train2014_{image_id:012d}.jpg" if isinstance(image_id, int) else str(image_id)
        image = find_image(names, images_dir, name, where, problems)
        if image is not None:
            items.append(dict(question_id=f"{ref.get('ref_id')}-{sent.get('sent_id')}", question=sent['sent'],
                              box=box, image=image, prompt=GROUNDING_PROMPT.format(expression=sent['sent'])))
    return items, problems


def load_ocidref(expressions_path, images_dir=None, limit=0, seed=0):
    """OCID-Ref's val_expressions.json {id: {scene_path, sentence, bbox: "[x1, y1, x2, y2]" in pixels,
    take_id}} -> (items, problems); the images are OCID's, all 640 x 480."""
    data = read_json(expressions_path, 'OCID-Ref expressions')
    if not isinstance(data, dict):
        raise EvalError(f"{expressions_path}: OCID-Ref expressions are an object {{id: expression}}, "
                        f"got {type(data).__name__}")
    if images_dir is not None and not os.path.isdir(images_dir):
        raise EvalError(f"OCID-Ref image folder not found: {images_dir}")
    keys = list(data)
    items, problems = [], []
    for i in subset(len(keys), limit, seed):
        key, r = keys[i], data[keys[i]]
        where = f"{expressions_path}: expression {key}"
        if not isinstance(r, dict) or not isinstance(r.get('sentence'), str) or \
                not isinstance(r.get('scene_path'), str):
            problems.append(f"{where}: needs text 'sentence' and 'scene_path'")
            continue
        try:
            corners = json.loads(r['bbox']) if isinstance(r.get('bbox'), str) else r.get('bbox')
            box = normalized_box(*(float(c) for c in corners), *OCID_IMAGE_SIZE)
        except (TypeError, ValueError):
            box = None
        if box is None:
            problems.append(f"{where}: bbox {r.get('bbox')!r} is not 4 pixel corners inside 640 x 480")
            continue
        image = ''
        if images_dir is not None:
            image = os.path.join(images_dir, r['scene_path'])
            if not os.path.isfile(image):
                problems.append(f"{where}: no image {image}")
                continue
        items.append(dict(question_id=key, question=r['sentence'], box=box, image=image,
                          prompt=GROUNDING_PROMPT.format(expression=r['sentence'])))
    return items, problems


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


# -----------------------------------------------------------------------------
# A task spec -> its items

def read_task(spec, limit, seed, with_images=True):
    """A task spec of eval.py's (its reader and files) -> (files, items, problems, rows); rows are what the
    task's fingerprint hashes."""
    reader, paths = spec.get('reader', spec['kind']), spec.get('paths') or {}
    images = paths.get('images') if with_images else None
    if reader == 'vqa':
        files = [spec['questions'], spec['annotations'], spec['images']]
        items, problems = load_vqa(*files[:2], files[2] if with_images else None, limit, seed)
        return files, items, problems, [[it['question_id'], it['image_id'], it['question'], it['answers']]
                                        for it in items]
    if reader == 'mc':
        items, problems = load_mc(spec['path'], limit, seed)
        return [spec['path']], items, problems, [[it['id'], it['query'], it['choices'], it['gold']]
                                                 for it in items]
    if reader == 'gqa':
        items, problems = load_gqa(paths['questions'], images, limit, seed)
    elif reader == 'vizwiz':
        items, problems = load_vizwiz(paths['annotations'], images, limit, seed)
    elif reader == 'textvqa':
        items, problems = load_textvqa(paths['questions'], images, limit, seed, paths.get('ocr'))
    elif reader == 'pope':
        items, problems = load_pope(paths['questions'], images, limit, seed)
    elif reader == 'refer':
        items, problems = load_refcoco(paths['refs'], paths['instances'], images, limit, seed)
    else:
        items, problems = load_ocidref(paths['expressions'], images, limit, seed)
    answer = [k for k in ('answers', 'answer', 'label', 'box') if items and k in items[0]]
    return list(paths.values()), items, problems, [[it['question_id'], it['prompt']] + [it[k] for k in answer]
                                                   for it in items]
