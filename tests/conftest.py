import json
import os

import pytest
import torch

# Without a GPU the Triton kernels run in Triton's interpreter, which must be chosen before triton is imported
# (anything may import it: transformers, torch's compiler); every test session sets it first.
if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')


def one_line_error(result, *words):
    """The script failed with one line on stderr holding every word, and no traceback."""
    assert result.returncode != 0, result.stdout[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and 'Traceback' not in result.stderr, result.stderr[-3000:]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.fixture(scope='session')
def text_data(tmp_path_factory):
    """A small byte-tokenized text folder: train.py's tests train on it."""
    from prepare_data import prepare_text
    raw = tmp_path_factory.mktemp('raw')
    words = 'the cat sat on a mat while red birds sang songs about rivers and hills'.split()
    with open(raw / 'corpus.jsonl', 'w') as f:
        for i in range(400):
            doc = ' '.join(words[(i * 7 + j * 3) % len(words)] for j in range(20 + i % 13))
            f.write(json.dumps({'text': doc}) + '\n')
    out = str(tmp_path_factory.mktemp('data') / 'text')
    prepare_text([str(raw)], out, tokenizer='bytes', val_fraction=0.1, workers=1)
    return out
