"""The GPT-NeoX tokenizer through tiktoken: a small byte-level BPE trained with HF's tokenizers, configured
as GPT-NeoX-20B's tokenizer.json is (NFC, ByteLevel, <|endoftext|>, added runs of 2-24 spaces), converted
and compared id for id with HF on a varied corpus; files that cannot be converted exactly are refused.
NEOX_TOKENIZER_FILE=path/to/tokenizer.json also compares the real file."""
import json
import os
import random
import unicodedata

import pytest
import tokenizers  # HF's, the reference (installed with transformers)

from scripts.rehearsal_data import neox_style_tokenizer
from tokenizer import (TOKENIZERS, byte_level_alphabet, chat_tokens, decode, encode, get_tokenizer,
                       stored_tokenizer_file, token_ids)

CODE = '''def mean(xs: list[float]) -> float:
    """The mean; 0.0 for an empty list."""
    if not xs:
        return 0.0
    total = 0
    for x in xs:
        total += x  # accumulate
    return total / len(xs)


class Point:
\tdef __init__(self, x=0, y=0):
\t\tself.x, self.y = x, y   # tabs, then spaces
        if (a != b) && (c <= d) { return x->y[i++]; }
'''
WORDS = ('the of and to in is was for that with as on by it he she they we you are were be this '
         'from at or an but not which have has had one all their there been would will more').split()
ACCENTS = ['cafe\u0301', 'nai\u0308ve', 'Zoe\u0308', 'A\u030angstro\u0308m', '\u212b', 'ﬁancé',
           'resume\u0301',
           'Ñandu\u0301', 'n\u0303', 'e\u0301\u0301', '\u1100\u1161\u11a8', 'o\u0308\u0304', 'É', 'Å',
           'ṩ', 's\u0323\u0307', 'q\u0307\u0323', '\u0301alone', 'x\u0300y']
UNICODE = ['Москва́ — столица', 'αβγ δέλτα', '東京都は日本の首都です。', '한국어 문장', 'مرحبا بالعالم',
           'नमस्ते दुनिया', 'ไทย', 'Ελληνικά', 'עברית', '½ ¾ ² ³ µ', '\u00a0nbsp\u00a0',
           'ideographic\u3000space',
           'line\u2028sep', 'zero\u200bwidth', 'soft\u00adhyphen', '𝔘𝔫𝔦𝔠𝔬𝔡𝔢', 'Ⅻ ⅻ']
EMOJI = ['😀', '👍🏽', '👨‍👩‍👧‍👦', '🇫🇷🇯🇵', '❤️', '🏳️‍🌈', '🤖🤖🤖', '✔︎', '🧑🏿‍🚀', '#️⃣']
NUMBERS = ['3.14159', '1,000,000', '2024-06-01', '0x1F', '1e-10', '12345678901234567890', '-42', '007', '٣٤٥']
SPECIAL = ['<|endoftext|>', '<|padding|>', '<|endoftext|><|endoftext|>', 'a<|endoftext|>b', '<|image|>', '<|']
CONTRACTIONS = ["don't", "it's", "we'll", "they've", "I'm", "you're", "he'd", "IT'S", "o'clock", "'s"]


def space_run(rng):
    kind = rng.random()
    if kind < 0.5:
        return ' ' * rng.choice([1, 2, 3, 4, 5, 7, 8, 12, 16, 23, 24, 25, 26, 30, 47, 48, 49, 60])
    if kind < 0.7:
        return rng.choice(['\n', '\n\n', '\r\n', '\t', '\t\t', ' \n', '\n ', '\n    ', '  \n  ', '\n\n\n'])
    return ''.join(rng.choice([' ', ' ', '\t', '\n', '\u00a0']) for _ in range(rng.randint(2, 9)))


def fragment(rng):
    kind = rng.randrange(9)
    pools = [WORDS, ACCENTS, UNICODE, EMOJI, NUMBERS, SPECIAL, CONTRACTIONS]
    if kind < len(pools):
        return rng.choice(pools[kind])
    if kind == 7:
        return CODE[rng.randrange(len(CODE) // 2):][:rng.randint(10, 120)]
    return ''.join(rng.choice('!?.,;:()[]{}"\'-_=+*/\\|@#$%^&~`') for _ in range(rng.randint(1, 4)))


def corpus(seed, n_docs, words_per_doc):
    """Documents mixing every case: whitespace runs, code, digits, scripts, emoji, special-token text,
    decomposed accents; joined with separators that vary too."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        parts = []
        for _ in range(words_per_doc):
            parts.append(fragment(rng))
            parts.append(' ' if rng.random() < 0.7 else space_run(rng))
        docs.append(''.join(parts))
    return docs


def neox_like(path, vocab_size=1200):
    """A small BPE configured as GPT-NeoX-20B's tokenizer.json, trained on the varied corpus."""
    return neox_style_tokenizer(path, corpus(1, 300, 60) + [CODE] * 20 + [' '.join(ACCENTS)] * 20, vocab_size)


@pytest.fixture(scope='module')
def neox_file(tmp_path_factory):
    return neox_like(tmp_path_factory.mktemp('neox') / 'tokenizer.json')


def hf_ids(path, texts):
    hf = tokenizers.Tokenizer.from_file(path)
    hf.encode_special_tokens = True  # special-token strings inside a document are plain text
    return [hf.encode(t, add_special_tokens=False).ids for t in texts]


def assert_same_ids(path, texts):
    enc = get_tokenizer('neox', tokenizer_file=path)
    for text, want in zip(texts, hf_ids(path, texts)):
        got = encode(enc, text)
        assert got == want, f"ids differ on {text[:200]!r}"
        assert decode(enc, got) == unicodedata.normalize('NFC', text)


def test_ids_equal_hf_on_a_varied_corpus(neox_file):
    docs = corpus(7, 60, 40)
    assert sum(map(len, docs)) >= 10_000
    whole = ''.join(docs)
    cases = ('<|endoftext|>', 'e\u0301', ' ' * 25, '\t', '😀', '1,000,000', '    return')
    assert all(s in whole for s in cases)
    with open(neox_file) as f:
        spaces = {t['id'] for t in json.load(f)['added_tokens'] if not t['special']}
    assert spaces & set(hf_ids(neox_file, [whole])[0])  # the space tokens are met
    assert_same_ids(neox_file, docs + [whole])


def test_edge_cases_equal_hf(neox_file):
    cases = ['', ' ', '  ', ' ' * 24, ' ' * 25, ' ' * 50, ' ' * 49 + 'x', 'x' + ' ' * 30 + 'y', '\n' * 5,
             ' \u0301', '  \u0301', 'e' + '\u0301' * 3, '\u0301', '<|endoftext|>', ' <|endoftext|> ',
             '<|endoftext|>' * 3, 'a  b   c    d', '\t  \t', "'s'S'll", '  <|padding|>  ', ' ' * 3 + '\n',
             'x \n  y', 'end   ']
    assert_same_ids(neox_file, cases)


def test_ids_specials_and_chat_template(neox_file):
    enc = get_tokenizer('neox', tokenizer_file=neox_file)
    assert get_tokenizer('neox', tokenizer_file=neox_file) is enc  # cached by content
    with open(neox_file) as f:
        cfg = json.load(f)
    added = {t['content']: t['id'] for t in cfg['added_tokens']}
    last = max(max(cfg['model']['vocab'].values()), max(added.values()))
    ids = token_ids(enc)
    assert ids == dict(eot_id=added['<|endoftext|>'], image_id=last + 1, vocab_size=(last + 65) // 64 * 64)
    assert ids['eot_id'] == 0 and enc.n_vocab == ids['image_id'] + 1
    assert token_ids(enc, vocab_size=50_432)['vocab_size'] == 50_432
    with pytest.raises(ValueError, match='does not hold'):
        token_ids(enc, vocab_size=ids['image_id'])
    assert ids['eot_id'] not in encode(enc, 'a <|endoftext|> b')
    assert encode(enc, ' ' * 30) == [added[' ' * 24], added[' ' * 6]]
    tokens, mask = chat_tokens(enc, [('user', 'Q?'), ('assistant', 'yes')], n_image=2)
    assert tokens[:3] == [ids['eot_id'], ids['image_id'], ids['image_id']] and tokens[-1] == ids['eot_id']
    assert decode(enc, [t for t, m in zip(tokens, mask) if m][:-1]) == ' yes'


def test_a_checkpoints_copy_of_the_file_gives_the_same_tokenizer(neox_file, tmp_path, monkeypatch):
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
    with open(neox_file, 'rb') as f:
        data = f.read()
    path = stored_tokenizer_file(data)
    assert path.startswith(str(tmp_path)) and path != neox_file and stored_tokenizer_file(data) == path
    assert get_tokenizer('neox', tokenizer_file=path) is get_tokenizer('neox', tokenizer_file=neox_file)


def edited(neox_file, tmp_path, change):
    with open(neox_file) as f:
        cfg = json.load(f)
    change(cfg)
    path = tmp_path / 'tokenizer.json'
    path.write_text(json.dumps(cfg))
    return str(path)


def add_unreachable(cfg):
    cfg['model']['vocab']['zqxj'] = max(t['id'] for t in cfg['added_tokens']) + 1


def take_an_added_id(cfg):
    cfg['model']['vocab']['zqxj'] = cfg['added_tokens'][-1]['id']


def swap_two_merges(cfg):
    m = cfg['model']['merges']
    m[5], m[6] = m[6], m[5]


def set_flag(key, value):
    return lambda cfg: cfg['added_tokens'][-1].update({key: value})


@pytest.mark.parametrize('change, message', [
    (lambda c: c.update(normalizer={'type': 'NFKC'}), r'normalizer \{"type": "NFKC"\} is not supported'),
    (lambda c: c.update(normalizer={'type': 'Sequence',
                                    'normalizers': [{'type': 'NFC'}, {'type': 'Lowercase'}]}),
     'normalizer .* is not supported'),
    (lambda c: c['pre_tokenizer'].update(add_prefix_space=True), 'pre_tokenizer .* is not supported'),
    (lambda c: c['pre_tokenizer'].update(use_regex=False), 'pre_tokenizer .* is not supported'),
    (lambda c: c.update(pre_tokenizer={'type': 'Whitespace'}), 'pre_tokenizer .* is not supported'),
    (lambda c: c['model'].update(dropout=0.1), 'model dropout=0.1 is not supported'),
    (lambda c: c['model'].update(type='WordPiece'), "model type 'WordPiece' is not supported"),
    (lambda c: c['model'].update(end_of_word_suffix='</w>'), 'end_of_word_suffix'),
    (lambda c: c.update(decoder={'type': 'Metaspace'}), 'decoder .* is not supported'),
    (set_flag('lstrip', True), "added token '  ' sets lstrip"),
    (set_flag('single_word', True), "added token '  ' sets single_word"),
    (add_unreachable, "vocab token 'zqxj' .* is not reached through its merges"),
    (take_an_added_id, "vocab token 'zqxj' has the id .* of the added token '  '"),
    (swap_two_merges, 'merge 6 makes token .* lower id'),
    (lambda c: c['model']['merges'].append(c['model']['merges'][3]), 'is made by an earlier merge too'),
    (lambda c: c['model']['vocab'].pop('Ġ'), "merge .* is not a pair of vocab tokens|lacks the byte 0x20"),
    (lambda c: c.update(added_tokens=[t for t in c['added_tokens'] if t['content'] != '<|endoftext|>']),
     'no <|endoftext|>'),
])
def test_unconvertible_files_are_refused_in_one_line(neox_file, tmp_path, change, message):
    path = edited(neox_file, tmp_path, change)
    with pytest.raises(ValueError, match=message) as e:
        get_tokenizer('neox', tokenizer_file=path)
    assert '\n' not in str(e.value) and str(e.value).startswith(path + ': ')


def test_a_token_hf_merges_another_way_is_refused(tmp_path):
    # 'abc' made by (ab, c), but HF's merges take 'bc' first on the bytes 'abc': tiktoken would differ
    vocab = {'<|endoftext|>': 0, **{c: i + 1 for i, c in enumerate(sorted(byte_level_alphabet()))}}
    n = len(vocab)
    vocab.update({'bc': n, 'ab': n + 1, 'abc': n + 2})
    cfg = dict(version='1.0', added_tokens=[dict(id=0, content='<|endoftext|>', special=True)],
               normalizer=None, pre_tokenizer=dict(type='ByteLevel', add_prefix_space=False),
               model=dict(type='BPE', vocab=vocab, merges=['b c', 'a b', 'ab c']))
    path = tmp_path / 'tokenizer.json'
    path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="vocab token 'abc' .* is not reached through its merges"):
        get_tokenizer('neox', tokenizer_file=str(path))


def test_neox_needs_its_file_and_others_take_none(neox_file):
    with pytest.raises(ValueError, match='needs its tokenizer.json'):
        get_tokenizer('neox')
    with pytest.raises(ValueError, match="takes no tokenizer_file"):
        get_tokenizer('bytes', tokenizer_file=neox_file)
    with pytest.raises(ValueError, match='cannot read a tokenizer.json'):
        get_tokenizer('neox', tokenizer_file=__file__)
    with pytest.raises(ValueError, match='no such tokenizer.json'):
        get_tokenizer('neox', tokenizer_file=neox_file + '.missing')


def test_the_other_tokenizers_keep_their_ids():
    enc = get_tokenizer('bytes')
    assert encode(enc, 'hé') == [104, 195, 169] and token_ids(enc) == TOKENIZERS['bytes']
    assert encode(enc, 'cafe\u0301') == list('cafe\u0301'.encode())  # no normaliser outside neox
    enc = get_tokenizer('shapes')
    assert token_ids(enc) == TOKENIZERS['shapes'] and encode(enc, 'Zebras')[:2] == [ord('Z'), ord('e')]
    assert len(encode(enc, ' circle')) == 1
    enc = get_tokenizer('gpt2')
    assert encode(enc, 'hello world') == [31373, 995] and encode(enc, 'Hello world') == [15496, 995]
    assert encode(enc, ' the') == [262] and token_ids(enc) == TOKENIZERS['gpt2']
    assert encode(enc, ' ' * 30) == enc.encode_ordinary(' ' * 30)
    assert enc.encode('<|endoftext|><|image|>', allowed_special='all') == [50256, 50257]


@pytest.mark.skipif(not os.environ.get('NEOX_TOKENIZER_FILE'),
                    reason='set NEOX_TOKENIZER_FILE to the real file')
def test_the_real_gpt_neox_file():
    path = os.environ['NEOX_TOKENIZER_FILE']
    enc = get_tokenizer('neox', tokenizer_file=path)
    assert token_ids(enc) == dict(eot_id=0, image_id=50277, vocab_size=50304)
    docs = corpus(11, 100, 60)
    assert_same_ids(path, docs + [''.join(docs)])
