"""Image-caption and instruction shards: every source format round-trips through ImageShards, bad
input is skipped and counted, re-runs are byte-identical, the reader rejects damaged shards, and the
shapes world runs through the whole pipeline."""
import hashlib
import io
import json
import os
import tarfile

import numpy as np
import pytest
from PIL import Image

import vision
from prepare_data import main, prepare_images, prepare_shapes
from shards import ImageShards, read_manifest, read_token_shard
from tokenizer import TOKENIZERS, chat_tokens, get_tokenizer

EOT, IMAGE = TOKENIZERS['bytes']['eot_id'], TOKENIZERS['bytes']['image_id']
SIZE, POSITIONS = 16, 4  # a 16 px encoder input with 4 patches: no known encoder, so positions are given
SETTINGS = dict(tokenizer='bytes', image_size=SIZE, image_positions=POSITIONS, val_fraction=0.0, workers=1)


def image_bytes(seed, fmt='PNG', size=(24, 20)):
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt)
    return buf.getvalue()


def corrupt_jpeg():
    data = image_bytes(99, 'JPEG')
    return data[:20] + b'\x00' * 40 + data[60:len(data) // 3]  # a JPEG header, then garbage and a cut


def write_tar(path, members):
    with tarfile.open(path, 'w') as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def all_samples(folder):
    samples = {}
    for split in ('train', 'val'):
        shards = ImageShards(folder, split)
        samples.update({s['source']: s for s in (shards[i] for i in range(len(shards)))})
    return samples


def text_of(tokens, tokenizer='bytes'):
    special = TOKENIZERS[tokenizer]['eot_id']  # the specials come after every ordinary token
    return get_tokenizer(tokenizer).decode([int(t) for t in tokens if t < special])


def check_caption_sample(sample, caption, image):
    tokens, mask = sample['tokens'].tolist(), sample['loss_mask'].tolist()
    assert tokens[:1 + POSITIONS] == [EOT] + [IMAGE] * POSITIONS and tokens[-1] == EOT
    assert text_of(tokens) == caption
    # trained on the caption and its EOT only
    assert mask == [0] * (1 + POSITIONS) + [1] * (len(tokens) - 1 - POSITIONS)
    np.testing.assert_array_equal(sample['image'], vision.preprocess(image, SIZE))


def test_webdataset_tar_with_good_and_bad_members(tmp_path, capsys):
    good = {f'{i:04d}': (image_bytes(i, fmt), f"caption number {i}")
            for i, fmt in enumerate(['PNG', 'JPEG', 'WEBP'])}
    members = []
    for key, (data, caption) in good.items():
        ext = {b'\x89P': 'png', b'\xff\xd8': 'jpg', b'RI': 'webp'}[data[:2]]
        members += [(f'{key}.{ext}', data), (f'{key}.txt', caption.encode()),
                    (f'{key}.json', b'{"url": "x"}')]
    members += [('0100.jpg', corrupt_jpeg()), ('0100.txt', b'a corrupt image'),
                ('0101.png', image_bytes(101)),                                # no caption
                ('0102.bmp', image_bytes(102, 'BMP')), ('0102.txt', b'bmp'),   # unsupported extension
                ('0103.png', image_bytes(103)), ('0103.txt', b'  \n'),         # empty caption
                ('0104.png', image_bytes(104)), ('0104.txt', b'x' * 50)]       # too long: cut
    write_tar(tmp_path / 'part-00000.tar', members)
    write_tar(tmp_path / 'part-00001.tar', [('0200.png', image_bytes(200)), ('0200.txt', b'second tar')])
    out = tmp_path / 'out'
    manifest = prepare_images('captions', [str(tmp_path / 'part-*.tar')], str(out), max_tokens=30, **SETTINGS)

    samples = all_samples(out)
    assert sorted(samples) == ['part-00000.tar/0000', 'part-00000.tar/0001', 'part-00000.tar/0002',
                               'part-00000.tar/0104', 'part-00001.tar/0200']
    for key, (data, caption) in good.items():
        check_caption_sample(samples[f'part-00000.tar/{key}'], caption, data)
    check_caption_sample(samples['part-00001.tar/0200'], 'second tar', image_bytes(200))
    long = samples['part-00000.tar/0104']
    assert len(long['tokens']) == 30 and text_of(long['tokens']) == 'x' * (30 - POSITIONS - 2)
    assert long['tokens'][-1] == EOT and long['loss_mask'][-1] == 1

    skipped = {r: n for r, n in manifest['skipped'].items() if n}
    assert skipped == {'bad_image': 1, 'missing_caption': 1, 'unsupported_extension': 1, 'empty_caption': 1}
    assert manifest['shortened']['caption_truncated'] == 1
    assert manifest['skipped_by_source'] == {os.path.join(str(tmp_path), 'part-00000.tar'): dict(
        skipped, caption_truncated=1)}
    assert manifest['num_samples'] == {'train': 5, 'val': 0} and manifest['image_positions'] == POSITIONS
    assert [s['name'] for s in manifest['shards']['train']] == ['train_000000', 'train_000001']  # one per tar
    printed = capsys.readouterr().out
    assert 'skipped:' in printed and 'part-00000.tar: 1 bad_image' in printed and '0100' in printed


def test_truncated_tar_keeps_the_samples_before_the_cut(tmp_path):
    members = [m for i in range(4)
               for m in [(f'{i:04d}.png', image_bytes(i)), (f'{i:04d}.txt', f'cap {i}'.encode())]]
    write_tar(tmp_path / 'whole.tar', members)
    with tarfile.open(tmp_path / 'whole.tar') as tar:
        third = tar.getmember('0002.png')
    data = (tmp_path / 'whole.tar').read_bytes()
    (tmp_path / 'cut.tar').write_bytes(data[:third.offset_data + third.size // 2])
    manifest = prepare_images('captions', [str(tmp_path / 'cut.tar')], str(tmp_path / 'out'), **SETTINGS)
    samples = all_samples(tmp_path / 'out')
    assert sorted(samples) == ['cut.tar/0000', 'cut.tar/0001']
    check_caption_sample(samples['cut.tar/0001'], 'cap 1', image_bytes(1))
    assert {r: n for r, n in manifest['skipped'].items() if n} == {'truncated_tar': 1}


def test_llava_pretrain_json(tmp_path, capsys):
    root = tmp_path / 'images'
    (root / '00000').mkdir(parents=True)
    entries = []
    for i in range(5):
        (root / '00000' / f'{i}.jpg').write_bytes(image_bytes(i, 'JPEG'))
        entries.append({'id': f'00000{i}', 'image': f'00000/{i}.jpg', 'conversations': [
            {'from': 'human', 'value': 'Render a clear and concise summary of the photo.\n<image>'},
            {'from': 'gpt', 'value': f'a photo of thing {i}'}]})
    (root / '00000' / 'bad.jpg').write_bytes(corrupt_jpeg())
    turns = entries[0]['conversations']
    entries.append({'id': 'corrupt', 'image': '00000/bad.jpg', 'conversations': turns})
    entries.append({'id': 'missing', 'image': '00000/nowhere.jpg', 'conversations': turns})
    entries.append({'id': 'nocaption', 'image': '00000/0.jpg', 'conversations': turns[:1]})
    (tmp_path / 'blip_laion_cc_sbu_558k.json').write_text(json.dumps(entries))
    manifest = prepare_images('captions', [str(tmp_path / 'blip_laion_cc_sbu_558k.json')],
                              str(tmp_path / 'out'), images=str(root), shard_size=3, **SETTINGS)
    samples = all_samples(tmp_path / 'out')
    assert sorted(samples) == [f'00000{i}' for i in range(5)]
    for i in range(5):
        check_caption_sample(samples[f'00000{i}'], f'a photo of thing {i}', str(root / '00000' / f'{i}.jpg'))
    assert {r: n for r, n in manifest['skipped'].items() if n} == {'bad_image': 1, 'missing_image': 1,
                                                                    'missing_caption': 1}
    assert len(manifest['shards']['train']) == 3  # 8 entries in groups of 3
    printed = capsys.readouterr().out
    assert 'missing: image file' in printed and 'nowhere.jpg' in printed


def write_caption_folder(folder, n=7):
    (folder / 'img').mkdir(parents=True)
    lines = []
    for i in range(n):
        (folder / 'img' / f'{i}.png').write_bytes(image_bytes(i, size=(16 + i, 32)))
        lines.append(json.dumps({'image': f'img/{i}.png', 'caption': f'shape {i} on grey'}))
    return lines


def test_image_folder_with_captions_jsonl_via_the_command_line(tmp_path, capsys):
    folder = tmp_path / 'raw'
    lines = write_caption_folder(folder)
    lines.insert(2, '{"image": "img/0.png", "caption": ')         # bad JSON
    lines.insert(4, json.dumps({'image': 'img/9.png', 'caption': 'gone'}))
    lines.append(json.dumps({'image': 'img/1.png', 'caption': ''}))
    (folder / 'captions.jsonl').write_text('\n'.join(lines) + '\n')
    out = tmp_path / 'out'
    main(['captions', f'--input={folder}', f'--out={out}', '--tokenizer=bytes', f'--image_size={SIZE}',
          f'--image_positions={POSITIONS}', '--val_fraction=0.4', '--shard_size=3', '--workers=2'])
    manifest = read_manifest(str(out), kind='captions')
    samples = all_samples(out)
    assert sorted(samples) == [f'img/{i}.png' for i in range(7)]
    for i in range(7):
        check_caption_sample(samples[f'img/{i}.png'], f'shape {i} on grey', str(folder / 'img' / f'{i}.png'))
    assert {r: n for r, n in manifest['skipped'].items() if n} == {'bad_json': 1, 'missing_image': 1,
                                                                    'empty_caption': 1}
    assert manifest['num_samples']['train'] > 0 and manifest['num_samples']['val'] > 0
    assert manifest['num_tokens']['train'] == ImageShards(str(out)).lengths().sum()
    # the split follows the source id, not the shard boundaries or the number of workers
    other = tmp_path / 'other'
    prepare_images('captions', [str(folder / 'captions.jsonl')], str(other),
                   **dict(SETTINGS, val_fraction=0.4), shard_size=100)
    n_val = manifest['num_samples']['val']
    assert {s['source'] for s in (ImageShards(str(other), 'val')[i] for i in range(n_val))} \
        == {s['source'] for s in (ImageShards(str(out), 'val')[i] for i in range(n_val))}
    assert 'images/s' in capsys.readouterr().out


def test_llava_instruct_conversations(tmp_path, capsys):
    (tmp_path / 'coco').mkdir()
    (tmp_path / 'coco' / 'a.jpg').write_bytes(image_bytes(1, 'JPEG'))
    (tmp_path / 'coco' / 'b.png').write_bytes(image_bytes(2))
    h = lambda text: {'from': 'human', 'value': text}
    g = lambda text: {'from': 'gpt', 'value': text}
    entries = [
        {'id': 'img-start', 'image': 'coco/a.jpg', 'conversations': [h('<image>\nWhat is it?'), g('A cat.'),
                                                                      h('Color?'), g('Black.')]},
        {'id': 'img-end', 'image': 'coco/b.png', 'conversations': [h('Describe it.\n<image>'), g('Noise.')]},
        {'id': 'text-only', 'conversations': [h('Capital of France?'), g('Paris.')]},
        {'id': 'no-answer', 'image': 'coco/a.jpg', 'conversations': [h('<image>\nHello?')]},
        {'id': 'trailing', 'conversations': [h('One?'), g('1'), h('Two?')]},
        {'id': 'long', 'conversations': [h('Q1?'), g('A1.'), h('Q2?'), g('A2.'), h('Q3?'), g('A' * 30)]},
        {'id': 'long-answer', 'conversations': [h('Q?'), g('B' * 80)]},
        {'id': 'long-question', 'conversations': [h('C' * 80), g('no room')]},
        {'id': 'gpt-first', 'conversations': [g('Hi'), h('Hello')]},
        {'id': 'missing', 'image': 'coco/none.jpg', 'conversations': [h('<image>\nWhat?'), g('Nothing.')]},
    ]
    (tmp_path / 'mix.json').write_text(json.dumps(entries))
    manifest = prepare_images('instruct', [str(tmp_path / 'mix.json')], str(tmp_path / 'out'),
                              images=str(tmp_path), max_tokens=80, shard_size=4, **SETTINGS)
    samples = all_samples(tmp_path / 'out')
    enc = get_tokenizer('bytes')
    expected = {
        'img-start': ([('user', 'What is it?'), ('assistant', 'A cat.'), ('user', 'Color?'),
                       ('assistant', 'Black.')], 'coco/a.jpg'),
        'img-end': ([('user', 'Describe it.'), ('assistant', 'Noise.')], 'coco/b.png'),
        'text-only': ([('user', 'Capital of France?'), ('assistant', 'Paris.')], None),
        'trailing': ([('user', 'One?'), ('assistant', '1')], None),
        # cut at a turn
        'long': ([('user', 'Q1?'), ('assistant', 'A1.'), ('user', 'Q2?'), ('assistant', 'A2.')], None),
    }
    assert sorted(samples) == sorted(list(expected) + ['long-answer'])
    for source, (turns, image) in expected.items():
        sample = samples[source]
        tokens, mask = chat_tokens(enc, turns, POSITIONS if image else 0)
        assert sample['tokens'].tolist() == tokens and sample['loss_mask'].tolist() == mask
        if image:
            np.testing.assert_array_equal(sample['image'], vision.preprocess(str(tmp_path / image), SIZE))
        else:
            assert sample['image'] is None
    # an independent look at the first one: <image> gone, the image right after the BOS, loss on answers
    first = samples['img-start']
    assert first['tokens'][:1 + POSITIONS].tolist() == [EOT] + [IMAGE] * POSITIONS
    assert text_of(first['tokens']) == 'User: What is it?\nAssistant: A cat.\nUser: Color?\nAssistant: Black.'
    trained = [int(t) for t, m in zip(first['tokens'], first['loss_mask']) if m]
    assert trained == list(b' A cat.') + [EOT] + list(b' Black.') + [EOT]
    # a first answer too long for max_tokens is hard-cut and still ends with a trained EOT
    cut = samples['long-answer']
    assert len(cut['tokens']) == 80 and cut['tokens'][-1] == EOT and cut['loss_mask'][-1] == 1
    assert text_of(cut['tokens']).startswith('User: Q?\nAssistant: BBB')
    assert {r: n for r, n in manifest['skipped'].items() if n} == {
        'no_answer': 1, 'question_too_long': 1, 'bad_conversation': 1, 'missing_image': 1}
    assert {r: n for r, n in manifest['shortened'].items() if n} == {
        'unanswered_question_dropped': 2, 'conversation_cut': 1, 'conversation_truncated': 1}
    assert manifest['num_images']['train'] == 2 and manifest['kind'] == 'instruct'
    assert 'gpt-first' in capsys.readouterr().out


def grounding(expression):
    return f'Please provide the bounding box coordinate of the region this sentence describes: {expression}.'


def write_665k_boxes(tmp_path):
    """A 665K-style mix with grounding turns: Visual Genome images of 60x30, 30x60 and 60x31 pixels (boxes
    in fractions of the padded square) and a COCO image (RefCOCO: fractions of the image)."""
    for i, (image, size) in enumerate([('vg/VG_100K/wide.png', (60, 30)), ('vg/VG_100K_2/tall.jpg', (30, 60)),
                                       ('vg/VG_100K/odd.png', (60, 31)), ('coco/train2017/c.jpg', (60, 30))]):
        (tmp_path / image).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / image).write_bytes(image_bytes(i, 'JPEG' if image.endswith('jpg') else 'PNG', size))
    h = lambda text: {'from': 'human', 'value': text}
    g = lambda text: {'from': 'gpt', 'value': text}
    entries = [
        {'id': 'vg-wide', 'image': 'vg/VG_100K/wide.png', 'conversations': [
            h('<image>\nPlease provide a short description for this region: [0.5, 0.25, 0.75, 0.5].'),
            g('A red ball.'), h(grounding('a cup')), g('[0.1, 0.3, 0.9, 0.8]')]},
        {'id': 'vg-tall', 'image': 'vg/VG_100K_2/tall.jpg',
         'conversations': [h('<image>\n' + grounding('a dog')), g('[0.3, 0.2, 0.6, 0.9]')]},
        {'id': 'vg-odd', 'image': 'vg/VG_100K/odd.png',
         'conversations': [h('<image>\n' + grounding('a hat')), g('[0.0, 0.5, 1.0, 0.75]')]},
        {'id': 'vg-bad', 'image': 'vg/VG_100K/wide.png',
         'conversations': [h('<image>\n' + grounding('a shoe')), g('[0.7, 0.2, 0.3]')]},
        {'id': 'coco', 'image': 'coco/train2017/c.jpg',
         'conversations': [h('<image>\n' + grounding('a man')), g('[0.61, 0.36, 0.92, 0.83]')]},
    ]
    (tmp_path / 'mix.json').write_text(json.dumps(entries))
    texts = {  # the conversations as text_of reads them back, boxes as they are in the mix
        'vg-wide': 'User: Please provide a short description for this region: [0.5, 0.25, 0.75, 0.5].\n'
                   f'Assistant: A red ball.\nUser: {grounding("a cup")}\nAssistant: [0.1, 0.3, 0.9, 0.8]',
        'vg-tall': f'User: {grounding("a dog")}\nAssistant: [0.3, 0.2, 0.6, 0.9]',
        'vg-odd': f'User: {grounding("a hat")}\nAssistant: [0.0, 0.5, 1.0, 0.75]',
        'vg-bad': f'User: {grounding("a shoe")}\nAssistant: [0.7, 0.2, 0.3]',
        'coco': f'User: {grounding("a man")}\nAssistant: [0.61, 0.36, 0.92, 0.83]',
    }
    return texts


def test_llava_visual_genome_boxes_become_fractions_of_the_image(tmp_path, capsys):
    texts = write_665k_boxes(tmp_path)
    out = tmp_path / 'out'
    manifest = prepare_images('instruct', [str(tmp_path / 'mix.json')], str(out), images=str(tmp_path),
                              max_tokens=400, **SETTINGS)
    samples = {source: text_of(s['tokens']) for source, s in all_samples(out).items()}
    # x = (xs * s - (s - w) // 2) / w, y = (ys * s - (s - h) // 2) / h, by hand:
    # wide, w 60 h 30 s 60: x offset 0, y offset 15, so y = (60 ys - 15) / 30
    #   [0.5, 0.25, 0.75, 0.5] -> [0.5, (15 - 15) / 30, 0.75, (30 - 15) / 30] = [0.5, 0.0, 0.75, 0.5]
    #   [0.1, 0.3, 0.9, 0.8] -> [0.1, (18 - 15) / 30, 0.9, (48 - 15) / 30] = [0.1, 0.1, 0.9, 1.1 -> 1.0]
    # tall, w 30 h 60 s 60: x offset 15, so x = (60 xs - 15) / 30
    #   [0.3, 0.2, 0.6, 0.9] -> [(18 - 15) / 30, 0.2, (36 - 15) / 30, 0.9] = [0.1, 0.2, 0.7, 0.9]
    # odd, w 60 h 31 s 60: y offset (60 - 31) // 2 = 14 (expand2square pastes at whole pixels), not 14.5
    #   [0.0, 0.5, 1.0, 0.75] -> [0.0, (30 - 14) / 31 = 0.516, 1.0, (45 - 14) / 31] = [0.0, 0.52, 1.0, 1.0]
    assert samples == {
        'vg-wide': 'User: Please provide a short description for this region: [0.5, 0.0, 0.75, 0.5].\n'
                   f'Assistant: A red ball.\nUser: {grounding("a cup")}\nAssistant: [0.1, 0.1, 0.9, 1.0]',
        'vg-tall': f'User: {grounding("a dog")}\nAssistant: [0.1, 0.2, 0.7, 0.9]',
        'vg-odd': f'User: {grounding("a hat")}\nAssistant: [0.0, 0.52, 1.0, 1.0]',
        'vg-bad': texts['vg-bad'],  # three numbers: no box, left as it is and counted
        'coco': texts['coco'],      # RefCOCO boxes are fractions of the image already
    }
    # the loss is on the converted answer
    wide = all_samples(out)['vg-wide']
    trained = bytes(int(t) for t, m in zip(wide['tokens'], wide['loss_mask']) if m and t != EOT)
    assert trained == b' A red ball. [0.1, 0.1, 0.9, 1.0]'
    assert manifest['boxes'] == {'vg_box_converted': 4, 'vg_box_clamped': 1, 'vg_box_unparsed': 1,
                                 'vg_box_kept': 0}
    assert not any(manifest['skipped'].values())
    assert manifest['skipped_by_source'] == {str(tmp_path / 'mix.json'): dict(
        vg_box_converted=4, vg_box_clamped=1, vg_box_unparsed=1)}
    printed = capsys.readouterr().out
    assert 'boxes: 4 vg_box_converted, 1 vg_box_clamped, 1 vg_box_unparsed' in printed
    assert '(vg-bad): [0.7, 0.2, 0.3] is not a box' in printed

    # keep, into the same folder: the shards made with another setting are rebuilt, the boxes as they were
    kept = prepare_images('instruct', [str(tmp_path / 'mix.json')], str(out), images=str(tmp_path),
                          max_tokens=400, vg_boxes='keep', **SETTINGS)
    assert {source: text_of(s['tokens']) for source, s in all_samples(out).items()} == texts
    assert {r: n for r, n in kept['boxes'].items() if n} == {'vg_box_kept': 5}


def test_llava_visual_genome_boxes_dropped_on_the_command_line(tmp_path, capsys):
    texts = write_665k_boxes(tmp_path)
    args = ['llava', f"--input={tmp_path / 'mix.json'}", f'--images={tmp_path}', '--tokenizer=bytes',
            f'--image_size={SIZE}', f'--image_positions={POSITIONS}', '--val_fraction=0.0', '--workers=1']
    manifest = main(args + [f"--out={tmp_path / 'out'}", '--vg_boxes=drop'])
    assert {source: text_of(s['tokens']) for source, s in all_samples(tmp_path / 'out').items()} == {
        'coco': texts['coco']}
    assert {r: n for r, n in manifest['skipped'].items() if n} == {'vg_box_dropped': 4}
    assert not any(manifest['boxes'].values())
    assert 'skipped: 4 vg_box_dropped' in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"^error: vg_boxes must be one of convert, drop, keep, got 'pad'$"):
        main(args + [f"--out={tmp_path / 'other'}", '--vg_boxes=pad'])
    assert not (tmp_path / 'other').exists()


def file_states(folder):
    return {name: (hashlib.sha256((folder / name).read_bytes()).hexdigest(),
                   os.stat(folder / name).st_mtime_ns)
            for name in sorted(os.listdir(folder))}


def test_interrupted_run_resumes_byte_identical(tmp_path, capsys):
    folder = tmp_path / 'raw'
    (folder / 'captions.jsonl').write_text('\n'.join(write_caption_folder(folder)) + '\n')
    out = tmp_path / 'out'
    settings = dict(SETTINGS, val_fraction=0.3, shard_size=2)
    first = prepare_images('captions', [str(folder)], str(out), **dict(settings, workers=2))
    before = file_states(out)
    assert len(first['shards']['train']) == 4
    for name in ('train_000001.json', 'train_000001.tokens.npy', 'manifest.json'):
        os.remove(out / name)
    capsys.readouterr()
    second = prepare_images('captions', [str(folder)], str(out), **settings)
    after = file_states(out)
    assert second == first
    assert {n: h for n, (h, _) in after.items()} == {n: h for n, (h, _) in before.items()}
    rewritten = {n for n in after if after[n][1] != before[n][1]}
    assert rewritten == {n for n in after if n.startswith(('train_000001', 'val_000001'))} | {'manifest.json'}
    assert '3 of 4 shards already finished' in capsys.readouterr().out


@pytest.fixture
def small_shards(tmp_path):
    folder = tmp_path / 'raw'
    (folder / 'captions.jsonl').write_text('\n'.join(write_caption_folder(folder)) + '\n')
    out = tmp_path / 'out'
    prepare_images('captions', [str(folder)], str(out), shard_size=3, **SETTINGS)
    return out


def test_reader_random_access_and_lengths(small_shards):
    shards = ImageShards(str(small_shards))
    assert len(shards) == 7
    samples = [shards[i] for i in range(7)]
    assert [s['source'] for s in samples] == [f'img/{i}.png' for i in range(7)]  # file order
    np.testing.assert_array_equal(shards.lengths(), [len(s['tokens']) for s in samples])
    assert shards[-1]['source'] == 'img/6.png' and shards[-7]['source'] == 'img/0.png'
    assert samples[4]['image'].dtype == np.uint8 and samples[4]['image'].shape == (SIZE, SIZE, 3)
    with pytest.raises(IndexError):
        shards[7]
    assert len(ImageShards(str(small_shards), 'val')) == 0


def test_reader_rejects_damaged_shards(small_shards):
    images = small_shards / 'train_000001.images.npy'
    data = images.read_bytes()
    images.write_bytes(data[:-10])
    with pytest.raises(ValueError, match='train_000001.images.npy.*truncated'):
        ImageShards(str(small_shards))
    images.write_bytes(data)

    offsets_path = small_shards / 'train_000002.offsets.npy'
    offsets = np.load(offsets_path)
    np.save(offsets_path, offsets - np.arange(len(offsets)))  # no longer ends at the token count
    with pytest.raises(ValueError, match='train_000002: mismatched shard: offsets.npy'):
        ImageShards(str(small_shards))
    np.save(offsets_path, offsets)

    index_path = small_shards / 'train_000000.image_index.npy'
    np.save(index_path, np.array([0, 1, 3], dtype=np.int32))
    with pytest.raises(ValueError, match='train_000000: mismatched shard: image_index.npy points outside'):
        ImageShards(str(small_shards))
    np.save(index_path, np.arange(3, dtype=np.int32))

    np.save(small_shards / 'train_000000.tokens.npy', np.zeros(5, dtype=np.uint32))
    with pytest.raises(ValueError, match='train_000000.tokens.npy: expected a uint16'):
        ImageShards(str(small_shards))
    os.remove(small_shards / 'train_000000.tokens.npy')
    with pytest.raises(FileNotFoundError, match='train_000000.tokens.npy'):
        ImageShards(str(small_shards))


def test_image_positions_must_match_a_known_encoder(tmp_path):
    with pytest.raises(ValueError, match='image_positions'):
        prepare_images('captions', [str(tmp_path)], str(tmp_path / 'out'), tokenizer='bytes', image_size=SIZE)
    # on the command line, one line
    with pytest.raises(SystemExit, match=f'^error: no known encoder takes {SIZE}px images .* --image_pos'):
        main(['captions', f'--input={tmp_path}', f"--out={tmp_path / 'out'}", '--tokenizer=bytes',
              f'--image_size={SIZE}'])


@pytest.mark.parametrize('args, message', [
    (['llava', '--out=x'], r'^config error: --input=\.\.\. is required$'),
    (['shapes', '--n_caption=1.5'], r"^config error: --n_caption expects an integer, got 1\.5$"),
    (['shapes', '--text_mb=much'], r"^config error: --text_mb expects a number, got 'much'$"),
    (['shapes', '--n_val=0'], r'^error: n_val must be a positive integer, got 0$'),
    (['shapes', '--image_positions=none'], r"^config error: --image_positions: .* expects int"),
])
def test_command_line_mistakes_are_one_line(tmp_path, args, message):
    with pytest.raises(SystemExit, match=message):
        main(args + [f"--out={tmp_path / 'out'}"] if args[0] == 'shapes' else args)
    assert not (tmp_path / 'out').exists()


SHAPES_SIZES = dict(n_caption=12, n_instruct=8, n_instruct_text=4, n_val=3, text_mb=0.02, n_mc=5)


def test_prepare_shapes_end_to_end(tmp_path, capsys):
    out = tmp_path / 'shapes'
    sizes = [f'--{k}={v}' for k, v in SHAPES_SIZES.items()]
    manifests = main(['shapes', f'--out={out}', '--seed=0', '--workers=2'] + sizes)
    world = json.loads((out / 'raw' / 'world.json').read_text())
    captions, instruct, text = (read_manifest(str(out / k)) for k in ('captions', 'instruct', 'text'))
    assert (captions['kind'], instruct['kind'], text['kind']) == ('captions', 'instruct', 'text')
    assert captions['image_size'] == 48 and captions['image_positions'] == 9
    assert captions['tokenizer'] == 'shapes'
    assert sum(captions['num_samples'].values()) == world['counts']['caption_images']
    assert sum(instruct['num_samples'].values()) == world['counts']['instruct_images'] + \
        world['counts']['instruct_text_conversations']
    # the held-out file is the val split
    assert text['num_documents']['val'] == world['counts']['val_documents']
    # a caption sample holds the world's image and caption
    raw = out / 'raw'
    rows = [json.loads(line) for line in (raw / 'captions' / 'captions.jsonl').read_text().splitlines()]
    sample = ImageShards(str(out / 'captions'))[0]
    row = next(r for r in rows if r['image'] == sample['source'])
    assert text_of(sample['tokens'], 'shapes') == row['caption']
    np.testing.assert_array_equal(sample['image'], np.asarray(Image.open(raw / 'captions' / row['image'])))
    val_shard = out / 'text' / text['shards']['val'][0]['name']
    assert read_token_shard(str(val_shard)).size == text['num_tokens']['val']
    assert (raw / 'vqa' / 'questions.json').is_file() and (raw / 'text_mc' / 'arc_shapes.jsonl').is_file()
    capsys.readouterr()
    before = {p: os.stat(p).st_mtime_ns for p in out.rglob('*')}
    assert prepare_shapes(str(out), seed=0, workers=2, **SHAPES_SIZES) == manifests
    printed = capsys.readouterr().out
    assert printed.count('already finished, kept') == 3 and 'world already written' in printed
    assert {p: os.stat(p).st_mtime_ns for p in out.rglob('*')} == before  # nothing was rewritten
    with pytest.raises(SystemExit, match='other settings'):
        prepare_shapes(str(out), seed=1, **SHAPES_SIZES)
    # stale data is never reused: another tokenizer rebuilds every shard, and the manifests say so
    rebuilt = prepare_shapes(str(out), seed=0, tokenizer='bytes', **SHAPES_SIZES)
    assert {m['tokenizer'] for m in rebuilt.values()} == {'bytes'}
    assert 'already finished' not in capsys.readouterr().out
    assert text_of(ImageShards(str(out / 'captions'))[0]['tokens']) == row['caption']
