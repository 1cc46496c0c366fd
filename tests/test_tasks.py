"""tasks.py: each evaluation dataset read from tiny files in its authors' released layout, and each metric
against cases taken from its official scoring rules."""
import json
import os
import pickle

import pytest

import tasks
from tokenizer import VQA_INSTRUCTION


def write(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(obj if isinstance(obj, str) else json.dumps(obj))
    return str(path)


def touch(folder, *names):
    os.makedirs(folder, exist_ok=True)
    for name in names:
        open(os.path.join(folder, name), 'wb').close()
    return str(folder)


# -----------------------------------------------------------------------------
# GQA: vlm-evaluation's normalisation of the prediction, the released answer as it is

@pytest.mark.parametrize('prediction, answer, right', [
    ('yes', 'yes', True), ('Yes.', 'yes', True), ('LEFT', 'left', True), ("the man's", 'the mans', True),
    ('t-shirt', 'tshirt', True),
    ('t-shirt', 't-shirt', False),  # the released answer keeps its hyphen, the prediction loses it
    ('a cat', 'cat', False),  # no article removal, unlike VQA
    ('two', '2', False), ('no', 'yes', False),
])
def test_gqa_exact_match_after_lowercase_and_punctuation_strip(prediction, answer, right):
    assert tasks.gqa_correct(prediction, answer) is right


def test_gqa_reader_and_score(tmp_path):
    questions = {'201307251': dict(imageId='n161313', question='Is it overcast?', answer='no',
                                   fullAnswer='No.'),
                 '20515026': dict(imageId='n235859', question='Who is wearing a shirt?', answer='girl'),
                 '20515027': dict(imageId='n999999', question='What is it?', answer='dog'),  # no image
                 '20515028': dict(imageId='n161313', question='Broken?')}  # no answer
    path = write(tmp_path / 'testdev_balanced_questions.json', questions)
    images = touch(tmp_path / 'images', 'n161313.jpg', 'n235859.jpg')
    items, problems = tasks.load_gqa(path, images)
    assert [it['question_id'] for it in items] == ['201307251', '20515026']
    assert items[0]['prompt'] == f"Is it overcast?\n{VQA_INSTRUCTION}"
    assert items[0]['image'] == os.path.join(images, 'n161313.jpg')
    assert len(problems) == 2 and 'n999999.jpg' in problems[0] and '20515028' in problems[1]
    metrics = tasks.score_gqa(items, {'201307251': 'No.', '20515026': 'boy'})
    assert metrics == dict(acc=0.5, chance=0.0, n=2)


# -----------------------------------------------------------------------------
# VizWiz: VQA soft accuracy on its ten answers, 'unanswerable' an answer like any other

def test_vizwiz_reader_prompt_and_unanswerable(tmp_path):
    def record(image, question, answers):
        return dict(image=image, question=question, answer_type='other',
                    answerable=int(answers[0] != 'unanswerable'),
                    answers=[dict(answer=a, answer_confidence='yes') for a in answers])
    path = write(tmp_path / 'val.json', [
        record('VizWiz_val_00000000.jpg', 'What is this?', ['unanswerable'] * 10),
        record('VizWiz_val_00000001.jpg', 'What colour?', ['unanswerable'] * 3 + ['blue'] * 7),
        record('VizWiz_val_00000002.jpg', 'Missing image?', ['red'] * 10),
        dict(image='VizWiz_val_00000003.jpg', question='No answers?', answers=[])])
    images = touch(tmp_path / 'val', *[f'VizWiz_val_{i:08d}.jpg' for i in (0, 1, 3)])
    items, problems = tasks.load_vizwiz(path, images)
    assert [it['question_id'] for it in items] == ['VizWiz_val_00000000.jpg', 'VizWiz_val_00000001.jpg']
    assert items[0]['prompt'] == ("What is this?\nWhen the provided information is insufficient, "
                                  f"respond with 'Unanswerable'.\n{VQA_INSTRUCTION}")
    assert len(problems) == 2
    assert 'VizWiz_val_00000002.jpg' in problems[0] and 'VizWiz_val_00000003' in problems[1]
    assert tasks.vqa_accuracy('Unanswerable', items[0]['answers']) == 1.0
    assert tasks.vqa_accuracy('unanswerable.', items[0]['answers']) == 1.0
    assert tasks.vqa_accuracy('Unanswerable', items[1]['answers']) == pytest.approx(0.9)  # 3 matches
    assert tasks.vqa_accuracy('blue', items[1]['answers']) == 1.0
    metrics = tasks.score_vqa(items, {'VizWiz_val_00000000.jpg': 'unanswerable',
                                      'VizWiz_val_00000001.jpg': 'red'})
    assert metrics['acc'] == 0.5 and metrics['n'] == 2


# -----------------------------------------------------------------------------
# TextVQA: plain and with the Rosetta OCR tokens in the prompt

def test_textvqa_reader_plain_and_with_ocr_tokens(tmp_path):
    data = [dict(question_id=34602, image_id='003a8ae2ef43b901', question='what is the brand of this camera?',
                 answers=['dakota'] * 9 + ['nous les gosses']),
            dict(question_id=34603, image_id='0055b1bc8fa1d0a6', question='what does it say?',
                 answers=['x'] * 10),
            dict(question_id=34604, image_id='00aaaaaaaaaaaaaa', question='not in the OCR file?',
                 answers=['y'] * 10),
            dict(question_id=34605, image_id='003a8ae2ef43b901', question='no answers')]
    questions = write(tmp_path / 'TextVQA_0.5.1_val.json', dict(dataset_name='textvqa', data=data))
    ocr = write(tmp_path / 'TextVQA_Rosetta_OCR_v0.2_val.json', dict(data=[
        dict(image_id='003a8ae2ef43b901', ocr_tokens=['dakota', 'digital'], ocr_info=[]),
        dict(image_id='0055b1bc8fa1d0a6', ocr_tokens=[], ocr_info=[])]))
    images = touch(tmp_path / 'train_images', '003a8ae2ef43b901.jpg', '0055b1bc8fa1d0a6.jpg',
                   '00aaaaaaaaaaaaaa.jpg')
    plain, problems = tasks.load_textvqa(questions, images)
    assert [it['question_id'] for it in plain] == [34602, 34603, 34604] and len(problems) == 1
    assert plain[0]['prompt'] == f"what is the brand of this camera?\n{VQA_INSTRUCTION}"
    with_ocr, problems = tasks.load_textvqa(questions, images, ocr_path=ocr)
    assert with_ocr[0]['prompt'] == ("what is the brand of this camera?\n"
                                     f"Reference OCR token: dakota, digital\n{VQA_INSTRUCTION}")
    assert with_ocr[1]['prompt'] == f"what does it say?\n{VQA_INSTRUCTION}"  # no tokens, no line
    assert [it['question_id'] for it in with_ocr] == [34602, 34603]
    assert any('00aaaaaaaaaaaaaa' in p and 'TextVQA_Rosetta_OCR_v0.2_val.json' in p for p in problems)
    assert tasks.vqa_accuracy('Dakota', plain[0]['answers']) == 1.0
    assert tasks.vqa_accuracy('nous les gosses', plain[0]['answers']) == pytest.approx(0.3)


# -----------------------------------------------------------------------------
# POPE: accuracy and the two AUCs of P(Yes), computed in plain Python

def test_pope_reader(tmp_path):
    lines = [dict(question_id=1, image='COCO_val2014_000000310196.jpg',
                  text='Is there a snowboard in the image?', label='yes'),
             dict(question_id=2, image='COCO_val2014_000000310196.jpg', text='Is there a dog in the image?',
                  label='no'),
             dict(question_id=3, image='COCO_val2014_000000000001.jpg', text='Is there a cat?', label='yes'),
             dict(question_id=4, image='COCO_val2014_000000310196.jpg', text='Maybe?', label='maybe')]
    path = write(tmp_path / 'coco_pope_random.json', '\n'.join(json.dumps(l) for l in lines) + '\n{"broken\n')
    images = touch(tmp_path / 'val2014', 'COCO_val2014_000000310196.jpg')
    items, problems = tasks.load_pope(path, images)
    assert [(it['question_id'], it['label']) for it in items] == [(1, True), (2, False)]
    assert items[0]['prompt'] == f"Is there a snowboard in the image?\n{VQA_INSTRUCTION}"
    assert len(problems) == 3
    assert 'COCO_val2014_000000000001.jpg' in problems[0] and f"{path}:4" in problems[1]
    assert f"{path}:5: not a valid JSON line" in problems[2]


def test_pope_metrics_hand_computed():
    labels, scores = [True, False, True, False], [0.9, 0.8, 0.7, 0.1]
    # ROC: the positive/negative pairs (0.9 > 0.8, 0.9 > 0.1, 0.7 < 0.8, 0.7 > 0.1): 3 of 4
    assert tasks.auc_roc(labels, scores) == 0.75
    # AP: thresholds 0.9 (recall 1/2, precision 1), 0.8 (no recall gained), 0.7 (recall 1, precision 2/3)
    assert tasks.auc_pr(labels, scores) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    m = tasks.pope_metrics(labels, scores)
    assert m['acc'] == 0.75  # 'yes' where P(Yes) >= P(No): right on 0.9, 0.7 and 0.1, wrong on 0.8
    assert m['auc_roc'] == 0.75
    assert tasks.pope_metrics([True, False], [0.5, 0.49])['acc'] == 1.0  # a tie is 'yes', as argmax picks it
    # ties: one threshold takes both tied items; a tied pair counts one half in the ROC
    assert tasks.auc_roc([True, False], [0.5, 0.5]) == 0.5
    assert tasks.auc_pr([True, False], [0.5, 0.5]) == 0.5
    assert tasks.auc_roc([True, True], [0.1, 0.2]) is None and tasks.auc_pr([False], [0.3]) is None


def test_pope_metrics_match_sklearn_on_random_scores():
    metrics = pytest.importorskip('sklearn.metrics')
    import random
    rng = random.Random(0)
    for _ in range(20):
        n = rng.randint(2, 40)
        labels = [rng.random() < 0.5 for _ in range(n)]
        if len(set(labels)) < 2:
            continue
        scores = [round(rng.random(), 1) for _ in range(n)]  # rounded: many ties
        assert tasks.auc_roc(labels, scores) == pytest.approx(metrics.roc_auc_score(labels, scores))
        assert tasks.auc_pr(labels, scores) == pytest.approx(metrics.average_precision_score(labels, scores))


# -----------------------------------------------------------------------------
# boxes: [x1, y1, x2, y2] fractions, right at IoU >= the threshold, anything else wrong

@pytest.mark.parametrize('text, box', [
    ('[0.1, 0.2, 0.3, 0.4]', [0.1, 0.2, 0.3, 0.4]), (' [0, 0, 1, 1] ', [0.0, 0.0, 1.0, 1.0]),
    ('the box is [0.1, 0.2, 0.3, 0.4]', None), ('[0.1, 0.2, 0.3]', None), ('0.1, 0.2, 0.3, 0.4', None),
    ('[0.1, 0.2, 1.3, 0.4]', None), ('[-0.1, 0.2, 0.3, 0.4]', None),  # outside the image
    ('[0.3, 0.2, 0.3, 0.4]', None), ('[0.1, 0.5, 0.3, 0.4]', None),  # x1 >= x2, y1 >= y2
    ('[0.1, 0.2, 0.3, "0.4"]', None), ('[True, 0.2, 0.3, 0.4]', None), ('', None), ('[[[[', None),
])
def test_parse_box(text, box):
    assert tasks.parse_box(text) == box


def test_iou_at_the_half_border():
    truth = [0.0, 0.0, 1.0, 1.0]
    assert tasks.box_iou([0.0, 0.0, 0.5, 1.0], truth) == 0.5
    assert tasks.box_correct('[0, 0, 0.5, 1]', truth, 0.5)  # IoU exactly 0.5 counts
    assert not tasks.box_correct('[0, 0, 0.49, 1]', truth, 0.5)
    assert tasks.box_correct('[0, 0, 0.25, 1]', truth, 0.25)
    assert not tasks.box_correct('[0, 0, 0.24, 1]', truth, 0.25)
    assert not tasks.box_correct('[0, 0, 0.5, 1.01]', truth, 0.5)  # outside the image
    assert not tasks.box_correct('a box', truth, 0.5)
    assert tasks.box_iou([0.0, 0.0, 0.2, 0.2], [0.5, 0.5, 1.0, 1.0]) == 0.0
    metrics = tasks.score_boxes([dict(question_id=i, box=truth) for i in range(4)],
                                {0: '[0, 0, 0.5, 1]', 1: 'nonsense', 2: '[0, 0, 0.4, 1]'}, 0.5)
    assert metrics['acc'] == pytest.approx(1 / 3) and metrics['n'] == 3 and metrics['invalid'] == 1
    assert metrics['prompt'] == tasks.GROUNDING_PROMPT and metrics['iou_threshold'] == 0.5


def test_normalized_box_two_decimals_inside_the_image():
    assert tasks.normalized_box(64, 48, 320, 240, 640, 480) == [0.1, 0.1, 0.5, 0.5]
    assert tasks.normalized_box(1, 1, 214, 101, 640, 427) == [0.0, 0.0, 0.33, 0.24]
    assert tasks.normalized_box(0, 0, 641, 10, 640, 480) is None
    assert tasks.normalized_box(5, 0, 5, 10, 640, 480) is None


# -----------------------------------------------------------------------------
# RefCOCO family (the refer toolkit's files) and OCID-Ref

def refer_files(folder, refs_name='refs(unc).p', as_json=False):
    refs = [dict(ref_id=0, ann_id=10, image_id=1, split='val', category_id=1, file_name='x.jpg',
                 sentences=[dict(sent_id=0, sent='left man', raw='Left man', tokens=['left', 'man']),
                            dict(sent_id=1, sent='man on left', raw='man on left', tokens=[])]),
            dict(ref_id=1, ann_id=11, image_id=1, split='testA', sentences=[dict(sent_id=2, sent='other')]),
            dict(ref_id=2, ann_id=12, image_id=2, split='val', sentences=[dict(sent_id=3, sent='too wide')]),
            dict(ref_id=3, ann_id=13, image_id=3, split='val',
                 sentences=[dict(sent_id=4, sent='no image file')])]
    instances = dict(images=[dict(id=1, width=640, height=480, file_name='COCO_train2014_000000000001.jpg'),
                             dict(id=2, width=100, height=100), dict(id=3, width=100, height=100)],
                     annotations=[dict(id=10, image_id=1, bbox=[64, 48, 256, 192]),
                                  dict(id=11, image_id=1, bbox=[0, 0, 10, 10]),
                                  dict(id=12, image_id=2, bbox=[50, 0, 60, 10]),  # ends at x=110 > 100
                                  dict(id=13, image_id=3, bbox=[0, 0, 10, 10])])
    os.makedirs(folder, exist_ok=True)
    if as_json:
        refs_path = write(folder / 'refs.json', refs)
    else:
        refs_path = str(folder / refs_name)
        with open(refs_path, 'wb') as f:
            pickle.dump(refs, f, protocol=2)
    return refs_path, write(folder / 'instances.json', instances)


@pytest.mark.parametrize('as_json', [False, True])
def test_refcoco_reader_val_sentences_and_boxes(tmp_path, as_json):
    refs, instances = refer_files(tmp_path / 'refcoco', as_json=as_json)
    images = touch(tmp_path / 'train2014', 'COCO_train2014_000000000001.jpg',
                   'COCO_train2014_000000000002.jpg')
    items, problems = tasks.load_refcoco(refs, instances, images)
    assert [it['question_id'] for it in items] == ['0-0', '0-1']  # val only
    assert items[0]['box'] == [0.1, 0.1, 0.5, 0.5]
    assert items[0]['prompt'] == ('Please provide the bounding box coordinate of the region this sentence '
                                  'describes: "left man"')
    assert len(problems) == 2 and 'ref 2' in problems[0] and 'does not fit' in problems[0]
    assert 'COCO_train2014_000000000003.jpg' in problems[1]


def test_refs_pickle_that_names_a_class_is_refused(tmp_path):
    import collections
    path = tmp_path / 'refs(unc).p'
    with open(path, 'wb') as f:
        pickle.dump([collections.OrderedDict(ref_id=0)], f, protocol=2)
    with pytest.raises(tasks.EvalError, match=r"refs\(unc\)\.p: not a readable refs pickle .*collections"):
        tasks.load_refs(str(path))


def test_ocidref_reader(tmp_path):
    expressions = {'0': dict(scene_path='ARID20/table/top/seq08/rgb/result_2018-08-20-11-21-11.png',
                             sentence='the red apple', bbox='[64, 48, 320, 240]', take_id=3),
                   '1': dict(scene_path='ARID20/table/top/seq08/rgb/result_2018-08-20-11-21-11.png',
                             sentence='too wide', bbox='[600, 0, 700, 10]', take_id=3),
                   '2': dict(scene_path='missing.png', sentence='no image', bbox='[0, 0, 10, 10]', take_id=3)}
    path = write(tmp_path / 'val_expressions.json', expressions)
    root = tmp_path / 'OCID-dataset'
    touch(root / 'ARID20/table/top/seq08/rgb', 'result_2018-08-20-11-21-11.png')
    items, problems = tasks.load_ocidref(path, str(root))
    assert [it['question_id'] for it in items] == ['0'] and items[0]['box'] == [0.1, 0.1, 0.5, 0.5]
    assert len(problems) == 2 and 'expression 1' in problems[0] and 'missing.png' in problems[1]
    assert tasks.load_ocidref(path)[0][0]['image'] == ''  # scoring without images


def test_limit_is_a_seeded_subset_for_every_reader(tmp_path):
    questions = {str(i): dict(imageId='a', question=f'q{i}', answer='x') for i in range(30)}
    path = write(tmp_path / 'testdev_balanced_questions.json', questions)
    first = [it['question_id'] for it in tasks.load_gqa(path, None, 8, 0)[0]]
    assert len(first) == 8 and first == [it['question_id'] for it in tasks.load_gqa(path, None, 8, 0)[0]]
    assert first != [it['question_id'] for it in tasks.load_gqa(path, None, 8, 1)[0]]
