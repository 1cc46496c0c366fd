"""
The one attention entry point used by the decoder (model.py) and the encoder (vision.py).

    attention(q, k, v, causal=True, doc_ids=None)   q, k, v: (B, H, T, D)

Backends, chosen by the module-level BACKEND (train.py sets it from the config key `attention`):
  'sdpa'   torch.nn.functional.scaled_dot_product_attention (flash / cuDNN / math, PyTorch picks)
  'triton' the fused Triton kernel (forward + backward, FlashAttention-2 style); Triton is imported
           only when it is chosen or called, so the CPU paths run where Triton has no wheels (macOS, Windows);
           without a GPU its kernels run in Triton's interpreter on CPU tensors (slow: for tests)
  'flex'   torch.nn.attention.flex_attention with a block mask made from causal and doc_ids (the library
           a user would pick for packed documents; bench.py compares it with ours); fused kernels on a
           GPU, PyTorch's unfused implementation on a CPU

Semantics shared by every backend and by `reference_attention`:
  - causal with fewer queries than keys (decoding with a KV cache) is aligned bottom-right:
    query i sees keys j <= i + (Tk - Tq);
  - doc_ids (B, Tk) int: a token attends only to tokens with the same id (packed documents);
    with Tq < Tk the queries take the last Tq ids.
"""
from __future__ import annotations  # kernel signatures say `tl.constexpr` before Triton is imported

import inspect
import math
import os
import sys

import torch
import torch.nn.functional as F

BACKEND = 'sdpa'
BACKENDS = ('sdpa', 'triton', 'flex')


def set_backend(name):
    global BACKEND
    if name not in BACKENDS:
        raise ValueError(f"attention backend must be one of {BACKENDS}, got {name!r}")
    if name == 'triton':
        # import Triton now, not at the first call: in a compiled model that call is traced, and the import
        # there breaks the graph in every frame up the stack (10 breaks in the tiny VLM's forward, not 0)
        _load_triton()
    BACKEND = name


def attention_mask(Tq, Tk, causal, doc_ids, device):
    """Boolean mask, True = may attend: (Tq, Tk), or (B, 1, Tq, Tk) with doc_ids. None if all True."""
    mask = None
    if causal:
        q_pos = torch.arange(Tk - Tq, Tk, device=device)
        mask = q_pos[:, None] >= torch.arange(Tk, device=device)[None, :]  # (Tq, Tk)
    if doc_ids is not None:
        same_doc = doc_ids[:, -Tq:, None] == doc_ids[:, None, :]  # (B, Tq, Tk)
        mask = same_doc if mask is None else same_doc & mask
        mask = mask[:, None]  # (B, 1, Tq, Tk), broadcast over heads
    return mask


def reference_attention(q, k, v, causal=True, doc_ids=None):
    """Plain PyTorch attention in fp32: the definition every backend is tested against."""
    Tq, Tk, D = q.size(-2), k.size(-2), q.size(-1)
    scores = (q.float() @ k.float().transpose(-2, -1)) / math.sqrt(D)  # (B, H, Tq, Tk)
    mask = attention_mask(Tq, Tk, causal, doc_ids, q.device)
    if mask is not None:
        scores = scores.masked_fill(~mask, float('-inf'))
    return (scores.softmax(dim=-1) @ v.float()).to(q.dtype)


def sdpa_attention(q, k, v, causal=True, doc_ids=None):
    Tq, Tk = q.size(-2), k.size(-2)
    if doc_ids is None and (not causal or Tq == Tk):
        # the fast path: no explicit mask lets PyTorch pick its flash / cuDNN kernels
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    mask = attention_mask(Tq, Tk, causal, doc_ids, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def attention(q, k, v, causal=True, doc_ids=None):
    if doc_ids is not None and doc_ids.shape != (k.size(0), k.size(2)):
        raise ValueError(f"doc_ids must be (B, Tk) = {(k.size(0), k.size(2))}, got {tuple(doc_ids.shape)}")
    if BACKEND in ('triton', 'flex'):
        if torch.is_autocast_enabled(q.device.type):
            # SDPA casts under autocast; these kernels want one dtype (qk-norm leaves q, k in fp32, v in bf16)
            dtype = torch.get_autocast_dtype(q.device.type)
            q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
        backend = triton_attention if BACKEND == 'triton' else flex_attention
        return backend(q, k, v, causal=causal, doc_ids=doc_ids)
    return sdpa_attention(q, k, v, causal=causal, doc_ids=doc_ids)


# -----------------------------------------------------------------------------
# The FlexAttention backend: torch.nn.attention.flex_attention with a block mask (blocks of 128 x 128
# that nobody may see are skipped, the others masked elementwise by the same rule as attention_mask).
#
# Where it runs how, in PyTorch 2.13:
#   - CUDA, eager model: through torch.compile(flex_attention), as its documentation advises (called
#     uncompiled it materialises the whole score matrix);
#   - CUDA or CPU inside a compiled model: the plain function, which the model's compile traces and fuses;
#   - CPU, eager: PyTorch has no FlexAttention backward on a CPU. Its public function refuses inputs that
#     require grad and the compiled CPU backward fails in Inductor, so with gradients the backend calls the
#     operator that the public function calls after its checks (FlexAttention's own unfused
#     implementation, whose autograd is device-independent): the model trains on a CPU with flex and the
#     tests compare its gradients with the reference. A compiled model that trains with flex on a CPU
#     runs it so too, outside its graphs (a graph break at every call).
#
# The block mask costs a pass over B x Tq x Tk. The decoder calls attention once per layer with the same
# doc_ids tensor, so the last mask is kept and reused when called again with that very tensor object,
# unchanged (the same _version: every in-place write through PyTorch bumps it, views share it). Writes that
# bypass PyTorch (into a NumPy array sharing the memory, through .data) are not seen: make a new tensor.
# Inside a compiled model the mask is made in the graph at every call (no Python state to guard on).

_FLEX_LAST = [None]  # [(key, doc_ids, doc_ids._version, block mask)]: the last block mask made eagerly
_FLEX_COMPILED = []  # [torch.compile(flex_attention)], made on first use on CUDA


def flex_block_mask(Tq, Tk, causal, doc_ids, device):
    """FlexAttention's BlockMask for attention_mask's rule (causal aligned bottom-right, doc_ids (B, Tk)
    with the queries taking the last Tq ids), or None when every query sees every key."""
    from torch.nn.attention.flex_attention import create_block_mask
    if not causal and doc_ids is None:
        return None
    off = Tk - Tq

    def may_attend(b, h, q_idx, kv_idx):  # scalar indices (vmapped by create_block_mask)
        if doc_ids is None:
            return q_idx + off >= kv_idx
        same_doc = doc_ids[b, q_idx + off] == doc_ids[b, kv_idx]
        return same_doc & (q_idx + off >= kv_idx) if causal else same_doc

    B = None if doc_ids is None else doc_ids.size(0)  # None: one mask broadcast over the batch
    return create_block_mask(may_attend, B, None, Tq, Tk, device=device)


def _cached_block_mask(Tq, Tk, causal, doc_ids, device):
    key = (Tq, Tk, bool(causal), str(device))
    last = _FLEX_LAST[0]
    if (last is not None and last[0] == key and last[1] is doc_ids
            and (doc_ids is None or last[2] == doc_ids._version)):
        return last[3]
    mask = flex_block_mask(Tq, Tk, causal, doc_ids, device)
    # holding doc_ids keeps its object alive, so no other tensor can later have its identity
    _FLEX_LAST[0] = (key, doc_ids, None if doc_ids is None else doc_ids._version, mask)
    return mask


def flex_attention(q, k, v, causal=True, doc_ids=None):
    """FlexAttention with a document block mask: q (B, H, Tq, D), k, v (B, H, Tk, D) -> (B, H, Tq, D)."""
    import torch.nn.attention.flex_attention as flex
    Tq, Tk = q.size(-2), k.size(-2)
    needs_grad = torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v))
    if torch.compiler.is_compiling():
        if q.device.type == 'cpu' and needs_grad:  # no compiled backward here: run this call eagerly
            return torch.compiler.disable(flex_attention)(q, k, v, causal, doc_ids)  # (a graph break)
        return flex.flex_attention(q, k, v, block_mask=flex_block_mask(Tq, Tk, causal, doc_ids, q.device))
    block_mask = None  # full attention without documents (the encoder): no mask, nothing to cache
    if causal or doc_ids is not None:
        if doc_ids is not None:
            doc_ids = doc_ids.to(q.device)  # a no-op (the same object, so the cache holds) when already there
        block_mask = _cached_block_mask(Tq, Tk, causal, doc_ids, q.device)
    if q.device.type == 'cuda':
        if not _FLEX_COMPILED:
            _FLEX_COMPILED.append(torch.compile(flex.flex_attention, dynamic=False))
        return _FLEX_COMPILED[0](q, k, v, block_mask=block_mask)
    if not needs_grad:
        return flex.flex_attention(q, k, v, block_mask=block_mask)
    return _flex_unfused_with_grad(q, k, v, block_mask)


def _flex_unfused_with_grad(q, k, v, block_mask):
    """What flex.flex_attention runs after its checks, minus the check that refuses gradients on a CPU."""
    import torch.nn.attention.flex_attention as flex
    from torch._higher_order_ops.flex_attention import flex_attention as flex_operator
    if block_mask is None:
        block_mask = flex._create_empty_block_mask(q, k)
    options = flex._apply_kernel_options(q, k, v, False, None)
    out, _, _ = flex_operator(q, k, v, flex._identity, block_mask.as_tuple(), 1.0 / math.sqrt(q.size(-1)),
                              options)  # (B, H, Tq, D), its log-sum-exp and max scores
    return out


# -----------------------------------------------------------------------------
# The Triton backend: a FlashAttention-2 style fused kernel, forward and backward.
#
# Forward: one program per (block of queries, batch * head) keeps its queries in registers and
# streams blocks of keys and values through an online softmax (running max m, running sum l).
# Scores are scaled by log2(e) / sqrt(D) so that exp2 replaces exp; the forward saves
# lse = m + log2(l) per query, from which the backward rebuilds P = exp2(S - lse) without a second
# pass. Backward: delta = rowsum(dO * O); one program per key block accumulates dK and dV over the
# query blocks, one program per query block accumulates dQ over the key blocks.
# Blocks that nobody may see are never visited: past the causal diagonal, and with doc_ids outside
# the span of blocks that hold the block's own document ids. Only the blocks on the diagonal or at a
# ragged edge pay for the elementwise mask (doc ids are compared elementwise in every visited block).
# tl.arange and tl.dot need powers of two: a head dim that is not one is split into two chunks
# (72 = 64 + 16, 80 = 64 + 16, 96 = 64 + 32) with the columns past D masked, which does 80 / 128 of
# the work of padding 72 to 128.

triton = tl = None  # imported by _load_triton() on first use
_TRITON_FUNCTIONS = []  # the kernels and their helpers, compiled with triton.jit by _load_triton()
_TUNED = {}  # kernel name -> the kernel wrapped in triton.autotune
_INTERPRET = False
_TUNE_MIN_LEN = 512  # sequences at least this long autotune the block sizes on CUDA (once per shape class)


def _triton_kernel(fn):
    _TRITON_FUNCTIONS.append(fn.__name__)
    return fn


def _load_triton():
    """Import Triton and compile the kernel functions; without CUDA they run in Triton's interpreter."""
    global triton, tl, _INTERPRET
    if tl is not None:
        return
    _INTERPRET = os.environ.get('TRITON_INTERPRET') == '1' or not torch.cuda.is_available()
    if _INTERPRET and os.environ.get('TRITON_INTERPRET') != '1':
        if 'triton' in sys.modules:  # its library functions (tl.zeros, tl.max, ...) were jitted for a GPU
            raise RuntimeError("Triton was imported before TRITON_INTERPRET=1 was set, so its interpreter "
                               "cannot run the attention kernels on this machine without CUDA: set "
                               "TRITON_INTERPRET=1 in the environment, or use attention = 'sdpa'")
        os.environ['TRITON_INTERPRET'] = '1'  # must be set before triton is imported
    try:
        import triton as triton_module
        import triton.language as language
    except ImportError as e:
        raise RuntimeError("the Triton attention backend needs the `triton` package (Linux wheels: "
                           "pip install triton); or set attention = 'sdpa'") from e
    triton, tl = triton_module, language
    for name in _TRITON_FUNCTIONS:
        fn = globals()[name]
        # no compile per value of the lengths and strides (one serves every shape): the kernels are told the
        # alignment instead (ALIGN)
        ints = [a for a in inspect.signature(fn).parameters
                if a.startswith('stride_') or a in ('H', 'Tq', 'Tk')]
        globals()[name] = triton.jit(fn, do_not_specialize=ints)


def _head_chunks(D):
    """Split the head dim into power-of-two chunks D_A + D_B (D_B unused when split is False)."""
    padded = max(16, 1 << (D - 1).bit_length())
    d_a = max(16, 1 << (D.bit_length() - 1))
    if d_a >= D:
        return d_a, 16, False
    d_b = max(16, 1 << (D - d_a - 1).bit_length())
    if d_a + d_b >= padded:
        return padded, 16, False
    return d_a, d_b, True


# Block sizes (BLOCK_M, BLOCK_N, num_warps, num_stages). BLOCK_M counts queries and BLOCK_N keys in
# every kernel. The dK/dV kernel holds a key block and streams query blocks, so it wants a tall
# BLOCK_N; the dQ kernel the opposite. Long sequences on CUDA pick among the candidates by timing them.
# The candidates compile without register spills for D = 72 and 128 on sm_90 (checked with ptxas).
_TUNE_CANDIDATES = {
    'fwd': [(128, 64, 8, 3), (128, 128, 8, 3), (128, 64, 8, 2)],
    'bwd_dkdv': [(32, 128, 8, 3), (64, 64, 8, 3), (16, 128, 8, 3)],
    'bwd_dq': [(128, 64, 8, 3), (128, 32, 8, 3), (64, 64, 8, 3)],
}
# Hopper (capability 9.x: H100, H200) has 228 KB of shared memory per SM, against 164 KB on an A100: deeper
# pipelines fit. These join the candidates there, timed against the others by the autotuner, which skips
# a config that does not fit the SM. Not yet timed on a GPU (docs/benchmarks.md says what is measured).
_HOPPER_CANDIDATES = {
    'fwd': [(128, 64, 4, 4), (64, 128, 4, 3)],
    'bwd_dkdv': [(64, 128, 8, 2), (32, 128, 4, 4)],
    'bwd_dq': [(128, 64, 8, 4), (64, 32, 4, 4)],
}
_SHORT_CONFIG = {'fwd': (64, 64, 4, 2), 'bwd_dkdv': (32, 64, 4, 2), 'bwd_dq': (64, 32, 4, 2)}
# the interpreter: unequal blocks, so that the tests cross block edges and the diagonal at T ~ 100
_INTERPRETER_CONFIG = {'fwd': (64, 32, 1, 1), 'bwd_dkdv': (32, 64, 1, 1), 'bwd_dq': (64, 32, 1, 1)}


def _tune_candidates(kind, capability):
    """The block sizes the autotuner times on a GPU of this (major, minor) compute capability."""
    return _TUNE_CANDIDATES[kind] + (_HOPPER_CANDIDATES[kind] if capability[0] == 9 else [])


def _short_config(kind, fp32):
    m, n, warps, stages = _SHORT_CONFIG[kind]
    if fp32:  # twice the bytes per element: halve the tiles to fit shared memory
        m, n = max(16, m // 2), max(16, n // 2)
    return m, n, warps, stages


def _launch(kind, grid_len, bh, seq_len, fp32, args, consts):
    """Launch _attn_{kind}_kernel on a (cdiv(grid_len, block), bh) grid with the block sizes for `kind`."""
    name = f'_attn_{kind}_kernel'
    block_of_grid = 'BLOCK_N' if kind == 'bwd_dkdv' else 'BLOCK_M'
    if not _INTERPRET and seq_len >= _TUNE_MIN_LEN:
        if name not in _TUNED:  # tuned once per head dim, masking and dtype, then reused for every length
            configs = [triton.Config({'BLOCK_M': m, 'BLOCK_N': n}, num_warps=w, num_stages=s)
                       for m, n, w, s in _tune_candidates(kind, torch.cuda.get_device_capability())]
            _TUNED[name] = triton.autotune(configs, key=['HEAD_DIM', 'CAUSAL', 'HAS_DOCS'])(globals()[name])
        grid = lambda meta: (triton.cdiv(grid_len, meta[block_of_grid]), bh)
        _TUNED[name][grid](*args, **consts)
        return
    m, n, warps, stages = _INTERPRETER_CONFIG[kind] if _INTERPRET else _short_config(kind, fp32)
    block = n if kind == 'bwd_dkdv' else m
    globals()[name][(triton.cdiv(grid_len, block), bh)](*args, **consts, BLOCK_M=m, BLOCK_N=n,
                                                        num_warps=warps, num_stages=stages)


def _check_inputs(q, k, v, causal, doc_ids):
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"triton_attention wants q, k, v of shape (B, H, T, D), got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    B, H, Tq, D = q.shape
    if k.shape[:2] != (B, H) or k.size(3) != D or v.shape != k.shape:
        raise ValueError(f"triton_attention: k and v must be (B, H, Tk, D) = ({B}, {H}, Tk, {D}), got "
                         f"{tuple(k.shape)} and {tuple(v.shape)}")
    if (q.dtype not in (torch.float32, torch.float16, torch.bfloat16)
            or k.dtype != q.dtype or v.dtype != q.dtype):
        raise ValueError(f"triton_attention: q, k, v must share one of float32 / float16 / bfloat16, got "
                         f"{q.dtype}, {k.dtype}, {v.dtype}")
    if k.device != q.device or v.device != q.device:
        raise ValueError(f"triton_attention: q, k, v must be on one device, got {q.device}, {k.device}, "
                         f"{v.device}")
    if D > 128:
        raise ValueError(f"triton_attention supports head dims up to 128, got {D}")
    if min(Tq, k.size(2)) == 0:
        raise ValueError(f"triton_attention: empty sequence (Tq={Tq}, Tk={k.size(2)})")
    if (causal or doc_ids is not None) and Tq > k.size(2):
        raise ValueError(f"triton_attention: causal attention or doc_ids need Tq <= Tk, got Tq={Tq}, "
                         f"Tk={k.size(2)}")
    if doc_ids is not None:
        if doc_ids.shape != (B, k.size(2)) or doc_ids.dtype.is_floating_point or doc_ids.dtype == torch.bool:
            raise ValueError(f"triton_attention: doc_ids must be integer (B, Tk) = ({B}, {k.size(2)}), "
                             f"got {doc_ids.dtype} {tuple(doc_ids.shape)}")
    if not _INTERPRET and q.device.type != 'cuda':
        raise ValueError(f"triton_attention: tensors are on {q.device}; the compiled kernels need CUDA "
                         "tensors (without a GPU they run in Triton's interpreter on CPU tensors)")


def _last_dim_contiguous(x):
    return x if x.stride(-1) == 1 else x.contiguous()


def _kernel_flags(q, causal, doc_ids, tensors):
    D = q.size(-1)
    d_a, d_b, split = _head_chunks(D)
    upcast = _INTERPRET and q.dtype == torch.bfloat16  # the interpreter gets bf16 arithmetic wrong
    precision = 'ieee' if q.dtype == torch.float32 or upcast else 'tf32'  # 'tf32' only matters for fp32
    # every row of every tensor 16-byte aligned: the kernels may load and store 8 elements at a time
    # (Triton only infers this from strides that are multiples of 16, and D = 72 has stride 72)
    aligned = all(x.data_ptr() % 16 == 0 and all(st % 8 == 0 for st in x.stride()[:3]) for x in tensors)
    return dict(HEAD_DIM=D, D_A=d_a, D_B=d_b, SPLIT=split, CAUSAL=bool(causal), HAS_DOCS=doc_ids is not None,
                UPCAST=upcast, PRECISION=precision, ALIGN=8 if aligned else 1)


def _attention_forward(q, k, v, causal, doc_ids):
    B, H, Tq, D = q.shape
    Tk = k.size(2)
    o = torch.empty((B, H, Tq, D), dtype=q.dtype, device=q.device)
    lse = torch.empty((B * H, Tq), dtype=torch.float32, device=q.device)  # log2-sum-exp2 of the scaled scores
    qk_scale = math.log2(math.e) / math.sqrt(D)
    doc_stride = 0 if doc_ids is None else doc_ids.stride(0)
    args = (q, k, v, o, lse, doc_ids, *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *o.stride()[:3],
            doc_stride, H, Tq, Tk, qk_scale)
    _launch('fwd', Tq, B * H, min(Tq, Tk), q.dtype == torch.float32, args,
            _kernel_flags(q, causal, doc_ids, (q, k, v, o)))
    return o, lse


def _attention_backward(do, q, k, v, o, lse, causal, doc_ids):
    B, H, Tq, D = q.shape
    Tk = k.size(2)
    delta = torch.empty_like(lse)  # rowsum(dO * O), the softmax-gradient correction per query
    d_pad = max(16, 1 << (D - 1).bit_length())
    block = 32 if _INTERPRET else 64
    dq = torch.empty((B, H, Tq, D), dtype=q.dtype, device=q.device)
    dk = torch.empty((B, H, Tk, D), dtype=k.dtype, device=k.device)
    dv = torch.empty((B, H, Tk, D), dtype=v.dtype, device=v.device)
    flags = _kernel_flags(q, causal, doc_ids, (q, k, v, o, do, dq, dk, dv))
    _attn_bwd_delta_kernel[(triton.cdiv(Tq, block), B * H)](
        o, do, delta, *o.stride()[:3], *do.stride()[:3], H, Tq, HEAD_DIM=D, D_PAD=d_pad, ALIGN=flags['ALIGN'],
        BLOCK_M=block)
    qk_scale = math.log2(math.e) / math.sqrt(D)
    doc_stride = 0 if doc_ids is None else doc_ids.stride(0)
    fp32 = q.dtype == torch.float32
    args = (q, k, v, do, dk, dv, lse, delta, doc_ids, *q.stride()[:3], *k.stride()[:3], *v.stride()[:3],
            *do.stride()[:3], *dk.stride()[:3], *dv.stride()[:3], doc_stride, H, Tq, Tk, qk_scale,
            1.0 / math.sqrt(D))
    _launch('bwd_dkdv', Tk, B * H, min(Tq, Tk), fp32, args, flags)
    args = (q, k, v, do, dq, lse, delta, doc_ids, *q.stride()[:3], *k.stride()[:3], *v.stride()[:3],
            *do.stride()[:3], *dq.stride()[:3], doc_stride, H, Tq, Tk, qk_scale, 1.0 / math.sqrt(D))
    _launch('bwd_dq', Tq, B * H, min(Tq, Tk), fp32, args, flags)
    return dq, dk, dv


# The kernels enter autograd and torch.compile as two custom operators: compile treats each as one
# opaque call with outputs of known shape (it cannot trace into Triton's launcher), so a compiled
# model keeps whole graphs around them instead of failing or breaking the graph at every layer.
@torch.library.custom_op('vlm_pretrain::flash_attention', mutates_args=(),
                         schema='(Tensor q, Tensor k, Tensor v, bool causal, Tensor? doc_ids) '
                                '-> (Tensor, Tensor)')
def _flash_attention_op(q, k, v, causal, doc_ids):
    return _attention_forward(q, k, v, causal, doc_ids)


@_flash_attention_op.register_fake
def _(q, k, v, causal, doc_ids):
    B, H, Tq, D = q.shape
    return q.new_empty((B, H, Tq, D)), q.new_empty((B * H, Tq), dtype=torch.float32)


@torch.library.custom_op('vlm_pretrain::flash_attention_backward', mutates_args=(),
                         schema='(Tensor do, Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, '
                                'bool causal, Tensor? doc_ids) -> (Tensor, Tensor, Tensor)')
def _flash_attention_backward_op(do, q, k, v, o, lse, causal, doc_ids):
    return _attention_backward(_last_dim_contiguous(do), q, k, v, o, lse, causal, doc_ids)


@_flash_attention_backward_op.register_fake
def _(do, q, k, v, o, lse, causal, doc_ids):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _save_for_backward(ctx, inputs, output):
    q, k, v, causal, doc_ids = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse, doc_ids)
    ctx.causal = causal


def _backward(ctx, do, _lse_grad):
    q, k, v, o, lse, doc_ids = ctx.saved_tensors
    dq, dk, dv = _flash_attention_backward_op(do, q, k, v, o, lse, ctx.causal, doc_ids)
    return dq, dk, dv, None, None


_flash_attention_op.register_autograd(_backward, setup_context=_save_for_backward)


def triton_attention(q, k, v, causal=True, doc_ids=None):
    """The fused Triton kernel: q (B, H, Tq, D), k, v (B, H, Tk, D) -> (B, H, Tq, D) in q's dtype.
    fp32 / fp16 / bf16 with fp32 accumulation, D <= 128, any T; differentiable in q, k, v.
    doc_ids (B, Tk) are compared as int32."""
    _load_triton()
    _check_inputs(q, k, v, causal, doc_ids)
    q, k, v = _last_dim_contiguous(q), _last_dim_contiguous(k), _last_dim_contiguous(v)
    if doc_ids is not None:
        doc_ids = doc_ids.to(device=q.device, dtype=torch.int32).contiguous()
    return _flash_attention_op(q, k, v, causal, doc_ids)[0]


# --- the kernels (compiled lazily; Triton's language is `tl`) ---

@_triton_kernel
def _load_tile(base, rows, cols, stride_row, n_rows, HEAD_DIM: tl.constexpr, UPCAST: tl.constexpr,
               ALIGN: tl.constexpr):
    """The (rows, cols) tile of a (n_rows, HEAD_DIM) matrix with rows stride_row apart; zeros outside.
    Rows start at multiples of ALIGN elements (see _kernel_flags): it lets the loads be vectorized. The hint
    must sit here, on the product: on a function argument tl.multiple_of has nothing to attach to."""
    mask = (rows[:, None] < n_rows) & (cols[None, :] < HEAD_DIM)
    row_start = tl.multiple_of(rows * stride_row, ALIGN)
    tile = tl.load(base + row_start[:, None] + cols[None, :], mask=mask, other=0.0)
    if UPCAST:
        tile = tile.to(tl.float32)
    return tile


@_triton_kernel
def _store_tile(base, rows, cols, stride_row, n_rows, tile, HEAD_DIM: tl.constexpr, ALIGN: tl.constexpr):
    mask = (rows[:, None] < n_rows) & (cols[None, :] < HEAD_DIM)
    row_start = tl.multiple_of(rows * stride_row, ALIGN)
    tl.store(base + row_start[:, None] + cols[None, :], tile.to(base.dtype.element_ty), mask=mask)


@_triton_kernel
def _id_range(ids, valid):
    """Smallest and largest of the valid ids."""
    return tl.min(tl.where(valid, ids, 2147483647), axis=0), tl.max(tl.where(valid, ids, -2147483647), axis=0)


@_triton_kernel
def _doc_block_range(DOC, n, lo_id, hi_id, BLOCK: tl.constexpr):
    """[first, last): the span of the BLOCK-aligned blocks of DOC[:n] that hold an id in [lo_id, hi_id].
    Blocks inside the span that hold none cost time, never correctness (ids are also compared per element);
    for documents packed as contiguous runs the span is exact."""
    first = tl.full((8,), 2147483647, tl.int32)
    last = tl.zeros((8,), tl.int32)
    for start in range(0, n, 8 * BLOCK):  # eight blocks per step
        offs = start + tl.arange(0, 8 * BLOCK)
        inside = offs < n
        ids = tl.load(DOC + offs, mask=inside, other=0)
        block_lo = tl.min(tl.reshape(tl.where(inside, ids, 2147483647), (8, BLOCK)), axis=1)
        block_hi = tl.max(tl.reshape(tl.where(inside, ids, -2147483647), (8, BLOCK)), axis=1)
        block_start = start + tl.arange(0, 8) * BLOCK
        hit = (block_lo <= hi_id) & (block_hi >= lo_id)
        first = tl.minimum(first, tl.where(hit, block_start, 2147483647))
        last = tl.maximum(last, tl.where(hit, block_start + BLOCK, 0))
    last = tl.max(last, axis=0)
    return tl.minimum(tl.min(first, axis=0), last), last  # [0, 0) when no block holds one


@_triton_kernel
def _key_blocks(start_m, Tq, Tk, DOC, q_doc, CAUSAL: tl.constexpr, HAS_DOCS: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """The key blocks a query block visits: [begin, mid) need no mask, [mid, end) are masked."""
    off = Tk - Tq  # query i is at key position i + off
    if CAUSAL:
        end = tl.minimum(Tk, start_m + BLOCK_M + off)
        # keys before this are seen by every query of the block
        full = (start_m + off + 1) // BLOCK_N * BLOCK_N
    else:
        end = Tk
        full = Tk // BLOCK_N * BLOCK_N
    begin = 0
    if HAS_DOCS:
        offs_m = start_m + tl.arange(0, BLOCK_M)
        lo_id, hi_id = _id_range(q_doc, offs_m < Tq)
        first, last = _doc_block_range(DOC, Tk, lo_id, hi_id, BLOCK_N)
        begin = first
        end = tl.minimum(end, last)
    mid = tl.minimum(tl.maximum(full, begin), end)
    return begin, mid, end


@_triton_kernel
def _attn_fwd_inner(acc_a, acc_b, m_i, l_i, q_a, q_b, q_doc, K, V, DOC, stride_kt, stride_vt, offs_m,
                    lo, hi, Tk, off, qk_scale,
                    HEAD_DIM: tl.constexpr, D_A: tl.constexpr, D_B: tl.constexpr, SPLIT: tl.constexpr,
                    CAUSAL: tl.constexpr, HAS_DOCS: tl.constexpr, UPCAST: tl.constexpr,
                    PRECISION: tl.constexpr, ALIGN: tl.constexpr, MASKED: tl.constexpr,
                    BLOCK_N: tl.constexpr):
    offs_a = tl.arange(0, D_A)
    offs_b = D_A + tl.arange(0, D_B)
    # counting blocks from 0 rather than looping from lo: Triton then pipelines the loads even when lo
    # comes from the document scan
    for i in range(0, (hi - lo + BLOCK_N - 1) // BLOCK_N):
        offs_n = lo + i * BLOCK_N + tl.arange(0, BLOCK_N)
        k_a = _load_tile(K, offs_n, offs_a, stride_kt, Tk, HEAD_DIM, UPCAST, ALIGN)
        s = tl.dot(q_a, tl.trans(k_a), input_precision=PRECISION)  # (BLOCK_M, BLOCK_N)
        if SPLIT:
            k_b = _load_tile(K, offs_n, offs_b, stride_kt, Tk, HEAD_DIM, UPCAST, ALIGN)
            s += tl.dot(q_b, tl.trans(k_b), input_precision=PRECISION)
        s = s * qk_scale
        if MASKED:
            seen = offs_n[None, :] < Tk
            if CAUSAL:
                seen = seen & (offs_n[None, :] <= offs_m[:, None] + off)
            s = tl.where(seen, s, float('-inf'))
        if HAS_DOCS:
            k_doc = tl.load(DOC + offs_n, mask=offs_n < Tk, other=0)
            s = tl.where(q_doc[:, None] == k_doc[None, :], s, float('-inf'))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_sub = tl.where(m_new == float('-inf'), 0.0, m_new)  # a row with nothing seen yet stays at zero
        p = tl.exp2(s - m_sub[:, None])
        alpha = tl.exp2(m_i - m_sub)
        l_i = l_i * alpha + tl.sum(p, 1)
        v_a = _load_tile(V, offs_n, offs_a, stride_vt, Tk, HEAD_DIM, UPCAST, ALIGN)
        p = p.to(v_a.dtype)
        acc_a = tl.dot(p, v_a, acc_a * alpha[:, None], input_precision=PRECISION)
        if SPLIT:
            v_b = _load_tile(V, offs_n, offs_b, stride_vt, Tk, HEAD_DIM, UPCAST, ALIGN)
            acc_b = tl.dot(p, v_b, acc_b * alpha[:, None], input_precision=PRECISION)
        m_i = m_new
    return acc_a, acc_b, m_i, l_i


@_triton_kernel
def _attn_fwd_kernel(Q, K, V, O, LSE, DOC,
                     stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
                     stride_vb, stride_vh, stride_vt, stride_ob, stride_oh, stride_ot, stride_docb,
                     H, Tq, Tk, qk_scale,
                     HEAD_DIM: tl.constexpr, D_A: tl.constexpr, D_B: tl.constexpr, SPLIT: tl.constexpr,
                     CAUSAL: tl.constexpr, HAS_DOCS: tl.constexpr, UPCAST: tl.constexpr,
                     PRECISION: tl.constexpr, ALIGN: tl.constexpr, BLOCK_M: tl.constexpr,
                     BLOCK_N: tl.constexpr):
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1).to(tl.int64)
    b, h = bh // H, bh % H
    Q += tl.multiple_of(b * stride_qb + h * stride_qh, ALIGN)
    K += tl.multiple_of(b * stride_kb + h * stride_kh, ALIGN)
    V += tl.multiple_of(b * stride_vb + h * stride_vh, ALIGN)
    O += tl.multiple_of(b * stride_ob + h * stride_oh, ALIGN)
    off = Tk - Tq
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_a = tl.arange(0, D_A)
    offs_b = D_A + tl.arange(0, D_B)
    q_a = _load_tile(Q, offs_m, offs_a, stride_qt, Tq, HEAD_DIM, UPCAST, ALIGN)
    q_b = q_a
    if SPLIT:
        q_b = _load_tile(Q, offs_m, offs_b, stride_qt, Tq, HEAD_DIM, UPCAST, ALIGN)
    q_doc = offs_m
    if HAS_DOCS:
        DOC += b * stride_docb
        q_doc = tl.load(DOC + off + offs_m, mask=offs_m < Tq, other=0)
    acc_a = tl.zeros((BLOCK_M, D_A), tl.float32)
    acc_b = tl.zeros((BLOCK_M, D_B), tl.float32)
    m_i = tl.full((BLOCK_M,), float('-inf'), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    begin, mid, end = _key_blocks(start_m, Tq, Tk, DOC, q_doc, CAUSAL, HAS_DOCS, BLOCK_M, BLOCK_N)
    acc_a, acc_b, m_i, l_i = _attn_fwd_inner(
        acc_a, acc_b, m_i, l_i, q_a, q_b, q_doc, K, V, DOC, stride_kt, stride_vt, offs_m, begin, mid, Tk, off,
        qk_scale, HEAD_DIM, D_A, D_B, SPLIT, CAUSAL, HAS_DOCS, UPCAST, PRECISION, ALIGN, False, BLOCK_N)
    acc_a, acc_b, m_i, l_i = _attn_fwd_inner(
        acc_a, acc_b, m_i, l_i, q_a, q_b, q_doc, K, V, DOC, stride_kt, stride_vt, offs_m, mid, end, Tk, off,
        qk_scale, HEAD_DIM, D_A, D_B, SPLIT, CAUSAL, HAS_DOCS, UPCAST, PRECISION, ALIGN, True, BLOCK_N)
    l_i = tl.where(l_i == 0.0, 1.0, l_i)  # only rows past Tq see nothing
    _store_tile(O, offs_m, offs_a, stride_ot, Tq, acc_a / l_i[:, None], HEAD_DIM, ALIGN)
    if SPLIT:
        _store_tile(O, offs_m, offs_b, stride_ot, Tq, acc_b / l_i[:, None], HEAD_DIM, ALIGN)
    tl.store(LSE + bh * Tq + offs_m, m_i + tl.log2(l_i), mask=offs_m < Tq)


@_triton_kernel
def _attn_bwd_delta_kernel(O, DO, DELTA, stride_ob, stride_oh, stride_ot, stride_dob, stride_doh, stride_dot,
                           H, Tq, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, ALIGN: tl.constexpr,
                           BLOCK_M: tl.constexpr):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    bh = tl.program_id(1).to(tl.int64)
    b, h = bh // H, bh % H
    offs_d = tl.arange(0, D_PAD)
    O += tl.multiple_of(b * stride_ob + h * stride_oh, ALIGN)
    DO += tl.multiple_of(b * stride_dob + h * stride_doh, ALIGN)
    o = _load_tile(O, offs_m, offs_d, stride_ot, Tq, HEAD_DIM, True, ALIGN)
    do = _load_tile(DO, offs_m, offs_d, stride_dot, Tq, HEAD_DIM, True, ALIGN)
    tl.store(DELTA + bh * Tq + offs_m, tl.sum(o * do, axis=1), mask=offs_m < Tq)


@_triton_kernel
def _attn_bwd_dkdv_inner(dk_a, dk_b, dv_a, dv_b, k_a, k_b, v_a, v_b, k_doc, Q, DO, LSE, DELTA, DOC,
                         stride_qt, stride_dot, offs_n, lo, hi, Tq, off, qk_scale,
                         HEAD_DIM: tl.constexpr, D_A: tl.constexpr, D_B: tl.constexpr, SPLIT: tl.constexpr,
                         CAUSAL: tl.constexpr, HAS_DOCS: tl.constexpr, UPCAST: tl.constexpr,
                         PRECISION: tl.constexpr, ALIGN: tl.constexpr, MASKED: tl.constexpr,
                         BLOCK_M: tl.constexpr):
    offs_a = tl.arange(0, D_A)
    offs_b = D_A + tl.arange(0, D_B)
    for i in range(0, (hi - lo + BLOCK_M - 1) // BLOCK_M):  # counting from 0: see _attn_fwd_inner
        offs_m = lo + i * BLOCK_M + tl.arange(0, BLOCK_M)
        q_a = _load_tile(Q, offs_m, offs_a, stride_qt, Tq, HEAD_DIM, UPCAST, ALIGN)
        s_t = tl.dot(k_a, tl.trans(q_a), input_precision=PRECISION)  # (BLOCK_N, BLOCK_M): S transposed
        if SPLIT:
            q_b = _load_tile(Q, offs_m, offs_b, stride_qt, Tq, HEAD_DIM, UPCAST, ALIGN)
            s_t += tl.dot(k_b, tl.trans(q_b), input_precision=PRECISION)
        lse = tl.load(LSE + offs_m, mask=offs_m < Tq, other=0.0)
        p_t = tl.exp2(s_t * qk_scale - lse[None, :])
        if MASKED:
            seen = offs_m[None, :] < Tq
            if CAUSAL:
                seen = seen & (offs_n[:, None] <= offs_m[None, :] + off)
            p_t = tl.where(seen, p_t, 0.0)
        if HAS_DOCS:
            q_doc = tl.load(DOC + off + offs_m, mask=offs_m < Tq, other=0)
            p_t = tl.where(k_doc[:, None] == q_doc[None, :], p_t, 0.0)
        do_a = _load_tile(DO, offs_m, offs_a, stride_dot, Tq, HEAD_DIM, UPCAST, ALIGN)
        p_low = p_t.to(do_a.dtype)
        dv_a = tl.dot(p_low, do_a, dv_a, input_precision=PRECISION)
        dp_t = tl.dot(v_a, tl.trans(do_a), input_precision=PRECISION)
        if SPLIT:
            do_b = _load_tile(DO, offs_m, offs_b, stride_dot, Tq, HEAD_DIM, UPCAST, ALIGN)
            dv_b = tl.dot(p_low, do_b, dv_b, input_precision=PRECISION)
            dp_t += tl.dot(v_b, tl.trans(do_b), input_precision=PRECISION)
        delta = tl.load(DELTA + offs_m, mask=offs_m < Tq, other=0.0)
        # dS = P * (dP - delta), w.r.t. the scaled scores
        ds_t = (p_t * (dp_t - delta[None, :])).to(q_a.dtype)
        dk_a = tl.dot(ds_t, q_a, dk_a, input_precision=PRECISION)
        if SPLIT:
            dk_b = tl.dot(ds_t, q_b, dk_b, input_precision=PRECISION)
    return dk_a, dk_b, dv_a, dv_b


@_triton_kernel
def _attn_bwd_dkdv_kernel(Q, K, V, DO, DK, DV, LSE, DELTA, DOC,
                          stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
                          stride_vb, stride_vh, stride_vt, stride_dob, stride_doh, stride_dot,
                          stride_dkb, stride_dkh, stride_dkt, stride_dvb, stride_dvh, stride_dvt, stride_docb,
                          H, Tq, Tk, qk_scale, sm_scale,
                          HEAD_DIM: tl.constexpr, D_A: tl.constexpr, D_B: tl.constexpr, SPLIT: tl.constexpr,
                          CAUSAL: tl.constexpr, HAS_DOCS: tl.constexpr, UPCAST: tl.constexpr,
                          PRECISION: tl.constexpr, ALIGN: tl.constexpr, BLOCK_M: tl.constexpr,
                          BLOCK_N: tl.constexpr):
    start_n = tl.program_id(0) * BLOCK_N
    bh = tl.program_id(1).to(tl.int64)
    b, h = bh // H, bh % H
    Q += tl.multiple_of(b * stride_qb + h * stride_qh, ALIGN)
    K += tl.multiple_of(b * stride_kb + h * stride_kh, ALIGN)
    V += tl.multiple_of(b * stride_vb + h * stride_vh, ALIGN)
    DO += tl.multiple_of(b * stride_dob + h * stride_doh, ALIGN)
    DK += tl.multiple_of(b * stride_dkb + h * stride_dkh, ALIGN)
    DV += tl.multiple_of(b * stride_dvb + h * stride_dvh, ALIGN)
    LSE += bh * Tq
    DELTA += bh * Tq
    off = Tk - Tq
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_a = tl.arange(0, D_A)
    offs_b = D_A + tl.arange(0, D_B)
    k_a = _load_tile(K, offs_n, offs_a, stride_kt, Tk, HEAD_DIM, UPCAST, ALIGN)
    v_a = _load_tile(V, offs_n, offs_a, stride_vt, Tk, HEAD_DIM, UPCAST, ALIGN)
    k_b, v_b = k_a, v_a
    if SPLIT:
        k_b = _load_tile(K, offs_n, offs_b, stride_kt, Tk, HEAD_DIM, UPCAST, ALIGN)
        v_b = _load_tile(V, offs_n, offs_b, stride_vt, Tk, HEAD_DIM, UPCAST, ALIGN)
    dk_a = tl.zeros((BLOCK_N, D_A), tl.float32)
    dv_a = tl.zeros((BLOCK_N, D_A), tl.float32)
    dk_b = tl.zeros((BLOCK_N, D_B), tl.float32)
    dv_b = tl.zeros((BLOCK_N, D_B), tl.float32)

    # query blocks [begin, a) and [c, end) are masked, [a, c) are wholly visible and inside Tq
    begin = 0
    full = 0
    if CAUSAL:
        begin = tl.maximum(start_n - off, 0) // BLOCK_M * BLOCK_M  # earlier queries see none of these keys
        # query blocks from here on see every one of these keys
        full = (tl.maximum(start_n + BLOCK_N - 1 - off, 0) + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    end = Tq
    k_doc = offs_n
    if HAS_DOCS:
        DOC += b * stride_docb
        k_doc = tl.load(DOC + offs_n, mask=offs_n < Tk, other=0)
        lo_id, hi_id = _id_range(k_doc, offs_n < Tk)
        first, last = _doc_block_range(DOC + off, Tq, lo_id, hi_id, BLOCK_M)
        begin = tl.maximum(begin, first)
        end = tl.minimum(end, last)
    a = tl.minimum(tl.maximum(full, begin), end)
    c = tl.maximum(tl.minimum(Tq // BLOCK_M * BLOCK_M, end), a)
    dk_a, dk_b, dv_a, dv_b = _attn_bwd_dkdv_inner(
        dk_a, dk_b, dv_a, dv_b, k_a, k_b, v_a, v_b, k_doc, Q, DO, LSE, DELTA, DOC, stride_qt, stride_dot,
        offs_n, begin, a, Tq, off, qk_scale,
        HEAD_DIM, D_A, D_B, SPLIT, CAUSAL, HAS_DOCS, UPCAST, PRECISION, ALIGN, True, BLOCK_M)
    dk_a, dk_b, dv_a, dv_b = _attn_bwd_dkdv_inner(
        dk_a, dk_b, dv_a, dv_b, k_a, k_b, v_a, v_b, k_doc, Q, DO, LSE, DELTA, DOC, stride_qt, stride_dot,
        offs_n, a, c, Tq, off, qk_scale,
        HEAD_DIM, D_A, D_B, SPLIT, CAUSAL, HAS_DOCS, UPCAST, PRECISION, ALIGN, False, BLOCK_M)
    dk_a, dk_b, dv_a, dv_b = _attn_bwd_dkdv_inner(
        dk_a, dk_b, dv_a, dv_b, k_a, k_b, v_a, v_b, k_doc, Q, DO, LSE, DELTA, DOC, stride_qt, stride_dot,
        offs_n, c, end, Tq, off, qk_scale,
        HEAD_DIM, D_A, D_B, SPLIT, CAUSAL, HAS_DOCS, UPCAST, PRECISION, ALIGN, True, BLOCK_M)
    _store_tile(DK, offs_n, offs_a, stride_dkt, Tk, dk_a * sm_scale, HEAD_DIM, ALIGN)
    _store_tile(DV, offs_n, offs_a, stride_dvt, Tk, dv_a, HEAD_DIM, ALIGN)
    if SPLIT:
        _store_tile(DK, offs_n, offs_b, stride_dkt, Tk, dk_b * sm_scale, HEAD_DIM, ALIGN)
        _store_tile(DV, offs_n, offs_b, stride_dvt, Tk, dv_b, HEAD_DIM, ALIGN)


@_triton_kernel
def _attn_bwd_dq_inner(dq_a, dq_b, q_a, q_b, do_a, do_b, lse, delta, q_doc, K, V, DOC, stride_kt, stride_vt,
                       offs_m, lo, hi, Tk, off, qk_scale,
                       HEAD_DIM: tl.constexpr, D_A: tl.constexpr, D_B: tl.constexpr, SPLIT: tl.constexpr,
                       CAUSAL: tl.constexpr, HAS_DOCS: tl.constexpr, UPCAST: tl.constexpr,
                       PRECISION: tl.constexpr, ALIGN: tl.constexpr, MASKED: tl.constexpr,
                       BLOCK_N: tl.constexpr):
    offs_a = tl.arange(0, D_A)
    offs_b = D_A + tl.arange(0, D_B)
    for i in range(0, (hi - lo + BLOCK_N - 1) // BLOCK_N):  # counting from 0: see _attn_fwd_inner
        offs_n = lo + i * BLOCK_N + tl.arange(0, BLOCK_N)
        k_a = _load_tile(K, offs_n, offs_a, stride_kt, Tk, HEAD_DIM, UPCAST, ALIGN)
        v_a = _load_tile(V, offs_n, offs_a, stride_vt, Tk, HEAD_DIM, UPCAST, ALIGN)
        s = tl.dot(q_a, tl.trans(k_a), input_precision=PRECISION)  # (BLOCK_M, BLOCK_N)
        dp = tl.dot(do_a, tl.trans(v_a), input_precision=PRECISION)
        if SPLIT:
            k_b = _load_tile(K, offs_n, offs_b, stride_kt, Tk, HEAD_DIM, UPCAST, ALIGN)
            v_b = _load_tile(V, offs_n, offs_b, stride_vt, Tk, HEAD_DIM, UPCAST, ALIGN)
            s += tl.dot(q_b, tl.trans(k_b), input_precision=PRECISION)
            dp += tl.dot(do_b, tl.trans(v_b), input_precision=PRECISION)
        p = tl.exp2(s * qk_scale - lse[:, None])
        if MASKED:
            seen = offs_n[None, :] < Tk
            if CAUSAL:
                seen = seen & (offs_n[None, :] <= offs_m[:, None] + off)
            p = tl.where(seen, p, 0.0)
        if HAS_DOCS:
            k_doc = tl.load(DOC + offs_n, mask=offs_n < Tk, other=0)
            p = tl.where(q_doc[:, None] == k_doc[None, :], p, 0.0)
        ds = (p * (dp - delta[:, None])).to(k_a.dtype)
        dq_a = tl.dot(ds, k_a, dq_a, input_precision=PRECISION)
        if SPLIT:
            dq_b = tl.dot(ds, k_b, dq_b, input_precision=PRECISION)
    return dq_a, dq_b


@_triton_kernel
def _attn_bwd_dq_kernel(Q, K, V, DO, DQ, LSE, DELTA, DOC,
                        stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
                        stride_vb, stride_vh, stride_vt, stride_dob, stride_doh, stride_dot,
                        stride_dqb, stride_dqh, stride_dqt, stride_docb,
                        H, Tq, Tk, qk_scale, sm_scale,
                        HEAD_DIM: tl.constexpr, D_A: tl.constexpr, D_B: tl.constexpr, SPLIT: tl.constexpr,
                        CAUSAL: tl.constexpr, HAS_DOCS: tl.constexpr, UPCAST: tl.constexpr,
                        PRECISION: tl.constexpr, ALIGN: tl.constexpr, BLOCK_M: tl.constexpr,
                        BLOCK_N: tl.constexpr):
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1).to(tl.int64)
    b, h = bh // H, bh % H
    Q += tl.multiple_of(b * stride_qb + h * stride_qh, ALIGN)
    K += tl.multiple_of(b * stride_kb + h * stride_kh, ALIGN)
    V += tl.multiple_of(b * stride_vb + h * stride_vh, ALIGN)
    DO += tl.multiple_of(b * stride_dob + h * stride_doh, ALIGN)
    DQ += tl.multiple_of(b * stride_dqb + h * stride_dqh, ALIGN)
    off = Tk - Tq
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_a = tl.arange(0, D_A)
    offs_b = D_A + tl.arange(0, D_B)
    q_a = _load_tile(Q, offs_m, offs_a, stride_qt, Tq, HEAD_DIM, UPCAST, ALIGN)
    do_a = _load_tile(DO, offs_m, offs_a, stride_dot, Tq, HEAD_DIM, UPCAST, ALIGN)
    q_b, do_b = q_a, do_a
    if SPLIT:
        q_b = _load_tile(Q, offs_m, offs_b, stride_qt, Tq, HEAD_DIM, UPCAST, ALIGN)
        do_b = _load_tile(DO, offs_m, offs_b, stride_dot, Tq, HEAD_DIM, UPCAST, ALIGN)
    lse = tl.load(LSE + bh * Tq + offs_m, mask=offs_m < Tq, other=0.0)
    delta = tl.load(DELTA + bh * Tq + offs_m, mask=offs_m < Tq, other=0.0)
    q_doc = offs_m
    if HAS_DOCS:
        DOC += b * stride_docb
        q_doc = tl.load(DOC + off + offs_m, mask=offs_m < Tq, other=0)
    dq_a = tl.zeros((BLOCK_M, D_A), tl.float32)
    dq_b = tl.zeros((BLOCK_M, D_B), tl.float32)
    begin, mid, end = _key_blocks(start_m, Tq, Tk, DOC, q_doc, CAUSAL, HAS_DOCS, BLOCK_M, BLOCK_N)
    dq_a, dq_b = _attn_bwd_dq_inner(
        dq_a, dq_b, q_a, q_b, do_a, do_b, lse, delta, q_doc, K, V, DOC, stride_kt, stride_vt, offs_m,
        begin, mid, Tk, off, qk_scale,
        HEAD_DIM, D_A, D_B, SPLIT, CAUSAL, HAS_DOCS, UPCAST, PRECISION, ALIGN, False, BLOCK_N)
    dq_a, dq_b = _attn_bwd_dq_inner(
        dq_a, dq_b, q_a, q_b, do_a, do_b, lse, delta, q_doc, K, V, DOC, stride_kt, stride_vt, offs_m,
        mid, end, Tk, off, qk_scale,
        HEAD_DIM, D_A, D_B, SPLIT, CAUSAL, HAS_DOCS, UPCAST, PRECISION, ALIGN, True, BLOCK_N)
    _store_tile(DQ, offs_m, offs_a, stride_dqt, Tq, dq_a * sm_scale, HEAD_DIM, ALIGN)
    if SPLIT:
        _store_tile(DQ, offs_m, offs_b, stride_dqt, Tq, dq_b * sm_scale, HEAD_DIM, ALIGN)
