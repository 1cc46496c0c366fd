"""The lm-eval bridge against eval.py's built-in multiple choice and against plain forward passes written
here, on a tiny random-weight LM with the byte tokenizer and an ARC-easy-style task that reads a local
JSONL (lm-eval runs offline)."""
import json
import random

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip('lm_eval')

import eval as ev  # noqa: E402
import tasks  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval_bridge import BridgeError, HarnessModel, evaluate_lm_eval  # noqa: E402
from model import LM, LMConfig  # noqa: E402
from tokenizer import TOKENIZERS, encode, get_tokenizer  # noqa: E402

EOT = TOKENIZERS['bytes']['eot_id']
# lm-eval's arc_easy, with its dataset a local JSONL in the HF layout (cached in the test's folder)
TASK_YAML = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
  cache_dir: {cache}
output_type: multiple_choice
test_split: test
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{choices.label.index(answerKey)}}}}"
doc_to_choice: "{{{{choices.text}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""
WORDS = ['sun', 'moon', 'rock', 'water', 'tree', 'leaf', 'heat', 'ice', 'wind', 'light', 'sound', 'seed']


@pytest.fixture(scope='module')
def lm():
    torch.manual_seed(0)
    return LM(LMConfig(vocab_size=320, block_size=96, n_layer=2, n_head=2, n_embd=64)).eval()


@pytest.fixture(scope='module')
def enc():
    return get_tokenizer('bytes')


@pytest.fixture(scope='module')
def arc_task(tmp_path_factory):
    """(task folder, JSONL path, task name): 10 ARC-easy-style questions with 3 to 5 choices."""
    root = tmp_path_factory.mktemp('lm_eval_tasks')
    rng = random.Random(0)
    path = root / 'arc_local.jsonl'
    with open(path, 'w') as f:
        for i in range(10):
            k = rng.choice([3, 4, 5])
            labels = 'ABCDE'[:k] if i % 3 else '12345'[:k]
            texts = [' '.join(rng.sample(WORDS, rng.choice([1, 2]))) for _ in range(k)]
            record = dict(id=f"q{i}", question=f"Which is {rng.choice(WORDS)} like?",
                          choices=dict(text=texts, label=list(labels)), answerKey=rng.choice(labels))
            f.write(json.dumps(record) + '\n')
    (root / 'arc_local.yaml').write_text(TASK_YAML.format(name='arc_local', path=path, cache=root / 'cache'))
    return str(root), str(path), 'arc_local'


def plain_loglikelihood(lm, tokens, n):
    """log p of the last n tokens given the ones before, one unpadded forward pass."""
    with torch.no_grad():
        logits, _ = lm(torch.tensor([tokens[:-1]]))  # (1, T, V)
    logp = F.log_softmax(logits[0].double(), dim=-1)  # (T, V)
    return sum(logp[t - 1, tokens[t]].item() for t in range(len(tokens) - n, len(tokens)))


@pytest.fixture(scope='module')
def bridged(lm, enc, arc_task):
    task_dir, _, name = arc_task
    return evaluate_lm_eval(lm, enc, [name], limit=7, seed=3, batch_size=8, task_dir=task_dir)[name]


def test_bridge_arc_equals_builtin_arc_item_by_item(bridged, lm, enc, arc_task):
    _, path, _ = arc_task
    items, problems = tasks.load_mc(path, limit=7, seed=3)
    assert not problems and len(items) == 7
    metrics, predictions = ev.score_mc(items, ev.mc_loglikelihoods(lm, enc, items, batch_size=8))
    assert bridged['n'] == 7 and bridged['choices'] == [len(it['choices']) for it in items]
    assert [f"q{b['doc_id']}" for b in bridged['items']] == [it['id'] for it in items]  # the same subset
    for b, p in zip(bridged['items'], predictions):
        assert b['target'] == p['gold']
        assert b['loglikelihoods'] == p['loglikelihoods']  # the same function on the same batches
        assert b['acc'] == float(p['prediction'] == p['gold'])
        assert b['acc_norm'] == float(p['prediction_norm'] == p['gold'])
    assert bridged['acc'] == metrics['acc'] and bridged['acc_norm'] == metrics['acc_norm']
    assert bridged['chance'] == metrics['chance']
    assert bridged['num_fewshot'] == 0


def test_bridge_loglikelihoods_equal_a_plain_forward_pass(bridged, lm, enc, arc_task):
    _, path, _ = arc_task
    records = [json.loads(line) for line in open(path)]
    for b in bridged['items']:
        r = records[b['doc_id']]
        context = [EOT] + list(f"Question: {r['question']}\nAnswer:".encode())
        for choice, ll in zip(r['choices']['text'], b['loglikelihoods']):
            continuation = list(f" {choice}".encode())
            assert ll == pytest.approx(plain_loglikelihood(lm, context + continuation, len(continuation)),
                                       abs=1e-4)


def test_loglikelihood_requests_moves_trailing_space_and_takes_empty_context(lm, enc):
    harness = HarnessModel(lm, enc, batch_size=4)
    requests = [Instance('loglikelihood', {}, ('The sun is ', 'hot'), 0),
                Instance('loglikelihood', {}, ('', 'Hello'), 1)]
    (a, _), (b, _) = harness.loglikelihood(requests)
    tokens = [EOT] + encode(enc, 'The sun is hot')
    assert a == pytest.approx(plain_loglikelihood(lm, tokens, 4), abs=1e-4)
    assert b == pytest.approx(plain_loglikelihood(lm, [EOT] + encode(enc, 'Hello'), 5), abs=1e-4)


def test_loglikelihood_rolling_equals_a_plain_sum_over_windows(lm, enc):
    harness = HarnessModel(lm, enc, batch_size=4)
    texts = ['short text', 'The wind moves the leaves of the tree. ' * 7]  # 10 and 273 tokens
    block = lm.config.block_size
    got = harness.loglikelihood_rolling([Instance('loglikelihood_rolling', {}, (t,), i)
                                         for i, t in enumerate(texts)])
    for text, total in zip(texts, got):
        tokens = [EOT] + encode(enc, text)
        expected, end = 0.0, 0
        # windows of block_size predicted tokens; each window sees the block_size tokens before its end
        while end < len(tokens) - 1:
            new_end = min(end + block, len(tokens) - 1)
            window = tokens[max(0, new_end - block):new_end + 1]
            expected += plain_loglikelihood(lm, window, new_end - end)
            end = new_end
        assert total == pytest.approx(expected, abs=1e-3)


def test_generate_until_is_greedy_batched_and_stops_at_a_stop_string(lm, enc):
    harness = HarnessModel(lm, enc, batch_size=4)
    contexts = ['Question: why?\nAnswer:', 'The', 'A tree has leaves and']
    ask = lambda until, n=24: harness.generate_until(
        [Instance('generate_until', {}, (c, dict(until=until, max_gen_toks=n)), i)
         for i, c in enumerate(contexts)])
    free = ask([])
    for i, c in enumerate(contexts):  # one left-padded batch = each prompt on its own
        request = Instance('generate_until', {}, (c, dict(until=[], max_gen_toks=24)), 0)
        assert harness.generate_until([request]) == [free[i]]
    longest = max(free, key=len)
    assert len(longest) >= 6, free
    stop = longest[3:5]
    cut = ask([stop, 'never appears'])
    for text, full in zip(cut, free):
        assert text == (full[:full.index(stop)] if stop in full else full)
    assert stop not in cut[free.index(longest)]


def test_shots_set_the_few_shot_count(lm, enc, arc_task, bridged):
    task_dir, _, name = arc_task
    shot = evaluate_lm_eval(lm, enc, [name], limit=7, seed=3, batch_size=8, shots={name: 2},
                            task_dir=task_dir)[name]
    assert shot['num_fewshot'] == 2 and shot['n'] == 7
    assert [i['doc_id'] for i in shot['items']] == [i['doc_id'] for i in bridged['items']]
    assert [i['loglikelihoods'] for i in shot['items']] != [i['loglikelihoods'] for i in bridged['items']]


def test_an_unknown_task_or_sampling_is_one_line(lm, enc, arc_task):
    with pytest.raises(BridgeError, match='unknown lm-eval task no_such_task'):
        evaluate_lm_eval(lm, enc, ['no_such_task'], task_dir=arc_task[0])
    harness = HarnessModel(lm, enc)
    with pytest.raises(BridgeError, match='greedy only'):
        harness.generate_until([Instance('generate_until', {}, ('x', dict(do_sample=True)), 0)])
