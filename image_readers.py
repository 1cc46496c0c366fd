"""
The image sources' readers: webdataset / img2dataset tars, LLaVA-Pretrain JSON, captions.jsonl folders and
LLaVA instruction JSON (llava_v1_5_mix665k.json). prepare_data.py runs one reader per job
(read_image_source); each yields (source id, image, text) and notes in the job's stats what it could not
use, by reason: the reasons below are the manifest's `skipped`, `shortened` and `boxes` keys.

Boxes in the 665K mix are text "[x1, y1, x2, y2]", fractions with 2 decimals. Its Visual Genome samples
(images under vg/) give them as fractions of the image padded to a square, as LLaVA's expand2square pads
it (LLaVA issues #606 and #623); this project resizes without padding, so llava_samples converts them to
fractions of the image itself, the convention of its RefCOCO samples and of evaluation (docs/design.md).
"""
import json
import os
import posixpath
import re
import tarfile

from PIL import Image

from tasks import parse_box

IMAGE_EXTENSIONS = ('jpg', 'jpeg', 'png', 'webp')
# samples dropped, by reason (truncated_tar counts files cut short: what followed the cut is lost)
IMAGE_SKIPS = ('missing_image', 'bad_image', 'unsupported_extension', 'missing_caption', 'empty_caption',
               'bad_entry', 'bad_json', 'bad_utf8', 'bad_conversation', 'no_answer', 'question_too_long',
               'truncated_tar', 'image_outside_root', 'image_in_text_only', 'vg_box_dropped')
# samples kept, but shortened to fit max_tokens (or, for a last question without an answer, dropped)
IMAGE_CUTS = ('caption_truncated', 'conversation_cut', 'conversation_truncated',
              'unanswered_question_dropped')
# Visual Genome boxes, one count each: converted (and of those, clamped to [0, 1]), left as they were
# because they do not parse, or left as they were by --vg_boxes=keep
BOX_COUNTS = ('vg_box_converted', 'vg_box_clamped', 'vg_box_unparsed', 'vg_box_kept')
MAX_ERRORS = 20  # example messages kept per shard


def note(stats, reason, message=None):
    stats['counts'][reason] += 1
    if message and len(stats['errors']) < MAX_ERRORS:
        stats['errors'].append(message)


def image_path(root, image, stats, where):
    """root/image, or None (noted) for a path that would leave root: absolute, or with a '..' part."""
    if os.path.isabs(image) or '..' in image.replace(os.sep, '/').split('/'):
        note(stats, 'image_outside_root', f"{where}: image path {image} is outside the image root {root}")
        return None
    return os.path.join(root, image)


# -----------------------------------------------------------------------------
# Image sources: each reader yields (source id, image, text) with the image a path, bytes or None
# (text-only) and the text a caption or a list of chat turns; what it cannot use it notes and skips

def tar_samples(path, stats):
    """A webdataset / img2dataset tar: KEY.jpg|jpeg|png|webp + KEY.txt (+ KEY.json). The members of a
    sample are consecutive and share the key (the member name up to the first dot of its file name)."""
    name = os.path.basename(path)

    def sample(key, members, unsupported):
        source = f"{name}/{key}"
        image = next((members[ext] for ext in IMAGE_EXTENSIONS if ext in members), None)
        if image is None:
            unread = f" ({', '.join(unsupported)} is not read)" if unsupported else ''
            note(stats, 'unsupported_extension' if unsupported else 'missing_image',
                 f"{path}: {key}: no image member{unread}")
            return
        if 'txt' not in members:
            note(stats, 'missing_caption', f"{path}: {key}: no .txt caption member")
            return
        try:
            yield source, image, members['txt'].decode('utf-8')
        except UnicodeDecodeError:
            note(stats, 'bad_utf8', f"{path}: {key}.txt is not UTF-8")

    key, members, unsupported, truncated = None, {}, [], False
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                folder, base = posixpath.split(member.name)
                stem, _, ext = base.partition('.')
                if posixpath.join(folder, stem) != key:
                    if key is not None:
                        yield from sample(key, members, unsupported)
                    key, members, unsupported = posixpath.join(folder, stem), {}, []
                ext = ext.lower()
                if ext in IMAGE_EXTENSIONS or ext in ('txt', 'json'):
                    members[ext] = tar.extractfile(member).read()
                else:
                    unsupported.append(base)
    except (tarfile.TarError, EOFError, OSError) as e:
        where = f"cut short after member {key!r}" if key else "not a readable tar"
        note(stats, 'truncated_tar', f"{path}: {where} ({type(e).__name__}: {e})")
        truncated = True
    # after a cut, the sample being read counts only if it was already whole
    complete = 'txt' in members and any(ext in members for ext in IMAGE_EXTENSIONS)
    if key is not None and (complete or not truncated):
        yield from sample(key, members, unsupported)


def pretrain_samples(entries, root, stats, where):
    """LLaVA-Pretrain (blip_laion_cc_sbu_558k.json): the caption is the gpt turn; the human prompt is
    dropped."""
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get('image'), str):
            note(stats, 'bad_entry', f"{where(n)}: no 'image' path")
            continue
        turns = entry.get('conversations') if isinstance(entry.get('conversations'), list) else []
        caption = next((t.get('value') for t in turns if isinstance(t, dict) and t.get('from') == 'gpt'),
                       None)
        source = str(entry.get('id', entry['image']))
        if not isinstance(caption, str):
            note(stats, 'missing_caption', f"{where(n)} ({source}): no gpt turn with the caption")
            continue
        path = image_path(root, entry['image'], stats, f"{where(n)} ({source})")
        if path is not None:
            yield source, path, caption


def folder_samples(lines, root, stats, where):
    """captions.jsonl lines {"image": path relative to its folder, "caption": text}."""
    for n, line in enumerate(lines):
        try:
            record = json.loads(line.decode('utf-8-sig'))  # a byte order mark starts some files
        except UnicodeDecodeError:
            note(stats, 'bad_utf8', f"{where(n)}: not UTF-8")
            continue
        except json.JSONDecodeError as e:
            note(stats, 'bad_json', f"{where(n)}: {e}")
            continue
        if not isinstance(record, dict) or not isinstance(record.get('image'), str):
            note(stats, 'bad_entry', f"{where(n)}: no 'image' path")
            continue
        if not isinstance(record.get('caption'), str):
            note(stats, 'missing_caption', f"{where(n)} ({record['image']}): no 'caption'")
            continue
        path = image_path(root, record['image'], stats, f"{where(n)} ({record['image']})")
        if path is not None:
            yield record['image'], path, record['caption']


# -----------------------------------------------------------------------------
# The 665K mix's Visual Genome boxes: from fractions of the padded square to fractions of the image

# A bracketed group holding a digit: a box, or what was meant as one (counted when it does not parse)
BOX_TEXT = re.compile(r'\[[^\[\]]*\d[^\[\]]*\]')
VG_BOX_MODES = ('convert', 'drop', 'keep')  # --vg_boxes


def is_visual_genome(image):
    """The 665K mix keeps its Visual Genome images under vg/ (vg/VG_100K, vg/VG_100K_2); its other sets
    are coco/train2017, gqa/images, ocr_vqa/images and textvqa/train_images."""
    return posixpath.normpath(image).startswith('vg/')


def stored_size(path):
    """(width, height) from the header, EXIF orientation not applied: LLaVA padded the image as PIL opens
    it. None when it cannot be read; the sample is then skipped, and counted, when its pixels are read."""
    try:
        with Image.open(path) as im:
            return im.size
    except Exception:  # PIL raises many kinds
        return None


def unpad_box(box, width, height):
    """A box in fractions of the image padded to a square side s = max(w, h), as LLaVA's expand2square
    pastes it at ((s - w) // 2, (s - h) // 2), -> fractions of the image: x = (xs * s - (s - w) // 2) / w,
    y likewise. Rounded to 2 decimals, then clamped to [0, 1]; also whether a coordinate was clamped."""
    side = max(width, height)
    offsets, sizes = ((side - width) // 2, (side - height) // 2), (width, height)
    box = [round((c * side - offsets[i % 2]) / sizes[i % 2], 2) for i, c in enumerate(box)]
    inside = [min(1.0, max(0.0, c)) for c in box]  # max(0.0, -0.0) is 0.0: no "-0.0" in the text
    return inside, inside != box


def format_box(box):
    return '[' + ', '.join(str(c) for c in box) + ']'  # as the mix writes them: 0.8 and 1.0, not 0.80


def vg_boxes(turns, path, mode, stats, where):
    """The turns of a Visual Genome sample with each box (in questions and answers) converted to
    fractions of the image ('convert'), or left as they are ('keep'); None: the sample is dropped
    ('drop'). Every box is counted; one that tasks.parse_box rejects is left as it is."""
    boxes = sum(len(BOX_TEXT.findall(text)) for _, text in turns)
    if not boxes:
        return turns
    if mode == 'drop':
        note(stats, 'vg_box_dropped')
        return None
    if mode == 'keep':
        for _ in range(boxes):
            note(stats, 'vg_box_kept')
        return turns
    size = stored_size(path)
    if size is None:  # the sample is skipped, and counted, when its pixels are read
        return turns

    def convert(match):
        box = parse_box(match.group())
        if box is None:
            note(stats, 'vg_box_unparsed', f"{where}: {match.group()} is not a box, left as it is")
            return match.group()
        box, clamped = unpad_box(box, *size)
        note(stats, 'vg_box_converted')
        if clamped:
            note(stats, 'vg_box_clamped')
        return format_box(box)

    return [(role, BOX_TEXT.sub(convert, text)) for role, text in turns]


# -----------------------------------------------------------------------------
# LLaVA instruction data (the 665K mix), and the reader a job runs

LLAVA_ROLES = {'human': 'user', 'gpt': 'assistant'}


def llava_turns(conversation):
    """LLaVA turns -> [(role, text)] for chat_tokens with <image> and the newline beside it removed
    (the image goes right after the BOS); None unless the turns alternate human, gpt, human, ..."""
    if not isinstance(conversation, list):
        return None
    turns = []
    for i, turn in enumerate(conversation):
        role = LLAVA_ROLES.get(turn.get('from')) if isinstance(turn, dict) else None
        text = turn.get('value') if isinstance(turn, dict) else None
        if role != ('user', 'assistant')[i % 2] or not isinstance(text, str):
            return None
        turns.append((role, text.replace('<image>\n', '').replace('\n<image>', '').replace('<image>', '')))
    return turns


def llava_samples(entries, root, stats, where, vg_mode):
    """LLaVA instruction data (llava_v1_5_mix665k.json): {"id", "image" (optional), "conversations"};
    vg_mode: what becomes of the boxes of its Visual Genome samples (vg_boxes)."""
    for n, entry in enumerate(entries):
        image = entry.get('image') if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or not (image is None or isinstance(image, str)):
            note(stats, 'bad_entry', f"{where(n)}: not a sample with an optional 'image' path")
            continue
        source = str(entry.get('id', image or where(n)))
        turns = llava_turns(entry.get('conversations'))
        if turns is None:
            note(stats, 'bad_conversation',
                 f"{where(n)} ({source}): conversations must alternate human and gpt turns")
            continue
        if image is None and any('<image>' in turn['value'] for turn in entry['conversations']):
            note(stats, 'image_in_text_only', f"{where(n)} ({source}): <image> in a conversation without "
                                              f"an image")
            continue
        path = image_path(root, image, stats, f"{where(n)} ({source})") if image else None
        if image is not None and path is None:
            continue
        if image is not None and is_visual_genome(image):
            turns = vg_boxes(turns, path, vg_mode, stats, f"{where(n)} ({source})")
        if turns is not None:
            yield source, path, turns


def read_image_source(job, stats):
    if job['reader'] == 'tar':
        return tar_samples(job['path'], stats)
    where = lambda n: f"{job['path']}: entry {job['first'] + n}"
    if job['reader'] == 'llava':
        return llava_samples(job['entries'], job['root'], stats, where, job['vg_boxes'])
    readers = dict(pretrain=pretrain_samples, folder=folder_samples)
    return readers[job['reader']](job['entries'], job['root'], stats, where)
