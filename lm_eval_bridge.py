"""
lm-evaluation-harness on this project's language model: its own task definitions (prompts, few-shot
sampling, metrics) run on a checkpoint's LM (a VLM's language model, or a text-only LM) with the
checkpoint's tokenizer.

    from lm_eval_bridge import evaluate_lm_eval
    results = evaluate_lm_eval(model, enc, ['hellaswag', 'arc_easy'], shots={'arc_easy': 10})
    results['arc_easy']   # {'acc', 'acc_norm', 'n', 'choices', 'chance', 'num_fewshot', 'metrics', 'items'}

Every context starts with <|endoftext|>, as in eval.py's built-in multiple choice. It is the BOS of
plain text here: every training document follows one, so without it the prompt's first token is read
out of the training distribution and the scores move. lm-eval's HF model does the same where the
tokenizer adds a BOS token (Llama's) or with add_bos_token=True, and conditions an empty context on its
prefix token (GPT-2's HF tokenizer adds none, so plain GPT-2 models there are scored without it). So on
the same items, the bridge's arc_easy equals the built-in arc_easy, acc and acc_norm item by item.

lm-eval is an optional dependency (`pip install lm-eval`), imported only here. The bridge runs offline:
HF_DATASETS_OFFLINE and HF_HUB_OFFLINE default to 1, so the tasks' datasets come from the Hugging Face
cache (docs/data.md says how to fill it on a machine with internet); set them to 0 to download.
"""
import os

import torch
from tqdm import tqdm

from model import VLM, loglikelihoods
from tasks import subset
from tokenizer import decode, encode, token_ids

try:
    from lm_eval.api.model import LM as HarnessLM
except ImportError:  # optional: evaluate_lm_eval says what to install
    HarnessLM = object

MAX_GEN_TOKS = 256  # lm-eval's default for generate_until
FEWSHOT_SEED = 1234  # lm-eval's default seed of the few-shot sampler, so k-shot prompts match its CLI's


class BridgeError(ValueError):
    """A task that cannot run (lm-eval missing, an unknown task, a dataset not in the cache)."""


# -----------------------------------------------------------------------------
# The model: lm-eval's three request types on this project's LM and tokenizer

class HarnessModel(HarnessLM):
    """lm-eval's model interface around a project LM (or a VLM's LM) and its tiktoken encoding."""

    def __init__(self, model, enc, batch_size=32):
        super().__init__()
        self.model = model.lm if isinstance(model, VLM) else model
        self.enc = enc
        self.eot_id = token_ids(enc)['eot_id']
        self.block_size = self.model.config.block_size
        self.batch_size = batch_size

    def pair(self, request):
        """(context, continuation) text -> token lists: <|endoftext|> + context, and the continuation.
        Whitespace at the end of the context moves to the continuation, as lm-eval's models do, so a
        word keeps its leading space."""
        context, continuation = request.args
        n = len(context) - len(context.rstrip())
        if n:
            context, continuation = context[:-n], context[-n:] + continuation
        tokens = encode(self.enc, continuation)
        if len(tokens) > self.block_size:
            raise BridgeError(f"{request.task_name} doc {request.doc_id}: a continuation of {len(tokens)} "
                              f"tokens does not fit block_size {self.block_size}")
        return [self.eot_id] + encode(self.enc, context), tokens

    def loglikelihood(self, requests, disable_tqdm=False):
        """[(log p(continuation | context), whether greedy decoding gives the continuation)]."""
        pairs = [self.pair(r) for r in requests]
        scored = [i for i, (_, c) in enumerate(pairs) if c]  # an empty continuation has log p 0
        out = loglikelihoods(self.model, [pairs[i] for i in scored], self.batch_size, self.eot_id,
                             desc='lm_eval', greedy=True)
        results = [(0.0, True)] * len(requests)
        for i, r in zip(scored, out):
            results[i] = r
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        """[log p(text | <|endoftext|>)], each text in windows of block_size tokens; every token is
        predicted once, the first window from <|endoftext|>, the last with a full window before it."""
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
        windows, owner = [], []
        for k, r in enumerate(requests):
            tokens = encode(self.enc, r.args[0])
            for w in get_rolling_token_windows(token_list=tokens, prefix_token=self.eot_id,
                                               max_seq_len=self.block_size, context_len=1):
                windows.append(make_disjoint_window(w))
                owner.append(k)
        totals = [0.0] * len(requests)
        for k, ll in zip(owner, loglikelihoods(self.model, windows, self.batch_size, self.eot_id,
                                               desc='lm_eval rolling')):
            totals[k] += ll
        return totals

    def generate_until(self, requests, disable_tqdm=False):
        """Greedy continuations of <|endoftext|> + context, at most max_gen_toks tokens (lm-eval's 256 by
        default), ended by <|endoftext|> and cut before the first stop string (`until`)."""
        settings = [self.generation_settings(r) for r in requests]
        # one left-padded batch per max_gen_toks, prompts of similar lengths together
        order = sorted(range(len(requests)), key=lambda i: (settings[i][1], -len(settings[i][2])))
        texts = [''] * len(requests)
        for start in tqdm(range(0, len(order), self.batch_size), desc='lm_eval generate', unit='batch',
                          dynamic_ncols=True, disable=disable_tqdm):
            chunk = order[start:start + self.batch_size]
            for gen in {settings[i][1] for i in chunk}:
                part = [i for i in chunk if settings[i][1] == gen]
                rows = self.generate([settings[i][2] for i in part], gen)
                for i, row in zip(part, rows):
                    texts[i] = cut_at(decode(self.enc, row), settings[i][0])
        return texts

    def generation_settings(self, request):
        """(stop strings, new tokens, prompt tokens) of a generate_until request; the prompt keeps its
        last tokens so that it and the new tokens fit block_size."""
        context, kwargs = request.args
        kwargs = dict(kwargs or {})
        where = f"{request.task_name} doc {request.doc_id}"
        sample, temperature = kwargs.get('do_sample'), kwargs.get('temperature') or 0
        if sample or temperature > 0:
            raise BridgeError(f"{where}: generation here is greedy only, the task asks for sampling "
                              f"(do_sample={sample}, temperature={temperature})")
        until = kwargs.get('until') or []
        until = [until] if isinstance(until, str) else list(until)
        max_new = min(int(kwargs.get('max_gen_toks', MAX_GEN_TOKS)), self.block_size - 1)
        prompt = ([self.eot_id] + encode(self.enc, context))[-(self.block_size - max_new):]
        return until, max_new, prompt

    @torch.no_grad()
    def generate(self, prompts, max_new):
        """Greedy new tokens for prompts of any lengths in one left-padded batch: the padding has doc id 0
        and the prompts 1, so no prompt token attends to it. Each row is cut before its <|endoftext|>."""
        device = self.model.output.weight.device
        B, width = len(prompts), max(len(p) for p in prompts)
        idx = torch.full((B, width), self.eot_id, dtype=torch.long)
        doc_ids = torch.zeros((B, width), dtype=torch.long)
        for i, p in enumerate(prompts):
            idx[i, width - len(p):] = torch.tensor(p)
            doc_ids[i, width - len(p):] = 1
        padded = any(len(p) < width for p in prompts)
        out = self.model.generate(idx.to(device), max_new, temperature=0.0, stop_token=self.eot_id,
                                  doc_ids=doc_ids.to(device) if padded else None)  # (B, <= max_new)
        rows = out.tolist()
        return [row[:row.index(self.eot_id)] if self.eot_id in row else row for row in rows]


def cut_at(text, until):
    """text up to the first occurrence of any stop string."""
    ends = [text.find(s) for s in until if s and s in text]
    return text[:min(ends)] if ends else text


# -----------------------------------------------------------------------------
# Running lm-eval's tasks: its TaskManager (with a local folder of YAML configs), offline

def import_harness():
    """lm-eval's evaluator and TaskManager, offline unless the environment says otherwise: the tasks'
    datasets then come from the Hugging Face cache. `datasets` reads the variables once, on import."""
    if HarnessLM is object:
        raise BridgeError("the lm_eval: tasks need the lm-eval package: pip install lm-eval")
    os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    from lm_eval import evaluator
    from lm_eval.tasks import TaskManager
    return evaluator, TaskManager


def load_tasks(tasks, task_dir=None):
    """{name: lm-eval Task} for task names (or tags and groups, expanded) found among lm-eval's tasks and
    the YAML configs under task_dir; a name it does not know or a dataset it cannot load is one line."""
    _, TaskManager = import_harness()
    if task_dir and not os.path.isdir(task_dir):
        raise BridgeError(f"lm-eval task folder not found: {task_dir}")
    manager = TaskManager(include_path=task_dir)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        where = f" or in {task_dir}" if task_dir else ''
        raise BridgeError(f"unknown lm-eval task {', '.join(unknown)}: not among lm-eval's tasks{where}")
    loaded = {}
    for name in tasks:
        try:
            loaded.update(manager.load([name])['tasks'])
        except Exception as e:  # datasets raises many kinds; the first line says what is missing
            first = (str(e).strip().splitlines() or [''])[0][:300]
            raise BridgeError(f"lm-eval task {name}: cannot load its data ({type(e).__name__}: {first}); "
                              f"offline, its dataset must be in the Hugging Face cache first "
                              f"(docs/data.md)") from None
    return loaded


def task_summary(task, metrics, samples):
    """One task's entry: acc, acc_norm (None where the task has none), n, #choices per item and chance
    (multiple choice; else None), the few-shot count, every metric lm-eval reported, and the items."""
    # lm-eval's keys are "metric,filter"; the filter is named only where it is not the plain 'none'
    values = {key[:-len(',none')] if key.endswith(',none') else key: v for key, v in metrics.items()
              if ',' in key and '_stderr' not in key and isinstance(v, (int, float))}
    multiple_choice = task.OUTPUT_TYPE == 'multiple_choice'
    items = []
    for s in sorted(samples, key=lambda s: s['doc_id']):
        item = dict(doc_id=s['doc_id'], target=s['target'])
        if multiple_choice:
            item['loglikelihoods'] = [r[0] for r in s['filtered_resps']]
        item.update({k: s[k] for k in values if k in s})
        items.append(item)
    choices = [len(i['loglikelihoods']) for i in items] if multiple_choice else None
    # the mean of 1 / #choices, summed in the order eval.score_mc sums it
    chance = sum(1 / c for c in choices) / len(choices) if choices else None
    return dict(acc=values.get('acc'), acc_norm=values.get('acc_norm'), n=len(samples), choices=choices,
                chance=chance, num_fewshot=task.get_config('num_fewshot'), metrics=values, items=items)


def evaluate_lm_eval(model, enc, tasks, limit=0, seed=0, batch_size=32, device='cpu', shots=None,
                     task_dir=None):
    """
    Run lm-eval's tasks (names, or tags and groups, expanded to their tasks) on model (an LM or a VLM,
    moved to `device`) with its tokenizer `enc`. limit: a fixed subset of that many documents per task,
    drawn with `seed` as eval.py draws its subsets (0 = all). shots: {task: few-shot count}; a task not
    in it keeps its config's (0 where it names none). task_dir: a folder of lm-eval YAML task configs
    (e.g. one whose dataset is a local JSONL), searched besides lm-eval's own.
    Returns {task: {'acc', 'acc_norm' (or None), 'n', 'choices' (#choices per item, or None), 'chance'
    (the mean of 1 / #choices, or None), 'num_fewshot', 'metrics' (every metric lm-eval reported, by name;
    "name,filter" where its filter is not 'none'), 'items' (per document: doc_id, target,
    loglikelihoods of the choices, and its metrics)}}.
    """
    evaluator, _ = import_harness()
    loaded = load_tasks(list(tasks), task_dir)
    shots = shots or {}
    samples = {}
    for name, task in loaded.items():
        task.set_config(key='num_fewshot', value=shots.get(name, task.get_config('num_fewshot') or 0))
        task.set_fewshot_seed(seed=FEWSHOT_SEED)
        n = len(task.eval_docs)
        if limit and limit < n:  # the same seed and size draw the same documents as the built-in sets
            samples[name] = subset(n, limit, seed)
    harness_model = HarnessModel(model.to(device), enc, batch_size)
    out = evaluator.evaluate(lm=harness_model, task_dict=dict(tasks=loaded, groups={}, group_map={}),
                             samples=samples or None, bootstrap_iters=0, log_samples=True)
    return {name: task_summary(task, out['results'][name], out['samples'][name])
            for name, task in loaded.items()}
