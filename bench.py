"""
Speed benchmarks, one subcommand each.

    python bench.py attention     the Triton attention kernel against PyTorch SDPA (flash, cuDNN), on a GPU
    python bench.py step          one training step of the text 1B and the frozen / unfrozen 1B VLM, on a GPU
    python bench.py cpu           ours vs HF transformers (decoder, SigLIP tower), shard reader vs JPEG, on the CPU

Results print as markdown tables. Times are CUDA-event averages after warmup.
"""
import argparse
import os

import torch
import torch.nn.functional as F

import attention

# -----------------------------------------------------------------------------
# attention: the fused Triton kernel vs SDPA

# (label, B, H, T, D, causal, documents per row)
ATTENTION_SHAPES = [
    ('LM 1B: B8 H16 T2048 D128 causal', 8, 16, 2048, 128, True, 0),
    ('SigLIP so400m: B32 H16 T729 D72', 32, 16, 729, 72, False, 0),
    ('packed: B8 H16 T2048 D128 causal, 8 docs/row', 8, 16, 2048, 128, True, 8),
]


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
    triton = lambda q, k, v, causal, doc_ids: attention.triton_attention(q, k, v, causal=causal, doc_ids=doc_ids)
    sdpa = lambda q, k, v, causal, doc_ids: attention.sdpa_attention(q, k, v, causal=causal, doc_ids=doc_ids)
    flash, cudnn = sdpa_backend('FLASH_ATTENTION'), sdpa_backend('CUDNN_ATTENTION')
    if docs:
        no_docs = lambda q, k, v, causal, doc_ids: attention.triton_attention(q, k, v, causal=causal)
        return [('triton, doc_ids', triton), ('triton, no doc_ids', no_docs), ('sdpa, boolean doc mask', sdpa),
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


def time_attention(fn, q, k, v, do, causal, doc_ids, args):
    """(forward ms, forward+backward ms) of fn, or the reason it cannot run."""
    q_, k_, v_ = (x.detach().requires_grad_() for x in (q, k, v))

    def forward():
        with torch.no_grad():
            fn(q, k, v, causal, doc_ids)

    def forward_backward():
        out = fn(q_, k_, v_, causal, doc_ids)
        torch.autograd.grad(out, (q_, k_, v_), do)
    try:
        return cuda_time_ms(forward, args.warmup, args.iters), cuda_time_ms(forward_backward, args.warmup, args.iters)
    except RuntimeError as e:  # e.g. SDPA has no flash / cuDNN kernel for this shape or GPU
        return str(e).strip().splitlines()[0][:100]


def bench_attention(args):
    if not torch.cuda.is_available():
        print("bench.py attention times CUDA kernels and this machine has no CUDA device: nothing to measure. "
              "(The kernel's correctness tests run on a CPU: python -m pytest tests/test_attention_triton.py)")
        return
    import triton
    dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}[args.dtype]
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}, {args.dtype}, "
          f"{args.warmup} warmup + {args.iters} timed iterations\n")
    table = []  # (shape label, forward FLOPs, [(kernel, (fwd ms, fwd+bwd ms) or why not)])
    for label, B, H, T, D, causal, docs in ATTENTION_SHAPES:
        torch.manual_seed(0)
        q, k, v, do = (torch.randn(B, H, T, D, device='cuda', dtype=dtype) for _ in range(4))
        doc_ids = packed_doc_ids(B, T, docs, 'cuda') if docs else None
        print(f"{label}: ", end='', flush=True)
        check_triton_matches_sdpa(q, k, v, do, causal, doc_ids)
        results = [(name, time_attention(fn, q, k, v, do, causal, doc_ids, args) if fn else 'not in this PyTorch')
                   for name, fn in attention_candidates(docs)]
        table.append((label, attention_flops(B, H, T, D, causal), results))
        del q, k, v, do
        torch.cuda.empty_cache()

    print("\nTFLOP/s count 4*B*H*T^2*D forward (half when causal; the dense causal count for packed documents too)")
    print("and 3.5x that forward+backward. 'triton speedup' = this row's time / the first row's time of its shape.\n")
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


def step_batch(model, name, batch_size, device):
    lm_preset, T, vision_preset, _ = STEP_MODELS[name]
    lm = model.lm if vision_preset else model
    input_ids = torch.randint(0, 50000 if lm.config.vocab_size > 50000 else 256, (batch_size, T), device=device)
    batch = dict(input_ids=input_ids, targets=torch.roll(input_ids, -1, 1))
    if vision_preset:
        S, P = model.vision.cfg.image_size, model.num_patches
        batch['input_ids'][:, 1:1 + P] = model.image_id  # <|endoftext|> + image positions + text
        batch['targets'][:, :P] = -100
        batch['images'] = torch.randint(0, 256, (batch_size, S, S, 3), dtype=torch.uint8, device=device)
        batch['has_image'] = torch.ones(batch_size, dtype=torch.bool, device=device)
    return batch


def build_step_model(name, device, compile_model, checkpointing):
    from model import LM, VLM, checkpoint_activations, lm_config
    from vision import PRESETS
    lm_preset, T, vision_preset, frozen = STEP_MODELS[name]
    cfg = lm_config(lm_preset, block_size=T)
    with torch.device(device):  # initialise on the device: a 1B model's init on a CPU takes longer than its timing
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


def time_steps(name, batch_size, args, device):
    """Mean step time (s) and peak memory (GB) of forward + backward + AdamW at this micro-batch."""
    model, module = build_step_model(name, device, args.compile, args.activation_checkpointing)
    optimizer = model.configure_optimizers(0.033, 1e-4, (0.9, 0.95), 1e-8, 'cuda' if device.startswith('cuda') else 'cpu')
    batch = step_batch(model, name, batch_size, device)
    autocast = torch.autocast('cuda', dtype=torch.bfloat16) if device.startswith('cuda') else torch.autocast('cpu', enabled=False)

    def step():
        extra = {k: batch[k] for k in ('images', 'has_image') if k in batch}
        with autocast:
            _, loss = module(batch['input_ids'], batch['targets'], **extra)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if device.startswith('cuda'):
        torch.cuda.reset_peak_memory_stats()
        seconds = cuda_time_ms(step, args.warmup, args.iters) / 1e3
        memory = torch.cuda.max_memory_allocated() / 1e9
    else:
        import time
        for _ in range(args.warmup):
            step()
        t0 = time.perf_counter()
        for _ in range(args.iters):
            step()
        seconds, memory = (time.perf_counter() - t0) / args.iters, float('nan')
    return model, seconds, memory


def largest_batch(name, args, device):
    """Double the micro-batch until it no longer fits; the last one that ran, and its timing."""
    best, batch_size = None, 1
    while batch_size <= args.max_batch:
        try:
            best = (batch_size,) + time_steps(name, batch_size, args, device)
        except torch.OutOfMemoryError:
            break
        finally:
            if device.startswith('cuda'):
                torch.cuda.empty_cache()
        batch_size *= 2
    return best


def bench_step(args):
    from model import VLM, estimate_mfu
    attention.set_backend(args.attention)
    device = args.device
    if device.startswith('cuda') and not torch.cuda.is_available():
        print("bench.py step: no CUDA device here; run it on a GPU (or --device cpu --models text_tiny,vlm_tiny for a smoke run)")
        return
    device_name = torch.cuda.get_device_name() if device.startswith('cuda') else 'cpu'
    precision = 'bf16 autocast' if device.startswith('cuda') else 'fp32'
    print(f"training step on {device_name}: {precision}, AdamW; compile={args.compile}, "
          f"activation checkpointing={args.activation_checkpointing}, attention={args.attention}\n")
    print("| model | T | micro-batch | step (ms) | tokens/s | peak mem (GB) | TFLOP/s | MFU |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models.split(','):
        T = STEP_MODELS[name][1]
        if args.batch_size:
            batch_size, (model, seconds, memory) = args.batch_size, time_steps(name, args.batch_size, args, device)
        else:
            found = largest_batch(name, args, device)
            if found is None:
                print(f"| {name} | {T} | does not fit | | | | | |")
                continue
            batch_size, model, seconds, memory = found
        tokens = batch_size * T
        if isinstance(model, VLM):
            flops = model.flops_per_step(tokens, batch_size, T)  # a frozen encoder counts its forward only
        else:
            flops = model.flops_per_token(T) * tokens
        mfu = estimate_mfu(flops / tokens, tokens / seconds, device_name)
        mfu_text = f"{mfu * 100:.1f}%" if mfu is not None else "unknown peak"
        print(f"| {name} | {T} | {batch_size} | {seconds * 1e3:.1f} | {tokens / seconds:,.0f} | {memory:.1f} | "
              f"{flops / seconds / 1e12:.1f} | {mfu_text} |")
        del model


# -----------------------------------------------------------------------------
# cpu: ours against HF transformers on this machine (same shapes, same weights), and the shard reader

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


def bench_cpu_decoder(args):
    """Our decoder vs an HF Llama of the same shape, forward + backward. Llama has no qk-norm: we also time
    ours without it (the norms replaced by identities) to show what qk-norm costs."""
    import transformers
    from model import LM, LMConfig, swiglu_hidden
    d, L, H, V, T, B = 256, 4, 4, 320, 256, 8
    torch.manual_seed(0)
    ours = LM(LMConfig(vocab_size=V, block_size=T, n_layer=L, n_head=H, n_embd=d))
    llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=V, hidden_size=d, intermediate_size=swiglu_hidden(d), num_hidden_layers=L, num_attention_heads=H,
        num_key_value_heads=H, max_position_embeddings=T, tie_word_embeddings=False, attn_implementation='sdpa'))
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


def bench_cpu_tower(args, tmp):
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


def bench_cpu_reader(args, tmp):
    """Random access into prepared image shards vs decoding the same JPEGs with PIL and resizing them."""
    import json

    import numpy as np
    from PIL import Image
    from prepare_data import ImageShards, prepare_images
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
    prepare_images('captions', [os.path.join(folder, 'captions.jsonl')], out, tokenizer='bytes', image_size=384,
                   image_positions=729, val_fraction=0.0, workers=1)
    shards = ImageShards(out)
    order = rng.permutation(len(shards))
    paths = [os.path.join(folder, f'{i}.jpg') for i in order]
    t_reader = cpu_time(lambda: [np.array(shards[int(i)]['image']) for i in order]) / len(order)
    t_jpeg = cpu_time(lambda: [preprocess(p, 384) for p in paths], warmup=1, iters=2) / len(paths)
    return [('image shard random access, per 384 px image (copied out)', t_reader, 'JPEG decode + resize (PIL)', t_jpeg)]


def bench_cpu(args):
    import tempfile
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = bench_cpu_decoder(args)
    with tempfile.TemporaryDirectory() as tmp:
        rows += bench_cpu_tower(args, os.path.join(tmp, 'tower'))
    with tempfile.TemporaryDirectory() as tmp:
        rows += bench_cpu_reader(args, tmp)
    print(f"CPU, {torch.get_num_threads()} threads, best of 5 (ratio = ours / theirs, time: below 1 is faster)\n")
    print("| ours | time | theirs | time | ratio |")
    print("|---|---|---|---|---|")
    for ours, t_ours, theirs, t_theirs in rows:
        print(f"| {ours} | {fmt_seconds(t_ours)} | {theirs} | {fmt_seconds(t_theirs)} | {t_ours / t_theirs:.3f} |")


def fmt_seconds(s):
    return f"{s * 1e3:.1f} ms" if s >= 1e-3 else f"{s * 1e6:.0f} µs"


# -----------------------------------------------------------------------------

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="speed benchmarks")
    commands = parser.add_subparsers(dest='command', required=True)
    p = commands.add_parser('attention', help="Triton attention kernel vs SDPA: TFLOP/s, forward and forward+backward")
    p.add_argument('--dtype', choices=['bf16', 'fp16'], default='bf16')
    p.add_argument('--warmup', type=int, default=5)
    p.add_argument('--iters', type=int, default=20)
    p = commands.add_parser('step', help="one training step of the 1B models: tokens/s, step time, memory, MFU")
    p.add_argument('--models', default='text_1b,vlm_frozen_1b,vlm_unfrozen_1b', help=f"comma-separated: {', '.join(STEP_MODELS)}")
    p.add_argument('--batch_size', type=int, default=0, help="micro-batch; 0 = the largest that fits (doubling)")
    p.add_argument('--max_batch', type=int, default=64)
    p.add_argument('--compile', action='store_true')
    p.add_argument('--activation_checkpointing', action='store_true')
    p.add_argument('--attention', choices=attention.BACKENDS, default='sdpa')
    p.add_argument('--device', default='cuda')
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--iters', type=int, default=10)
    p = commands.add_parser('cpu', help="ours vs HF transformers (decoder, SigLIP tower) and the shard reader vs JPEG, on the CPU")
    p.add_argument('--threads', type=int, default=0, help="torch threads (0 = PyTorch's default)")
    args = parser.parse_args()
    if args.command == 'attention':
        bench_attention(args)
    elif args.command == 'step':
        bench_step(args)
    else:
        bench_cpu(args)
