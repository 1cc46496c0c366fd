"""
Speed benchmarks, one command each, settings as --key=value (configurator.py; --help lists them).

    python bench.py attention   the Triton attention kernel against PyTorch SDPA (flash, cuDNN) and, on
                                packed rows, FlexAttention and variable-length attention, on a GPU
    python bench.py step        one training step of the text 1B and the frozen / unfrozen 1B VLM, on a GPU,
                                on dense rows or (--packed) on the mixed stage's packed rows with doc_ids
    python bench.py eval        evaluation items/s: batched VQA generation and multiple-choice scoring
                                against the same items one at a time (eval.py's paths)
    python bench.py cpu         ours vs HF transformers (decoder, SigLIP tower), shards vs JPEG, on a CPU

    python bench.py attention --dtype=fp16 --iters=10
    python bench.py step --models=text_1b,vlm_frozen_1b --batch_size=8 --compile --attention=triton
    python bench.py step --device=cpu --models=text_tiny,vlm_tiny --batch_size=1    # a smoke run
    python bench.py step --models=vlm_frozen_1b --batch_size=16 --packed=8 --attention=flex --compile
                                # the mixed stage's packed rows: 8 documents per row, images in some
    python bench.py eval --device=cpu --model=vlm_tiny --items=32    # a smoke run
    python bench.py cpu --threads=4

Results print as markdown tables. Times are CUDA-event averages after warmup.
"""
import os
import sys

import torch
import torch.nn.functional as F

import attention
import configurator

# Triton kernel vs SDPA: TFLOP/s, forward and forward+backward
ATTENTION_DEFAULTS = {
    'dtype': 'bf16',  # bf16 or fp16
    'warmup': 5,  # untimed calls first: they compile and autotune the kernels
    'iters': 20,  # timed calls, averaged
}
# one training step of the 1B models: tokens/s, step time, memory, MFU
STEP_DEFAULTS = {
    'models': 'text_1b,vlm_frozen_1b,vlm_unfrozen_1b',  # comma-separated names of STEP_MODELS
    'batch_size': 0,  # micro-batch; 0 = the largest that fits (doubling up to max_batch)
    'max_batch': 64,  # where the doubling stops
    'compile': False,  # torch.compile the model
    'activation_checkpointing': False,  # recompute the blocks' activations in the backward
    'attention': 'sdpa',  # one of attention.BACKENDS
    'packed': 0,  # documents per row, with doc_ids, as the mixed stage's rows (0 = dense rows, no doc_ids)
    'image_ratio': 0.1,  # packed VLM rows: the share of positions in image-caption samples (train.py's key)
    'device': 'cuda',  # cpu for a smoke run of the tiny models
    'warmup': 3,  # untimed steps first
    'iters': 10,  # timed steps, averaged
}
# evaluation throughput: batched VQA generation and multiple-choice scoring vs a per-item loop
EVAL_DEFAULTS = {
    'model': 'vlm_frozen_1b',  # a VLM of STEP_MODELS (vlm_tiny for a CPU run)
    'device': 'cuda',  # cpu for a smoke run of the tiny model
    'items': 64,  # VQA questions and multiple-choice items, each timed batched and one by one
    'batch_size': 32,  # the batched run's batch (eval.py's default)
    'max_new_tokens': 16,  # answer length: generation runs to it (a random model never says <|endoftext|>)
}
# ours vs HF transformers (decoder, SigLIP tower) and the shard reader vs JPEG, on the CPU
CPU_DEFAULTS = {
    'threads': 0,  # torch threads (0 = PyTorch's default)
}

# -----------------------------------------------------------------------------
# attention: the fused Triton kernel vs SDPA

# (label, B, H, T, D, causal, documents per row)
ATTENTION_SHAPES = [
    ('LM 1B: B8 H16 T2048 D128 causal', 8, 16, 2048, 128, True, 0),
    ('SigLIP so400m: B32 H16 T729 D72', 32, 16, 729, 72, False, 0),
    ('packed: B8 H16 T2048 D128 causal, 8 docs/row', 8, 16, 2048, 128, True, 8),
    ('packed SigLIP: B32 H16 T729 D72 full, 8 docs/row', 32, 16, 729, 72, False, 8),
]
def varlen_document_attention(q, k, v, causal, doc_ids):
    """PyTorch's variable-length attention (FlashAttention over cumulative document offsets), where this
    PyTorch has it: each document of each row is its own sequence. (B, H, T, D) in and out."""
    from torch.nn.attention.varlen import varlen_attn
    B, H, T, D = q.shape
    lengths = torch.cat([torch.unique_consecutive(row, return_counts=True)[1] for row in doc_ids])
    cu = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
    flat = lambda x: x.transpose(1, 2).reshape(B * T, H, D)  # (B*T, H, D): documents back to back
    try:
        out = varlen_attn(flat(q), flat(k), flat(v), cu, cu, int(lengths.max()), int(lengths.max()),
                          window_size=(-1, 0) if causal else (-1, -1))
    except TypeError as e:  # another PyTorch's signature
        raise RuntimeError(f"varlen_attn: {e}") from e
    return out.view(B, T, H, D).transpose(1, 2)


def has_varlen():
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
        return True
    except ImportError:
        return False


def attention_flops(B, H, T, D, causal):
    """Forward FLOPs of the dense (or dense causal) attention; the backward is 2.5x this."""
    return 4 * B * H * T * T * D * (0.5 if causal else 1.0)


def cuda_time_ms(fn, warmup, iters):
    for _ in range(warmup):  # the first calls compile (and autotune) the kernels
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def sdpa_backend(backend):
    """SDPA forced onto one backend (flash / cuDNN), or None where this PyTorch lacks it."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    if not hasattr(SDPBackend, backend):
        return None

    def run(q, k, v, causal, doc_ids):
        with sdpa_kernel(getattr(SDPBackend, backend)):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return run


def attention_candidates(docs):
    """(label, fn(q, k, v, causal, doc_ids)) in table order; the first is what the others are compared to."""
    triton = lambda q, k, v, causal, ids: attention.triton_attention(q, k, v, causal=causal, doc_ids=ids)
    sdpa = lambda q, k, v, causal, ids: attention.sdpa_attention(q, k, v, causal=causal, doc_ids=ids)
    flash, cudnn = sdpa_backend('FLASH_ATTENTION'), sdpa_backend('CUDNN_ATTENTION')
    if docs:
        no_docs = lambda q, k, v, causal, doc_ids: attention.triton_attention(q, k, v, causal=causal)
        flex = lambda q, k, v, causal, ids: attention.flex_attention(q, k, v, causal=causal, doc_ids=ids)
        return [('triton, doc_ids', triton), ('flex, document block mask, compiled', flex),
                ('varlen (cumulative offsets)', varlen_document_attention if has_varlen() else None),
                ('sdpa, boolean doc mask', sdpa), ('triton, no doc_ids', no_docs),
                ('sdpa flash, no doc_ids', flash), ('sdpa cuDNN, no doc_ids', cudnn)]
    return [('triton', triton), ('sdpa (its own choice)', sdpa), ('sdpa flash', flash), ('sdpa cuDNN', cudnn)]


def packed_doc_ids(B, T, docs, device):
    """docs equal contiguous documents per row: ids 0..docs-1."""
    return (torch.arange(T, device=device) * docs // T).expand(B, T).contiguous()


def check_triton_matches_sdpa(q, k, v, do, causal, doc_ids):
    """Fail loudly if the kernel and SDPA disagree on this shape (outputs and dq, dk, dv)."""
    results = []
    for fn in (attention.triton_attention, attention.sdpa_attention):
        q_, k_, v_ = (x.detach().requires_grad_() for x in (q, k, v))
        out = fn(q_, k_, v_, causal=causal, doc_ids=doc_ids)
        results.append((out, *torch.autograd.grad(out, (q_, k_, v_), do)))
    errors = {}
    for name, got, want in zip(('out', 'dq', 'dk', 'dv'), *results):
        errors[name] = ((got.float() - want.float()).abs().max() / want.float().abs().max()).item()
    print("max |triton - sdpa| / max |sdpa|: " + ", ".join(f"{n} {e:.1e}" for n, e in errors.items()))
    if max(errors.values()) > 2e-2:
        raise SystemExit(f"the Triton kernel disagrees with SDPA: {errors}")


def time_attention(fn, q, k, v, do, causal, doc_ids, settings):
    """(forward ms, forward+backward ms) of fn, or the reason it cannot run."""
    q_, k_, v_ = (x.detach().requires_grad_() for x in (q, k, v))

    def forward():
        with torch.no_grad():
            fn(q, k, v, causal, doc_ids)

    def forward_backward():
        out = fn(q_, k_, v_, causal, doc_ids)
        torch.autograd.grad(out, (q_, k_, v_), do)
    try:
        warmup, iters = settings['warmup'], settings['iters']
        return cuda_time_ms(forward, warmup, iters), cuda_time_ms(forward_backward, warmup, iters)
    except RuntimeError as e:  # e.g. SDPA has no flash / cuDNN kernel for this shape or GPU
        return str(e).strip().splitlines()[0][:100]


def bench_attention(settings):
    if not torch.cuda.is_available():
        print("bench.py attention times CUDA kernels and this machine has no CUDA device: nothing to "
              "measure. (The kernel's correctness tests run on a CPU: "
              "python -m pytest tests/test_attention_triton.py)")
        return
    import triton
    dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}[settings['dtype']]
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}, "
          f"{settings['dtype']}, {settings['warmup']} warmup + {settings['iters']} timed iterations\n")
    table = []  # (shape label, forward FLOPs, [(kernel, (fwd ms, fwd+bwd ms) or why not)])
    for label, B, H, T, D, causal, docs in ATTENTION_SHAPES:
        torch.manual_seed(0)
        q, k, v, do = (torch.randn(B, H, T, D, device='cuda', dtype=dtype) for _ in range(4))
        doc_ids = packed_doc_ids(B, T, docs, 'cuda') if docs else None
        print(f"{label}: ", end='', flush=True)
        check_triton_matches_sdpa(q, k, v, do, causal, doc_ids)
        results = [(name, time_attention(fn, q, k, v, do, causal, doc_ids, settings) if fn
                          else 'not in this PyTorch') for name, fn in attention_candidates(docs)]
        table.append((label, attention_flops(B, H, T, D, causal), results))
        del q, k, v, do
        torch.cuda.empty_cache()

    print("\nTFLOP/s count 4*B*H*T^2*D forward (half when causal; the dense causal count for packed "
          "documents too)")
    print("and 3.5x that forward+backward. 'triton speedup' = this row's time / the first row's time of "
          "its shape.\n")
    print("| shape | kernel | fwd ms | fwd TFLOP/s | fwd triton speedup | fwd+bwd ms | fwd+bwd TFLOP/s "
          "| fwd+bwd triton speedup |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, flops, results in table:
        first = results[0][1]
        for name, times in results:
            if isinstance(times, str):
                print(f"| {label} | {name} | {times} | | | | | |")
                continue
            cells = []
            for i, work in enumerate((flops, 3.5 * flops)):
                speedup = f"{times[i] / first[i]:.2f}" if not isinstance(first, str) else ''
                cells += [f"{times[i]:.3f}", f"{work / times[i] / 1e9:.0f}", speedup]
            print(f"| {label} | {name} | " + " | ".join(cells) + " |")


# -----------------------------------------------------------------------------
# step: one training step of the 1B models on a GPU (tokens/s, step time, peak memory, MFU)

STEP_MODELS = {  # name -> (LM preset, T, encoder preset or None, frozen)
    'text_1b': ('1b', 2048, None, None),
    'vlm_frozen_1b': ('1b', 1024, 'so400m-patch14-384', True),
    'vlm_unfrozen_1b': ('1b', 1024, 'so400m-patch14-384', False),
    'text_tiny': ('tiny', 256, None, None),  # CPU smoke sizes
    'vlm_tiny': ('tiny', 256, 'tiny', True),
}


CAPTION_TOKENS = 32  # the text of a packed row's image-caption sample (LAION-style captions are shorter)


def step_batch(model, name, batch_size, device, packed=0, image_ratio=0.1):
    """Random tokens in the batch of the contracts. Dense (packed 0): no doc_ids, every VLM row an image
    at its start. Packed: doc_ids of `packed` documents per row (packed_doc_ids), and as in the mixed stage
    (train.sample_row) a VLM row with an image holds one image-caption sample (document 0: <|endoftext|>,
    the image positions, the caption) and text documents after it; image rows are image_ratio of the
    positions (at least one row), the other rows text documents only."""
    lm_preset, T, vision_preset, _ = STEP_MODELS[name]
    lm = model.lm if vision_preset else model
    vocab = 50000 if lm.config.vocab_size > 50000 else 256  # below every special token's id
    input_ids = torch.randint(0, vocab, (batch_size, T), device=device)
    batch = dict(input_ids=input_ids, targets=torch.roll(input_ids, -1, 1))
    if packed:
        batch['doc_ids'] = packed_doc_ids(batch_size, T, packed, device)  # (B, T)
    if vision_preset:
        S, P = model.vision.cfg.image_size, model.num_patches
        n_img = batch_size
        if packed:
            sample = 1 + P + CAPTION_TOKENS  # positions of one image-caption sample
            n_img = min(batch_size, max(1, round(image_ratio * batch_size * T / sample)))
            # the sample is document 0; the text after it, (n_img, T - sample), documents 1 .. packed - 1
            text_docs = packed_doc_ids(n_img, T - sample, max(1, packed - 1), device)
            batch['doc_ids'][:n_img] = 0
            batch['doc_ids'][:n_img, sample:] = 1 + text_docs
        batch['input_ids'][:n_img, 1:1 + P] = model.image_id  # <|endoftext|> + image positions + text
        batch['targets'][:n_img, :P] = -100
        has_image = torch.arange(batch_size, device=device) < n_img  # (B,)
        images = torch.randint(0, 256, (batch_size, S, S, 3), dtype=torch.uint8, device=device)
        batch['images'] = images * has_image[:, None, None, None]  # zeros without an image, as train.collate
        batch['has_image'] = has_image
    return batch


def build_step_model(name, device, compile_model, checkpointing):
    from model import LM, VLM, checkpoint_activations, lm_config
    from vision import PRESETS
    lm_preset, T, vision_preset, frozen = STEP_MODELS[name]
    cfg = lm_config(lm_preset, block_size=T)
    # initialise on the device: a 1B model's init on a CPU takes longer than its timing
    with torch.device(device):
        if vision_preset:
            model = VLM(cfg, PRESETS[vision_preset], projector='mlp2',
                        image_id=50257 if cfg.vocab_size > 50000 else 257, freeze_vision=frozen)
            if frozen and device.startswith('cuda'):
                model.vision.to(torch.bfloat16)  # a frozen encoder is held in bf16, as train.py does
        else:
            model = LM(cfg)
    model.train()
    if checkpointing:
        checkpoint_activations(model)
    step_module = torch.compile(model) if compile_model else model
    return model, step_module


def time_steps(name, batch_size, settings, device):
    """Forward + backward + AdamW at this micro-batch: the model, mean step time (s), peak memory (GB),
    the images in the batch, and with compile the graphs dynamo made and its graph breaks (else None)."""
    if settings['compile']:  # (only then: dynamo imports Triton, and TRITON_INTERPRET must be set first)
        from torch._dynamo.utils import counters
        torch._dynamo.reset()  # count this model's graphs only (largest_batch builds one model per size)
        counters.clear()
    model, module = build_step_model(name, device, settings['compile'], settings['activation_checkpointing'])
    cuda = device.startswith('cuda')
    optimizer = model.configure_optimizers(0.033, 1e-4, (0.9, 0.95), 1e-8, 'cuda' if cuda else 'cpu')
    batch = step_batch(model, name, batch_size, device, settings['packed'], settings['image_ratio'])
    autocast = torch.autocast('cuda', dtype=torch.bfloat16) if cuda else torch.autocast('cpu', enabled=False)

    def step():
        extra = {k: batch[k] for k in ('doc_ids', 'images', 'has_image') if k in batch}
        with autocast:
            _, loss = module(batch['input_ids'], batch['targets'], **extra)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if device.startswith('cuda'):
        torch.cuda.reset_peak_memory_stats()
        seconds = cuda_time_ms(step, settings['warmup'], settings['iters']) / 1e3
        memory = torch.cuda.max_memory_allocated() / 1e9
    else:
        import time
        for _ in range(settings['warmup']):
            step()
        t0 = time.perf_counter()
        for _ in range(settings['iters']):
            step()
        seconds, memory = (time.perf_counter() - t0) / settings['iters'], float('nan')
    images = int(batch['has_image'].sum()) if 'has_image' in batch else 0
    # the batch is the same at every step, so these are one forward's graphs (a new batch shape or number
    # of images could add some); every break splits the forward and backward graphs
    graphs = None
    if settings['compile']:
        graphs = (counters['stats']['unique_graphs'], sum(counters['graph_break'].values()))
    return model, seconds, memory, images, graphs


def largest_batch(name, settings, device):
    """Double the micro-batch until it no longer fits; the last one that ran, and its timing."""
    best, batch_size = None, 1
    while batch_size <= settings['max_batch']:
        try:
            best = (batch_size,) + time_steps(name, batch_size, settings, device)
        except torch.OutOfMemoryError:
            break
        finally:
            if device.startswith('cuda'):
                torch.cuda.empty_cache()
        batch_size *= 2
    return best


def bench_step(settings):
    from model import VLM, estimate_mfu
    attention.set_backend(settings['attention'])
    device = settings['device']
    if device.startswith('cuda') and not torch.cuda.is_available():
        print("bench.py step: no CUDA device here; run it on a GPU "
              "(or --device=cpu --models=text_tiny,vlm_tiny for a smoke run)")
        return
    device_name = torch.cuda.get_device_name() if device.startswith('cuda') else 'cpu'
    precision = 'bf16 autocast' if device.startswith('cuda') else 'fp32'
    rows = (f"packed, {settings['packed']} documents per row (doc_ids); VLM rows with an image: "
            f"image_ratio {settings['image_ratio']} of the positions" if settings['packed']
            else "dense (no doc_ids; every VLM row an image)")
    print(f"training step on {device_name}: {precision}, AdamW; compile={settings['compile']}, "
          f"activation checkpointing={settings['activation_checkpointing']}, "
          f"attention={settings['attention']}; rows {rows}")
    print("FLOPs count dense causal attention over T, documents or not; graphs (breaks): what torch.compile "
          "made of one forward\n")
    print("| model | T | micro-batch | images | step (ms) | tokens/s | peak mem (GB) | TFLOP/s | MFU "
          "| graphs (breaks) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in settings['models'].split(','):
        T = STEP_MODELS[name][1]
        if settings['batch_size']:
            batch_size = settings['batch_size']
            model, seconds, memory, images, graphs = time_steps(name, batch_size, settings, device)
        else:
            found = largest_batch(name, settings, device)
            if found is None:
                print(f"| {name} | {T} | does not fit | | | | | | | |")
                continue
            batch_size, model, seconds, memory, images, graphs = found
        tokens = batch_size * T
        if isinstance(model, VLM):
            flops = model.flops_per_step(tokens, images, T)  # a frozen encoder counts its forward only
        else:
            flops = model.flops_per_token(T) * tokens
        mfu = estimate_mfu(flops / tokens, tokens / seconds, device_name)
        mfu_text = f"{mfu * 100:.1f}%" if mfu is not None else "unknown peak"
        graphs_text = f"{graphs[0]} ({graphs[1]})" if graphs else "-"
        print(f"| {name} | {T} | {batch_size} | {images} | {seconds * 1e3:.1f} | {tokens / seconds:,.0f} | "
              f"{memory:.1f} | {flops / seconds / 1e12:.1f} | {mfu_text} | {graphs_text} |")
        del model


# -----------------------------------------------------------------------------
# cpu: ours against HF transformers on this machine (same shapes, same weights), and the shard reader

# -----------------------------------------------------------------------------
# evaluation: items/s of eval.py's batched paths against the same work one item at a time

def eval_items(model, n, seed=0):
    """n VQA items with random images (as eval.py's readers give them, images already decoded) and n
    4-way multiple-choice items of ARC-easy's length."""
    import numpy as np
    rng = np.random.default_rng(seed)
    S = model.vision.cfg.image_size
    vqa = [dict(question_id=i, question=f"What color is the object number {i} in the picture?",
                image=rng.integers(0, 256, (S, S, 3), dtype=np.uint8)) for i in range(n)]
    mc = [dict(query=f"Question: Which of these is needed for a plant number {i} to grow?\nAnswer:",
               choices=['sunlight and water', 'a small rock', 'cold metal', 'loud music'], gold=0)
          for i in range(n)]
    return vqa, mc


def bench_eval(settings):
    """eval.generate_batch and model.loglikelihoods at batch_size, against batch size 1: both read
    the same items, so the ratio is what batching buys (the 'bytes' tokenizer: no download)."""
    import time

    import numpy as np

    import eval as ev
    from tokenizer import TOKENIZERS, get_tokenizer, vqa_prompt
    device = settings['device']
    if device.startswith('cuda') and not torch.cuda.is_available():
        print("no CUDA device: run bench.py eval on a GPU, or with --device=cpu --model=vlm_tiny")
        return []
    model, _ = build_step_model(settings['model'], device, False, False)
    model.eval()
    enc, eot = get_tokenizer('bytes'), TOKENIZERS['bytes']['eot_id']
    vqa, mc = eval_items(model, settings['items'])
    prompts = [vqa_prompt(enc, it['question'], model.num_patches) for it in vqa]
    images = torch.from_numpy(np.stack([it['image'] for it in vqa]))  # (N, S, S, 3) uint8

    def generate(bs):
        for i in range(0, len(vqa), bs):
            ev.generate_batch(model, prompts[i:i + bs], images[i:i + bs].to(device),
                              settings['max_new_tokens'], eot)

    def score(bs):
        ev.mc_loglikelihoods(model.lm, enc, mc, bs, desc='bench')

    rows = []
    for name, fn in (('VQA generation', generate), ('multiple-choice scoring', score)):
        timings = {}
        for bs in (settings['batch_size'], 1):
            with torch.no_grad(), torch.autocast('cuda', torch.bfloat16, enabled=device.startswith('cuda')):
                fn(bs)  # warm-up: kernels, caches
                if device.startswith('cuda'):
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                fn(bs)
                if device.startswith('cuda'):
                    torch.cuda.synchronize()
            timings[bs] = len(vqa) / (time.perf_counter() - t0)
        rows.append((name, timings[settings['batch_size']], timings[1]))
    where = (torch.cuda.get_device_name(device) if device.startswith('cuda')
             else f'CPU, {torch.get_num_threads()} threads')
    print(f"{settings['model']} on {where}, {settings['items']} items, "
          f"{settings['max_new_tokens']} new tokens\n")
    print(f"| path | batched ({settings['batch_size']}) items/s | one by one items/s | ratio |")
    print("|---|---|---|---|")
    for name, batched, single in rows:
        print(f"| {name} | {batched:.1f} | {single:.1f} | {batched / single:.2f} |")
    return rows


def cpu_time(fn, warmup=2, iters=5):
    import time
    for _ in range(warmup):
        fn()
    best = float('inf')
    for _ in range(iters):  # best of n: the least disturbed by other processes
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_cpu_decoder(settings):
    """Our decoder vs an HF Llama of the same shape, forward + backward. Llama has no qk-norm: we also time
    ours without it (the norms replaced by identities) to show what qk-norm costs."""
    import transformers
    from model import LM, LMConfig, swiglu_hidden
    d, L, H, V, T, B = 256, 4, 4, 320, 256, 8
    torch.manual_seed(0)
    ours = LM(LMConfig(vocab_size=V, block_size=T, n_layer=L, n_head=H, n_embd=d))
    llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=V, hidden_size=d, intermediate_size=swiglu_hidden(d), num_hidden_layers=L,
        num_attention_heads=H, num_key_value_heads=H, max_position_embeddings=T, tie_word_embeddings=False,
        attn_implementation='sdpa'))
    idx = torch.randint(0, V, (B, T))

    def ours_step():
        _, loss = ours(idx, idx)
        loss.backward()

    def llama_step():
        llama(input_ids=idx, labels=idx).loss.backward()

    t_ours, t_llama = cpu_time(ours_step), cpu_time(llama_step)
    norms = [(b.attention, b.attention.q_norm, b.attention.k_norm) for b in ours.layers]
    for attn, _, _ in norms:
        attn.q_norm, attn.k_norm = torch.nn.Identity(), torch.nn.Identity()
    t_plain = cpu_time(ours_step)
    for attn, q, k in norms:
        attn.q_norm, attn.k_norm = q, k
    return [('decoder fwd+bwd (d 256, 4 layers, B 8, T 256)', t_ours, 'HF Llama', t_llama),
            ('decoder without qk-norm (its cost)', t_plain, 'ours with qk-norm', t_ours)]


def bench_cpu_tower(settings, tmp):
    """Our SigLIP tower vs HF's SiglipVisionModel with the same weights (so400m shape, 4 blocks, 224 px)."""
    import transformers
    from vision import load_siglip
    cfg = transformers.SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_hidden_layers=4,
                                          num_attention_heads=16, image_size=224, patch_size=14)
    torch.manual_seed(0)
    hf = transformers.SiglipVisionModel(cfg).eval()
    hf.save_pretrained(tmp)
    ours = load_siglip(tmp, feature_layer=-1)
    pixels = torch.randn(4, 3, 224, 224)
    with torch.no_grad():
        difference = (ours(pixels) - hf(pixel_values=pixels).last_hidden_state).abs().max().item()
        t_ours = cpu_time(lambda: ours(pixels))
        t_hf = cpu_time(lambda: hf(pixel_values=pixels))
    return [(f'SigLIP tower fwd (so400m shape, 4 blocks, B 4, 224 px; max abs diff {difference:.1e})', t_ours,
             'HF SiglipVisionModel', t_hf)]


def bench_cpu_reader(settings, tmp):
    """Random access into prepared image shards vs decoding the same JPEGs with PIL and resizing them."""
    import json

    import numpy as np
    from PIL import Image
    from prepare_data import prepare_images
    from shards import ImageShards
    from vision import preprocess
    rng = np.random.default_rng(0)
    folder = os.path.join(tmp, 'jpegs')
    os.makedirs(folder, exist_ok=True)
    n = 200
    with open(os.path.join(folder, 'captions.jsonl'), 'w') as f:
        for i in range(n):
            # smooth colour fields with noise: JPEG sizes like photographs', not like pure noise
            base = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)
            img = np.asarray(Image.fromarray(base).resize((640, 480), Image.BICUBIC))
            img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(os.path.join(folder, f'{i}.jpg'), quality=90)
            f.write(json.dumps({'image': f'{i}.jpg', 'caption': f'picture {i}'}) + '\n')
    out = os.path.join(tmp, 'shards')
    prepare_images('captions', [os.path.join(folder, 'captions.jsonl')], out, tokenizer='bytes',
                   image_size=384, image_positions=729, val_fraction=0.0, workers=1)
    shards = ImageShards(out)
    order = rng.permutation(len(shards))
    paths = [os.path.join(folder, f'{i}.jpg') for i in order]
    t_reader = cpu_time(lambda: [np.array(shards[int(i)]['image']) for i in order]) / len(order)
    t_jpeg = cpu_time(lambda: [preprocess(p, 384) for p in paths], warmup=1, iters=2) / len(paths)
    return [('image shard random access, per 384 px image (copied out)', t_reader,
             'JPEG decode + resize (PIL)', t_jpeg)]


def bench_cpu(settings):
    import tempfile
    if settings['threads']:
        torch.set_num_threads(settings['threads'])
    rows = bench_cpu_decoder(settings)
    with tempfile.TemporaryDirectory() as tmp:
        rows += bench_cpu_tower(settings, os.path.join(tmp, 'tower'))
    with tempfile.TemporaryDirectory() as tmp:
        rows += bench_cpu_reader(settings, tmp)
    print(f"CPU, {torch.get_num_threads()} threads, best of 5 "
          f"(ratio = ours / theirs, time: below 1 is faster)\n")
    print("| ours | time | theirs | time | ratio |")
    print("|---|---|---|---|---|")
    for ours, t_ours, theirs, t_theirs in rows:
        print(f"| {ours} | {fmt_seconds(t_ours)} | {theirs} | {fmt_seconds(t_theirs)} | "
              f"{t_ours / t_theirs:.3f} |")


def fmt_seconds(s):
    return f"{s * 1e3:.1f} ms" if s >= 1e-3 else f"{s * 1e6:.0f} µs"


# -----------------------------------------------------------------------------

def check_settings(command, settings):
    """One line naming the first setting out of range, or None."""
    if settings.get('dtype', 'bf16') not in ('bf16', 'fp16'):
        return f"--dtype must be bf16 or fp16, got {settings['dtype']!r}"
    if settings.get('warmup', 0) < 0 or settings.get('iters', 1) < 1:
        return f"--warmup must be >= 0 and --iters >= 1, got {settings['warmup']} and {settings['iters']}"
    if command == 'step':
        unknown = [m for m in settings['models'].split(',') if m not in STEP_MODELS]
        if unknown:
            return f"--models: unknown {', '.join(map(repr, unknown))}; known: {', '.join(STEP_MODELS)}"
        if settings['attention'] not in attention.BACKENDS:
            return (f"--attention must be one of {', '.join(attention.BACKENDS)}, "
                    f"got {settings['attention']!r}")
        if settings['batch_size'] < 0 or settings['max_batch'] < 1:
            return "--batch_size must be >= 0 (0 = the largest that fits) and --max_batch >= 1"
        if not 0 <= settings['packed'] <= 64:
            return f"--packed must be 0 (dense rows) to 64 documents per row, got {settings['packed']}"
        if not 0 < settings['image_ratio'] <= 1:
            return f"--image_ratio must be in (0, 1], got {settings['image_ratio']}"
        if settings['attention'] == 'flex' and settings['compile'] and settings['device'] == 'cpu':
            return (f"--attention=flex with --compile needs a GPU: FlexAttention in PyTorch "
                    f"{torch.__version__} has no compiled backward on a CPU (eager flex runs there)")
    if command == 'eval':
        if settings['model'] not in STEP_MODELS or STEP_MODELS[settings['model']][2] is None:
            return f"--model must be a VLM of {', '.join(m for m in STEP_MODELS if m.startswith('vlm'))}"
        if min(settings['items'], settings['batch_size'], settings['max_new_tokens']) < 1:
            return "--items, --batch_size and --max_new_tokens must be >= 1"
    if settings.get('threads', 0) < 0:
        return f"--threads must be >= 0 (0 = PyTorch's default), got {settings['threads']}"
    return None


def main(argv=None):
    commands = {'attention': ATTENTION_DEFAULTS, 'step': STEP_DEFAULTS, 'eval': EVAL_DEFAULTS,
                'cpu': CPU_DEFAULTS}
    argv = sys.argv[1:] if argv is None else list(argv)
    if '--help' in argv or '-h' in argv:
        print(__doc__)  # what each command measures; configurator lists the commands or keys after it
    command, settings = configurator.parse_command(commands, argv, 'bench.py')
    problem = check_settings(command, settings)
    if problem:
        sys.exit(f"config error: {problem}")
    if command == 'attention':
        bench_attention(settings)
    elif command == 'step':
        bench_step(settings)
    elif command == 'eval':
        bench_eval(settings)
    else:
        bench_cpu(settings)


if __name__ == "__main__":
    main()
