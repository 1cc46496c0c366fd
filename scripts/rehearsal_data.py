"""
The rehearsal's inputs: small files in every format the 1B chain reads, under the paths the configs and
the README name, so that scripts/rehearsal.sh runs the real commands end to end with nothing downloaded.

    python scripts/rehearsal_data.py --root=out/rehearsal [--small]

Under root:
  data/raw/dclm/global-shard_01_of_10/...jsonl.zst   DCLM-baseline's text shards ({"text": ...} lines)
  data/raw/laion/00000.tar, 00001.tar                img2dataset tars: KEY.jpg + KEY.txt + KEY.json, JPEGs of
                                                     assorted sizes (one missing its caption, one corrupt)
  data/raw/llava_v1_5_mix665k.json, data/llava_images/{coco,gqa,ocr_vqa,textvqa,vg}/...
                                                     the 665K mix: image turns, text-only conversations,
                                                     RefCOCO grounding (original-image fractions) and Visual
                                                     Genome region turns (padded-square fractions)
  data/eval/...                                      the vision suite as released (docs/data.md's layout)
  data/arc/ARC-Easy-Test.jsonl                       AI2's ARC-Easy JSONL
  data/lm_eval/                                      the text suite's six lm-eval tasks: each YAML includes
                                                     lm-eval's own (prompts, shots, metrics) and points it at
                                                     a local JSONL in the Hugging Face dataset's fields
  weights/siglip-so400m-patch14-384/                 a randomly initialised SigLIP in the HF layout, saved by
                                                     transformers (vision.save_siglip where it is missing)
  weights/DCLM-1B/tokenizer.json                     a small byte-level BPE configured as GPT-NeoX-20B's file
                                                     (HF tokenizers; the DCLM-1B route's tokenizer, beside
                                                     the folder the rehearsal exports a model into)

--small: the tower is tiny (48 px, 16 px patches: 9 image positions) and every set is a handful of items;
the default is so400m-patch14-384's real shape. Contents are random words and coloured boxes: the
rehearsal checks that every stage runs and writes what the next one reads, not what a model learns.
"""
import io
import json
import os
import pickle
import random
import sys
import tarfile

from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configurator import parse  # noqa: E402

DEFAULTS = {
    'root': 'out/rehearsal',  # everything goes below it; the rehearsal runs its commands from there
    'small': False,  # a tiny tower and fewer items (the CPU rehearsal); else SigLIP so400m's shape
    'seed': 0,
}
WORDS = ('the a red blue green small large cat dog bird house tree river city road car boat stone '
         'light dark old new quick slow runs sits falls rises under over near far left right top bottom '
         'two three four many water fire wind snow rain morning evening market garden window').split()
COLORS = ('red', 'blue', 'green', 'yellow', 'white', 'black')
RGB = {'red': (220, 30, 30), 'blue': (30, 60, 220), 'green': (30, 170, 60), 'yellow': (230, 210, 40),
       'white': (245, 245, 245), 'black': (15, 15, 15)}
SIZES = ((64, 48), (40, 40), (100, 50), (31, 77), (128, 96), (50, 120))  # assorted, none square but one
SO400M = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
              image_size=384, patch_size=14)
TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=48, patch_size=16)


def sentence(rng, n=None):
    words = [rng.choice(WORDS) for _ in range(n or rng.randint(5, 14))]
    return ' '.join(words).capitalize() + '.'


def picture(rng, size, fmt='JPEG'):
    """A background with one coloured box -> (encoded bytes, its colour, the box in pixels)."""
    w, h = size
    color = rng.choice(COLORS)
    im = Image.new('RGB', size, (128, 128, 128))
    x1, y1 = rng.randrange(0, w // 2), rng.randrange(0, h // 2)
    box = (x1, y1, rng.randrange(x1 + 4, w), rng.randrange(y1 + 4, h))
    im.paste(RGB[color], box)
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue(), color, box


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if isinstance(data, (dict, list)):
        data = json.dumps(data, indent=1)
    with open(path, 'wb') as f:
        f.write(data.encode() if isinstance(data, str) else data)
    return path


def write_jsonl(path, records):
    return write(path, ''.join(json.dumps(r) + '\n' for r in records))


def save_picture(rng, path, size=None, fmt='JPEG'):
    data, color, box = picture(rng, size or rng.choice(SIZES), fmt)
    write(path, data)
    return color, box


# -----------------------------------------------------------------------------
# Training data: DCLM text, caption tars, the 665K mix

def dclm_text(root, rng, docs):
    try:
        import zstandard
    except ImportError:  # the reader takes plain .jsonl too
        zstandard = None
        print("zstandard is not installed: the DCLM shards are written as plain .jsonl")
    folder = os.path.join(root, 'data/raw/dclm/global-shard_01_of_10/local-shard_0_of_10')
    for shard in range(2):
        lines = [json.dumps(dict(text=' '.join(sentence(rng) for _ in range(rng.randint(3, 12))),
                                 url=f'https://example.org/{shard}/{i}')) for i in range(docs)]
        data = ('\n'.join(lines) + '\n').encode()
        name = f'shard_{shard:08d}_processed.jsonl'
        if zstandard is not None:
            data, name = zstandard.ZstdCompressor().compress(data), name + '.zst'
        write(os.path.join(folder, name), data)


def caption_tars(root, rng, per_tar):
    for t in range(2):
        path = os.path.join(root, f'data/raw/laion/{t:05d}.tar')
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with tarfile.open(path, 'w') as tar:
            for i in range(per_tar):
                key = f'{t:05d}{i:04d}'
                data, color, _ = picture(rng, rng.choice(SIZES))
                members = {f'{key}.jpg': data, f'{key}.txt': f'A {color} box. {sentence(rng)}'.encode(),
                           f'{key}.json': json.dumps(dict(key=key, status='success')).encode()}
                if t == 0 and i == 0:
                    del members[f'{key}.txt']  # an image without a caption: skipped and counted
                if t == 0 and i == 1:
                    members[f'{key}.jpg'] = data[:40]  # a corrupt JPEG: skipped and counted
                for name, blob in members.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(blob)
                    tar.addfile(info, io.BytesIO(blob))


def turn(human, gpt, first=False):
    return [{'from': 'human', 'value': ('<image>\n' if first else '') + human}, {'from': 'gpt', 'value': gpt}]


def llava_mix(root, rng, n):
    """The 665K mix's entry kinds, each with its image set's folder and file names."""
    images, entries = os.path.join(root, 'data/llava_images'), []
    kinds = (('coco/train2017', '{:012d}.jpg', 'vqa'), ('gqa/images', '{}.jpg', 'vqa'),
             ('ocr_vqa/images', '{}.jpg', 'vqa'), ('textvqa/train_images', '{:016x}.jpg', 'vqa'),
             ('coco/train2017', '{:012d}.jpg', 'refcoco'), ('vg/VG_100K', '{}.jpg', 'vg'),
             ('vg/VG_100K_2', '{}.jpg', 'vg'), (None, None, 'text'))
    for i in range(n):
        folder, name, kind = kinds[i % len(kinds)]
        entry = dict(id=f'rehearsal-{i}')
        if folder:
            entry['image'] = f'{folder}/{name.format(1000 + i)}'
            size = rng.choice(SIZES)
            color, (x1, y1, x2, y2) = save_picture(rng, os.path.join(images, entry['image']), size)
            w, h = size
        if kind == 'vqa':
            turns = turn('What colour is the box?', color, first=True) + turn(sentence(rng), sentence(rng))
        elif kind == 'refcoco':  # fractions of the original image, as LLaVA's RefCOCO turns
            box = f'[{x1 / w:.2f}, {y1 / h:.2f}, {x2 / w:.2f}, {y2 / h:.2f}]'
            turns = turn(f'Please provide the bounding box coordinate of the region this sentence describes: '
                         f'the {color} box.', box, first=True)
        elif kind == 'vg':  # fractions of the image padded to a square (LLaVA's expand2square, centred)
            s = max(w, h)
            dx, dy = (s - w) // 2, (s - h) // 2
            box = f'[{(x1 + dx) / s:.2f}, {(y1 + dy) / s:.2f}, {(x2 + dx) / s:.2f}, {(y2 + dy) / s:.2f}]'
            turns = turn(f'Please provide a short description for this region: {box}', f'A {color} box.',
                         first=True)
            turns += turn(f'Please provide the bounding box coordinate of the region this sentence '
                          f'describes: a {color} box.', box)
        else:
            turns = turn(sentence(rng), sentence(rng)) + turn(sentence(rng), sentence(rng))
        entry['conversations'] = turns
        entries.append(entry)
    entries.append(dict(id='rehearsal-missing', image='coco/train2017/999999999999.jpg',
                        conversations=turn('What is here?', 'Nothing.', first=True)))  # counted, skipped
    write(os.path.join(root, 'data/raw/llava_v1_5_mix665k.json'), entries)


# -----------------------------------------------------------------------------
# Evaluation data: the vision suite as released, ARC-Easy, the text suite's lm-eval tasks

def ten_answers(answer):
    return [dict(answer=answer, answer_confidence='yes', answer_id=k + 1) for k in range(10)]


def vqav2(ev, rng, n):
    questions, annotations = [], []
    for i in range(n):
        image_id = 42 + i
        color, _ = save_picture(rng, os.path.join(ev, f'vqav2/val2014/COCO_val2014_{image_id:012d}.jpg'))
        questions.append(dict(image_id=image_id, question='What colour is the box?',
                              question_id=image_id * 10))
        annotations.append(dict(image_id=image_id, question_id=image_id * 10, answer_type='other',
                                question_type='what color is the', answers=ten_answers(color),
                                multiple_choice_answer=color))
    write(os.path.join(ev, 'vqav2/v2_OpenEnded_mscoco_val2014_questions.json'),
          dict(info={}, task_type='Open-Ended', data_type='mscoco', data_subtype='val2014',
               questions=questions))
    write(os.path.join(ev, 'vqav2/v2_mscoco_val2014_annotations.json'),
          dict(info={}, data_type='mscoco', data_subtype='val2014', annotations=annotations))
    return [q['image_id'] for q in questions]


def open_questions(ev, rng, n):
    gqa, vizwiz, textvqa, ocr = {}, [], [], []
    for i in range(n):
        color, _ = save_picture(rng, os.path.join(ev, f'gqa/images/n{161313 + i}.jpg'))
        gqa[f'20{i:07d}'] = dict(imageId=f'n{161313 + i}', question='What colour is the box?', answer=color,
                                 fullAnswer=f'The box is {color}.', types={}, isBalanced=True)
        name = f'VizWiz_val_{i:08d}.jpg'
        color, _ = save_picture(rng, os.path.join(ev, 'vizwiz/val', name))
        vizwiz.append(dict(image=name, question='What colour is this?', answers=ten_answers(color),
                           answer_type='other', answerable=1))
        image_id = f'{0x3a8ae2ef43b901 + i:016x}'
        color, _ = save_picture(rng, os.path.join(ev, f'textvqa/train_images/{image_id}.jpg'))
        textvqa.append(dict(question_id=34602 + i, image_id=image_id, question='What is written here?',
                            answers=[color] * 10, image_classes=[], set_name='val'))
        ocr.append(dict(image_id=image_id, ocr_tokens=[color, 'sale'] if i % 2 else [], ocr_info=[]))
    write(os.path.join(ev, 'gqa/testdev_balanced_questions.json'), gqa)
    write(os.path.join(ev, 'vizwiz/val.json'), vizwiz)
    write(os.path.join(ev, 'textvqa/TextVQA_0.5.1_val.json'),
          dict(dataset_name='textvqa', dataset_version=0.5, data=textvqa))
    write(os.path.join(ev, 'textvqa/TextVQA_Rosetta_OCR_v0.2_val.json'),
          dict(dataset_name='textvqa', data=ocr))


def pope(ev, rng, image_ids):
    for split in ('adversarial', 'popular', 'random'):
        write_jsonl(os.path.join(ev, f'pope/coco_pope_{split}.json'),
                    [dict(question_id=k + 1, image=f'COCO_val2014_{image_id:012d}.jpg',
                          text=f'Is there a {rng.choice(COLORS)} box in the image?',
                          label=rng.choice(('yes', 'no')))
                     for k, image_id in enumerate(image_ids)])


def refer(ev, rng, n):
    """The refer toolkit's refs pickle and instances.json of RefCOCO, RefCOCO+ and RefCOCOg."""
    images, annotations, refs = [], [], []
    for i in range(n):
        image_id, size = 9 + i, rng.choice(SIZES)
        color, (x1, y1, x2, y2) = save_picture(
            rng, os.path.join(ev, f'refcoco/train2014/COCO_train2014_{image_id:012d}.jpg'), size)
        images.append(dict(id=image_id, width=size[0], height=size[1],
                           file_name=f'COCO_train2014_{image_id:012d}.jpg'))
        annotations.append(dict(id=100 + i, image_id=image_id, bbox=[x1, y1, x2 - x1, y2 - y1],  # x, y, w, h
                                category_id=1))
        refs.append(dict(ref_id=i, ann_id=100 + i, image_id=image_id, split='val' if i % 4 else 'train',
                         category_id=1, file_name=f'COCO_train2014_{image_id:012d}_{i}.jpg',
                         sentences=[dict(sent_id=2 * i, sent=f'the {color} box', raw=f'The {color} box.',
                                         tokens=['the', color, 'box'])]))
    for dataset, refs_name in (('refcoco', 'refs(unc).p'), ('refcoco+', 'refs(unc).p'),
                               ('refcocog', 'refs(umd).p')):
        write(os.path.join(ev, f'refcoco/{dataset}/{refs_name}'), pickle.dumps(refs, protocol=2))
        write(os.path.join(ev, f'refcoco/{dataset}/instances.json'),
              dict(images=images, annotations=annotations, categories=[dict(id=1, name='box')]))


def ocidref(ev, rng, n):
    expressions = {}
    for i in range(n):
        scene = f'ARID20/table/top/seq{i:02d}/rgb/result_2018-08-20-11-21-{i:02d}.png'
        path = os.path.join(ev, 'ocidref/OCID-dataset', scene)
        color, (x1, y1, x2, y2) = save_picture(rng, path, (640, 480), fmt='PNG')
        expressions[str(i)] = dict(scene_path=scene, sentence=f'the {color} box',
                                   bbox=f'[{x1}, {y1}, {x2}, {y2}]', take_id=i)
    write(os.path.join(ev, 'ocidref/val_expressions.json'), expressions)


def arc_records(rng, n, prefix):
    records = []
    for i in range(n):
        labels = ['A', 'B', 'C', 'D']
        texts = [' '.join(rng.choice(WORDS) for _ in range(2)) for _ in labels]
        records.append(dict(id=f'{prefix}_{i}', question=dict(stem=sentence(rng)[:-1] + '?', choices=[
            dict(text=t, label=lab) for t, lab in zip(texts, labels)]), answerKey=rng.choice(labels)))
    return records


def lm_eval_docs(rng, task, n):
    """n documents of an lm-eval task in its Hugging Face dataset's fields."""
    docs = []
    for i in range(n):
        if task == 'hellaswag':
            docs.append(dict(ind=i, activity_label='Cooking', ctx_a=sentence(rng), ctx_b='then they',
                             ctx='', endings=[sentence(rng, 4) for _ in range(4)], source_id=f'x{i}',
                             split='val', split_type='indomain', label=str(rng.randrange(4))))
        elif task in ('arc_easy', 'arc_challenge'):
            record = arc_records(rng, 1, f'{task}{i}')[0]
            question = record['question']
            docs.append(dict(id=record['id'], question=question['stem'], answerKey=record['answerKey'],
                             choices=dict(text=[c['text'] for c in question['choices']],
                                          label=[c['label'] for c in question['choices']])))
        elif task == 'copa':
            docs.append(dict(premise=sentence(rng), choice1=sentence(rng, 4), choice2=sentence(rng, 4),
                             question=rng.choice(('cause', 'effect')), idx=i, label=rng.randrange(2)))
        elif task == 'winogrande':
            docs.append(dict(sentence=f'The {rng.choice(WORDS)} sat by the _ {sentence(rng, 3).lower()}',
                             option1=rng.choice(WORDS), option2=rng.choice(WORDS), answer=rng.choice('12')))
        elif task == 'boolq':
            docs.append(dict(question=sentence(rng, 6)[:-1].lower(), passage=sentence(rng),
                             idx=i, label=rng.randrange(2)))
    return docs


LM_EVAL_YAML = {'hellaswag': 'hellaswag/hellaswag.yaml', 'arc_easy': 'arc/arc_easy.yaml',
                'arc_challenge': 'arc/arc_challenge.yaml', 'copa': 'super_glue/copa/default.yaml',
                'winogrande': 'winogrande/default.yaml', 'boolq': 'super_glue/boolq/default.yaml'}


def lm_eval_tasks(root, rng, n):
    """data/lm_eval/TASK.yaml: lm-eval's own task config (included from the installed package), its
    dataset replaced by local JSONL files. Without lm-eval: nothing (the rehearsal skips the text suite)."""
    try:
        import lm_eval
    except ImportError:
        print("lm-eval is not installed: no text-suite tasks (the rehearsal's eval.py skips text_suite)")
        return
    tasks_dir = os.path.join(os.path.dirname(lm_eval.__file__), 'tasks')
    folder = os.path.join(root, 'data/lm_eval')
    for task, yaml in LM_EVAL_YAML.items():
        files = {split: write_jsonl(os.path.abspath(os.path.join(folder, f'{task}_{split}.jsonl')),
                                    lm_eval_docs(rng, task, n))
                 for split in ('train', 'validation', 'test')}
        lines = [f'include: {os.path.join(tasks_dir, yaml)}', f'task: {task}', 'dataset_path: json',
                 'dataset_name: null', 'dataset_kwargs:', '  data_files:']
        lines += [f'    {split}: {path}' for split, path in files.items()]
        write(os.path.join(folder, f'{task}.yaml'), '\n'.join(lines) + '\n')


# -----------------------------------------------------------------------------
# The GPT-NeoX-style tokenizer and the vision encoder

def neox_style_tokenizer(path, texts, vocab_size=1200):
    """Train a small BPE on texts, configured as GPT-NeoX-20B's tokenizer.json is (NFC, byte-level pre-
    tokenizer and decoder, <|endoftext|> and <|padding|>, the 23 added runs of 2-24 spaces), and save it."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers import trainers
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=['<|endoftext|>', '<|padding|>'],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok.add_tokens([AddedToken(' ' * n, normalized=True) for n in range(24, 1, -1)])
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tok.save(str(path))
    return str(path)


def neox_tokenizer(root, rng):
    try:
        import tokenizers  # noqa: F401  (installed with transformers)
    except ImportError:
        print("HF tokenizers is not installed: no NeoX-style file (the rehearsal skips the DCLM-1B route)")
        return
    texts = [sentence(rng) for _ in range(2000)] + [' '.join(WORDS)] * 10
    neox_style_tokenizer(os.path.join(root, 'weights/DCLM-1B/tokenizer.json'), texts, vocab_size=600)


def siglip(root, small):
    out = os.path.join(root, 'weights/siglip-so400m-patch14-384')
    shape = TINY if small else SO400M
    try:
        import torch
        from transformers import SiglipVisionConfig, SiglipVisionModel
    except ImportError:  # the project's own writer, the same layout (SiglipModel keys, config.json)
        print("transformers is not installed: the SigLIP checkpoint is written by vision.save_siglip")
        return siglip_without_transformers(out, small)
    torch.manual_seed(0)
    config = SiglipVisionConfig(**shape, hidden_act='gelu_pytorch_tanh', layer_norm_eps=1e-6)
    SiglipVisionModel(config).save_pretrained(out, safe_serialization=True)


def siglip_without_transformers(out, small):
    import torch
    from tower import SiglipModel, TextConfig
    from vision import SiglipConfig, save_siglip
    s = TINY if small else SO400M
    vision = SiglipConfig(s['image_size'], s['patch_size'], s['hidden_size'], s['num_hidden_layers'],
                          s['num_attention_heads'], s['intermediate_size'])
    torch.manual_seed(0)
    save_siglip(SiglipModel(vision, TextConfig()), out)


def main(argv=None):
    settings = parse(DEFAULTS, argv)
    root, small = settings['root'], settings['small']
    rng = random.Random(settings['seed'])
    n = 8 if small else 24
    dclm_text(root, rng, docs=1500 if small else 3000)  # 0.5 % of the documents: the val split
    caption_tars(root, rng, per_tar=40 if small else 200)
    llava_mix(root, rng, 48 if small else 160)
    ev = os.path.join(root, 'data/eval')
    image_ids = vqav2(ev, rng, n)
    open_questions(ev, rng, n)
    pope(ev, rng, image_ids)
    refer(ev, rng, n)
    ocidref(ev, rng, n)
    write_jsonl(os.path.join(root, 'data/arc/ARC-Easy-Test.jsonl'), arc_records(rng, 4 * n, 'Mercury'))
    lm_eval_tasks(root, rng, 12)
    siglip(root, small)
    neox_tokenizer(root, rng)
    print(f"rehearsal data in {root}: {'small' if small else 'full'} shapes")


if __name__ == '__main__':
    main()
