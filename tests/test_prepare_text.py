import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from prepare_data import main, prepare_text
from shards import load_text_split, read_token_shard, write_token_shard
from tokenizer import TOKENIZERS, chat_tokens, get_tokenizer, shapes_words

EOT = TOKENIZERS['bytes']['eot_id']


def test_gpt2_ids_are_exact():
    enc = get_tokenizer('gpt2')
    assert enc.encode_ordinary('hello world') == [31373, 995]
    assert enc.encode_ordinary('Hello world') == [15496, 995]
    assert enc.encode_ordinary(' the') == [262]
    assert enc.encode('<|endoftext|><|image|>', allowed_special='all') == [50256, 50257]
    assert enc.decode([31373, 995]) == 'hello world'


def test_byte_tokenizer():
    enc = get_tokenizer('bytes')
    assert enc.encode_ordinary('hé') == [104, 195, 169]
    assert enc.encode('<|endoftext|><|image|>', allowed_special='all') == [256, 257]
    # special-token text inside a document is plain text, never a control token
    assert 256 not in enc.encode_ordinary('<|endoftext|>')


def test_shapes_tokenizer_one_token_per_world_word_and_lossless():
    import shapes
    enc, ids = get_tokenizer('shapes'), TOKENIZERS['shapes']
    words = shapes.vocabulary()
    assert ids['eot_id'] == 256 + len(words) and ids['image_id'] == ids['eot_id'] + 1 == enc.n_vocab - 1
    assert ids['vocab_size'] % 64 == 0 and ids['vocab_size'] > ids['image_id']
    assert enc.encode('<|endoftext|><|image|>', allowed_special='all') == [ids['eot_id'], ids['image_id']]
    # every VQA answer, as the chat template writes it (after a space), is a single token
    for _, space in shapes.QUESTION_TYPES.values():
        for answer in space:
            assert len(enc.encode_ordinary(' ' + answer)) == 1, answer
    question = 'What color is the circle?\nAnswer the question using a single word or phrase.'
    pieces = [enc.decode([t]) for t in enc.encode_ordinary(question)]
    assert pieces == ['What', ' color', ' is', ' the', ' circle', '?', '\n', 'Answer', ' the', ' question',
                      ' using', ' a', ' single', ' word', ' or', ' phrase', '.']
    # text outside the world falls back to bytes, and every text comes back unchanged
    for text in ['Zebras ate 12 kiwis, said Zoë!', question, '  two  spaces\n\nand lines ', '<|endoftext|>']:
        tokens = enc.encode_ordinary(text)
        assert enc.decode(tokens) == text and max(tokens) < ids['eot_id']
    assert enc.encode_ordinary('Zebras')[:2] == [ord('Z'), ord('e')]


VOCABULARY_DIGEST = ("import hashlib, shapes; "
                     "print(hashlib.sha256('\\n'.join(shapes.vocabulary()).encode()).hexdigest())")


def test_shapes_vocabulary_is_the_same_in_every_process():
    import shapes
    digests = {subprocess.run([sys.executable, '-c', VOCABULARY_DIGEST], capture_output=True, text=True,
                              check=True, env=dict(os.environ, PYTHONHASHSEED=str(seed))).stdout.strip()
               for seed in (1, 2)}
    assert digests == {hashlib.sha256('\n'.join(shapes.vocabulary()).encode()).hexdigest()}
    assert {' circle', ' red', ' left', 'What', ' 2', 'User', 'Assistant'} <= set(shapes.vocabulary())


REWRITE_WORDS = ("python -c \"import json, shapes; words = json.dumps(list(shapes.vocabulary()), indent=0); "
                 "open('assets/shapes_words.json', 'w').write(words)\"")


def test_shapes_words_file_is_the_worlds_vocabulary():
    # the tokenizer reads the file, so that building it does not need the world's generators
    import shapes
    assert shapes_words() == list(shapes.vocabulary()), (
        "assets/shapes_words.json is not shapes.vocabulary() (the world's text changed); "
        f"rewrite it from the repository root: {REWRITE_WORDS}")


def test_chat_template_masks_everything_but_answers():
    enc = get_tokenizer('bytes')
    turns = [('user', 'Q1'), ('assistant', 'yes'), ('user', 'Q2'), ('assistant', 'no')]
    tokens, mask = chat_tokens(enc, turns, n_image=3)
    assert tokens[:4] == [EOT, 257, 257, 257]
    answers = [t for t, m in zip(tokens, mask) if m]
    assert answers == list(b' yes') + [EOT] + list(b' no') + [EOT]
    assert enc.decode([t for t in tokens if t < 256]) == 'User: Q1\nAssistant: yes\nUser: Q2\nAssistant: no'
    prompt, _ = chat_tokens(enc, [('user', 'Q1')])
    assert enc.decode(prompt[1:]).endswith('\nAssistant:')


def write_jsonl(path, docs):
    with open(path, 'w') as f:
        for d in docs:
            f.write(json.dumps({'text': d}) + '\n')


def zstd_jsonl(docs):
    import zstandard
    return zstandard.ZstdCompressor().compress(''.join(json.dumps({'text': d}) + '\n' for d in docs).encode())


def read_split(out, split):
    _, shards = load_text_split(out, split)
    return np.concatenate(shards)


def documents_of(tokens):
    enc = get_tokenizer('bytes')
    assert tokens[0] == EOT
    parts, current = [], []
    for t in tokens[1:].tolist() + [EOT]:
        if t == EOT:
            parts.append(enc.decode(current))
            current = []
        else:
            current.append(t)
    return parts


def test_round_trip_all_formats(tmp_path):
    raw = tmp_path / 'raw'
    (raw / 'sub').mkdir(parents=True)
    docs = [f"document number {i}: " + "words " * (i % 7) for i in range(200)]
    write_jsonl(raw / 'a.jsonl', docs[:100])
    (raw / 'sub' / 'b.txt').write_text(docs[100])
    (raw / 'c.jsonl.zst').write_bytes(zstd_jsonl(docs[101:150]))
    pa = pytest.importorskip('pyarrow')
    import pyarrow.parquet as pq
    pq.write_table(pa.table({'text': docs[150:]}), raw / 'd.parquet')
    out = tmp_path / 'out'
    manifest = prepare_text([str(raw)], str(out), tokenizer='bytes', val_fraction=0.1, workers=2,
                            group_mb=1e-6)
    got = documents_of(read_split(out, 'train')) + documents_of(read_split(out, 'val'))
    assert sorted(got) == sorted(docs)
    assert 0 < manifest['num_documents']['val'] < 60
    assert manifest['kind'] == 'text' and manifest['tokenizer'] == 'bytes' and manifest['dtype'] == 'uint16'
    assert manifest['vocab_size'] == 320 and len(manifest['shards']['train']) == 4
    all_tokens = sum(len(d.encode()) + 1 for d in docs)
    assert manifest['num_tokens']['train'] == all_tokens - manifest['num_tokens']['val']
    # one worker gives the same shards as two
    out1 = tmp_path / 'out1'
    prepare_text([str(raw)], str(out1), tokenizer='bytes', val_fraction=0.1, workers=1, group_mb=1e-6)
    for entry in manifest['shards']['train'] + manifest['shards']['val']:
        assert (out / entry['name']).read_bytes() == (out1 / entry['name']).read_bytes()


def test_bad_input_is_skipped_and_counted(tmp_path, capsys):
    raw = tmp_path / 'raw'
    raw.mkdir()
    good = [f"good document {i}" for i in range(5)]
    with open(raw / 'mixed.jsonl', 'wb') as f:
        f.write((json.dumps({'text': good[0]}) + '\n').encode())
        f.write(b'{"text": "unterminated\n')  # malformed JSON
        f.write(b'{"content": "no text field"}\n')  # missing text
        f.write(b'{"text": "bad \xff\xfe bytes"}\n')  # not UTF-8
        f.write((json.dumps({'text': good[1]}) + '\n').encode())
    (raw / 'empty.jsonl').write_bytes(b'')
    (raw / 'latin1.txt').write_bytes('caf\xe9'.encode('latin-1'))
    rng = np.random.default_rng(0)
    filler = [' '.join(map(str, rng.integers(0, 10**6, 30))) for _ in range(3000)]
    blob = zstd_jsonl(good[2:] + filler)
    (raw / 'cut.jsonl.zst').write_bytes(blob[:len(blob) // 2])  # truncated
    manifest = prepare_text([str(raw)], str(tmp_path / 'out'), tokenizer='bytes', val_fraction=0.0, workers=1)
    skipped = manifest['skipped']
    assert skipped['bad_json'] == 1 and skipped['missing_text'] == 1 and skipped['bad_utf8'] == 2
    assert skipped['empty'] == 1 and skipped['truncated'] == 1
    docs = documents_of(read_split(tmp_path / 'out', 'train'))
    assert good[0] in docs and good[1] in docs and good[2] in docs  # the good part of the cut .zst is kept
    printed = capsys.readouterr().out
    assert 'mixed.jsonl' in printed and '1 bad_json' in printed and 'cut.jsonl.zst' in printed


def test_nothing_usable_fails_clearly(tmp_path):
    raw = tmp_path / 'raw'
    raw.mkdir()
    (raw / 'a.jsonl').write_text('not json\n{"x": 1}\n')
    with pytest.raises(SystemExit, match='no usable documents'):
        prepare_text([str(raw)], str(tmp_path / 'out'), tokenizer='bytes', workers=1)
    with pytest.raises(SystemExit, match='no text files'):
        prepare_text([str(tmp_path / 'nothing*')], str(tmp_path / 'out'), tokenizer='bytes', workers=1)


def test_shard_round_trip_and_truncation(tmp_path):
    path = str(tmp_path / 's.bin')
    tokens = np.arange(1000, dtype=np.uint16)
    write_token_shard(path, tokens)
    assert np.array_equal(read_token_shard(path), tokens)
    big = np.array([70000, 1, 2], dtype=np.uint32)
    write_token_shard(path, big)
    assert np.array_equal(read_token_shard(path), big)
    data = open(path, 'rb').read()
    open(path, 'wb').write(data[:-2])
    with pytest.raises(ValueError, match='truncated or corrupt token shard'):
        read_token_shard(path)
    open(path, 'wb').write(b'junk' * 20)
    with pytest.raises(ValueError, match='not a token shard'):
        read_token_shard(path)


def test_rerun_skips_finished_groups_and_is_identical(tmp_path):
    raw = tmp_path / 'raw'
    raw.mkdir()
    for i in range(3):
        write_jsonl(raw / f'{i}.jsonl', [f"file {i} doc {j}" for j in range(50)])
    out = tmp_path / 'out'
    prepare_text([str(raw)], str(out), tokenizer='bytes', val_fraction=0.1, workers=1, group_mb=1e-6)
    before = {p: (out / p).read_bytes() for p in os.listdir(out)}
    # an interrupted run: the last group never finished, no manifest was written
    os.remove(out / 'part_000002.json')
    os.remove(out / 'train_000002.bin')
    os.remove(out / 'manifest.json')
    mtime = os.path.getmtime(out / 'train_000000.bin')
    prepare_text([str(raw)], str(out), tokenizer='bytes', val_fraction=0.1, workers=1, group_mb=1e-6)
    assert os.path.getmtime(out / 'train_000000.bin') == mtime  # finished groups were not redone
    after = {p: (out / p).read_bytes() for p in os.listdir(out)}
    assert after == before


def test_missing_shard_is_reported(tmp_path):
    raw = tmp_path / 'raw'
    raw.mkdir()
    write_jsonl(raw / 'a.jsonl', ["some text"] * 10)
    out = tmp_path / 'out'
    prepare_text([str(raw)], str(out), tokenizer='bytes', val_fraction=0.0, workers=1)
    os.remove(out / 'train_000000.bin')
    with pytest.raises(FileNotFoundError, match='train_000000.bin listed in manifest.json is missing'):
        load_text_split(str(out), 'train')


def test_command_line_takes_a_comma_separated_input_list(tmp_path):
    write_jsonl(tmp_path / 'a.jsonl', ['first file'])
    (tmp_path / 'b.txt').write_text('second file')
    write_jsonl(tmp_path / 'c.jsonl', ['not asked for'])
    out = tmp_path / 'out'
    main(['text', f"--input={tmp_path / 'a.jsonl'}, {tmp_path / 'b*.txt'}", f'--out={out}',
          '--tokenizer=bytes', '--val_fraction=0.0', '--workers=1'])
    manifest = json.loads((out / 'manifest.json').read_text())
    assert manifest['tokenizer'] == 'bytes' and len(manifest['sources']) == 2
    assert sorted(documents_of(read_split(out, 'train'))) == ['first file', 'second file']


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('args, message', [
    (['--input=a', '--out=b', '--tokenizer=nope'],
     "--tokenizer must be one of gpt2, bytes, shapes, got 'nope'"),
    (['--input=a'], '--out=... is required'),
    (['--input=a', '--out=b', '--group_mb=big'], "'group_mb' expects float"),
])
def test_command_line_mistakes_exit_with_one_line(tmp_path, args, message):
    result = subprocess.run([sys.executable, os.path.join(REPO, 'prepare_data.py'), 'text'] + args,
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1 and result.stdout == ''
    assert result.stderr.endswith('\n') and result.stderr.count('\n') == 1, result.stderr
    assert message in result.stderr
    assert os.listdir(tmp_path) == []  # nothing written


def test_command_line_bad_input_is_one_line(tmp_path):
    with pytest.raises(SystemExit, match='no text files .* match'):
        main(['text', f"--input={tmp_path / 'nothing*'}", f"--out={tmp_path / 'out'}", '--tokenizer=bytes'])
    with pytest.raises(SystemExit, match="unknown config key 'tokeniser'; did you mean tokenizer"):
        main(['text', '--input=a', '--out=b', '--tokeniser=bytes'])
    with pytest.raises(SystemExit, match='takes a command .* give one first'):
        main(['--input=a'])
