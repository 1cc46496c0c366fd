"""
The Triton attention kernel (attention.triton_attention) against attention.reference_attention:
outputs and dq, dk, dv. With a CUDA GPU the kernels compile and run on it (bf16 cases included);
without one they run in Triton's interpreter on CPU tensors.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ['TRITON_INTERPRET'] = '1'  # before anything imports triton

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import attention  # noqa: E402

DEVICE = 'cuda' if CUDA else 'cpu'
requires_triton = pytest.mark.skipif(importlib.util.find_spec('triton') is None, reason="triton is not installed")
TOLERANCES = {torch.float32: (2e-5, 1e-4), torch.float16: (3e-3, 3e-3), torch.bfloat16: (4e-2, 4e-2)}
# the dtype of the tests outside the main grid: on a GPU the one training uses (and each new dtype is a compile)
DTYPE = torch.bfloat16 if CUDA else torch.float32


def packed_doc_ids(B, T, cuts):
    """(B, T) ids of documents packed as contiguous runs, new documents starting at `cuts`."""
    ids = torch.zeros(B, T, dtype=torch.long)
    for c in cuts:
        ids[:, c:] += 1
    return ids


def make_inputs(B, H, Tq, Tk, D, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, T, D, generator=g).to(DEVICE, dtype) for T in (Tq, Tk, Tk))
    do = torch.randn(B, H, Tq, D, generator=g).to(DEVICE, dtype)
    return q, k, v, do


def output_and_grads(fn, q, k, v, do, causal, doc_ids):
    q, k, v = (x.detach().requires_grad_() for x in (q, k, v))
    out = fn(q, k, v, causal=causal, doc_ids=doc_ids)
    return (out, *torch.autograd.grad(out, (q, k, v), do))


def check_against_reference(B, H, Tq, Tk, D, dtype, causal, doc_ids, seed=0):
    q, k, v, do = make_inputs(B, H, Tq, Tk, D, dtype, seed)
    if doc_ids is not None:
        doc_ids = doc_ids.to(DEVICE)
    got = output_and_grads(attention.triton_attention, q, k, v, do, causal, doc_ids)
    want = output_and_grads(attention.reference_attention, q, k, v, do, causal, doc_ids)
    atol, rtol = TOLERANCES[dtype]
    for name, g, w in zip(('out', 'dq', 'dk', 'dv'), got, want):
        assert g.dtype == dtype and g.shape == w.shape
        torch.testing.assert_close(g, w, atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")


def doc_ids_for(T, docs, B=2):
    # three documents of unequal length; the second row is one document (a plain row in a packed batch)
    if not docs:
        return None
    ids = packed_doc_ids(B, T, [T // 3, T // 3 + T // 2] if T > 3 else [])
    ids[1:] = 7
    return ids


# The interpreter runs the whole fp32 grid and an fp16 subset in about a minute. On a GPU each
# (dtype, D, causal, docs) is a compile of three kernels, so the grid there is bf16 in full and spot
# checks of fp16 and fp32 (the tests below reuse the bf16 D 72 kernels).
if CUDA:
    CASES = ([(torch.bfloat16, T, D, causal, docs) for T, D in ((130, 72), (77, 128))
              for causal in (True, False) for docs in (False, True)]
             + [(torch.bfloat16, 1, 128, True, False), (torch.float16, 130, 72, True, True),
                (torch.float16, 77, 128, False, False), (torch.float32, 130, 72, True, True)])
else:
    CASES = ([(torch.float32, T, D, causal, docs) for T in (1, 77, 130) for D in (32, 64, 72, 128)
              for causal in (True, False) for docs in (False, True)]
             + [(torch.float16, T, D, causal, docs) for T in (77, 130) for D in (64, 72)
                for causal in (True, False) for docs in (False, True)])


@requires_triton
@pytest.mark.parametrize('dtype,T,D,causal,docs', CASES,
                         ids=[f"{str(c[0])[6:]}-T{c[1]}-D{c[2]}-{'causal' if c[3] else 'full'}"
                              f"{'-docs' if c[4] else ''}" for c in CASES])
def test_matches_reference(dtype, T, D, causal, docs):
    check_against_reference(2, 1, T, T, D, dtype, causal, doc_ids_for(T, docs))


@requires_triton
@pytest.mark.parametrize('Tq,Tk,causal,docs', [(1, 77, True, False), (1, 130, True, True), (20, 130, True, False),
                                               (50, 130, True, True), (20, 130, False, True),
                                               (33, 77, False, False), (77, 20, False, False)])
def test_queries_and_keys_of_different_lengths(Tq, Tk, causal, docs):
    # Tq < Tk is decoding with a KV cache (causal aligned bottom-right); Tq > Tk is plain cross-attention
    doc_ids = packed_doc_ids(1, Tk, [Tk // 4, Tk - 30]) if docs else None
    check_against_reference(1, 2, Tq, Tk, 72, DTYPE, causal, doc_ids)


@requires_triton
@pytest.mark.parametrize('Tq,Tk', [(129, 130), (100, 130), (97, 128), (67, 100), (37, 100), (66, 130)])
def test_causal_diagonal_at_every_offset(Tq, Tk):
    # Tk - Tq = 1, 30, 31, 33, 63, 64: the diagonal crosses 32- and 64-blocks at each phase
    D = 72 if CUDA else 32  # on a GPU, the kernels compiled for the grid above
    check_against_reference(1, 1, Tq, Tk, D, DTYPE, True, None)
    check_against_reference(1, 1, Tq, Tk, D, DTYPE, True, packed_doc_ids(1, Tk, [Tk - Tq + 5]))


@requires_triton
@pytest.mark.skipif(CUDA, reason="index logic the interpreter covers; saves compiles on the GPU (D 72 is split too)")
@pytest.mark.parametrize('D', [40, 80, 96])
def test_head_dims_split_in_two_chunks(D):
    # 40 = 32 + 16 (8 masked), 80 = 64 + 16, 96 = 64 + 32
    assert attention._head_chunks(D)[2]
    check_against_reference(1, 2, 77, 77, D, DTYPE, True, packed_doc_ids(1, 77, [30]))


@requires_triton
@pytest.mark.parametrize('causal', [True, False])
def test_arbitrary_doc_ids(causal):
    # ids are not contiguous runs: blocks hold many documents and the same id recurs far apart
    g = torch.Generator().manual_seed(1)
    doc_ids = torch.randint(0, 3, (2, 130), generator=g)
    doc_ids[1, 40:90] = 5
    check_against_reference(2, 1, 130, 130, 72, DTYPE, causal, doc_ids)


@requires_triton
@pytest.mark.skipif(not CUDA, reason="bf16 arithmetic is only exact on a GPU (the interpreter runs it in fp32)")
def test_bf16_long_sequence_on_gpu():
    # long enough to take the autotuned block sizes; bench.py's packed-documents shape reuses these compiles
    check_against_reference(1, 2, 700, 700, 128, torch.bfloat16, True, packed_doc_ids(1, 700, [100, 390]))


GPU_CONFIGS = ([{kind: attention._tune_candidates(kind, (9, 0))[i] for kind in attention._TUNE_CANDIDATES}
                for i in range(len(attention._tune_candidates('fwd', (9, 0))))]
               + [{kind: attention._short_config(kind, fp32) for kind in attention._SHORT_CONFIG} for fp32 in (0, 1)])


def test_hopper_candidates_join_the_measured_ones_on_capability_9_only():
    for kind, measured in attention._TUNE_CANDIDATES.items():
        assert attention._tune_candidates(kind, (8, 0)) == measured  # A100: the measured list alone
        assert attention._tune_candidates(kind, (9, 0)) == measured + attention._HOPPER_CANDIDATES[kind]
        assert attention._tune_candidates(kind, (10, 0)) == measured


@requires_triton
@pytest.mark.skipif(CUDA, reason="pins the interpreter's block sizes")
@pytest.mark.parametrize('config', GPU_CONFIGS, ids=[str(c['fwd'][:2]) for c in GPU_CONFIGS])
def test_every_gpu_block_size(config, monkeypatch):
    # a GPU runs these block sizes (autotuned candidates, short sequences, fp32): each must be exact here too
    attention._load_triton()
    monkeypatch.setattr(attention, '_INTERPRETER_CONFIG', config)
    check_against_reference(1, 1, 200, 200, 72, torch.float32, True, packed_doc_ids(1, 200, [70, 75, 150]))
    check_against_reference(1, 1, 150, 200, 64, torch.float32, True, None)
    check_against_reference(1, 1, 200, 200, 32, torch.float32, False, None)


@requires_triton
@pytest.mark.parametrize('causal', [True, False])
def test_documents_never_see_each_other(causal):
    T, D, B, H = 120, 72, 1, 2
    doc_ids = packed_doc_ids(B, T, [37, 80]).to(DEVICE)  # documents [0, 37), [37, 80), [80, 120)
    q, k, v, do = make_inputs(B, H, T, T, D, DTYPE)
    before = output_and_grads(attention.triton_attention, q, k, v, do, causal, doc_ids)
    other = doc_ids[0] != 1
    k2, v2 = k.clone(), v.clone()
    k2[:, :, other] = 10 * torch.randn_like(k2[:, :, other])
    v2[:, :, other] = -v2[:, :, other] + 3
    after = output_and_grads(attention.triton_attention, q, k2, v2, do, causal, doc_ids)
    mine = ~other
    for name, b, a in zip(('out', 'dq', 'dk', 'dv'), before, after):
        assert torch.equal(b[:, :, mine], a[:, :, mine]), f"{name} of document 1 changed with the others' k, v"
    assert not torch.equal(before[0][:, :, other], after[0][:, :, other])  # the perturbation does reach them
    # and the document alone, as its own sequence, gives the same answer
    alone = attention.reference_attention(q[:, :, 37:80], k[:, :, 37:80], v[:, :, 37:80], causal=causal)
    torch.testing.assert_close(before[0][:, :, 37:80], alone, atol=TOLERANCES[DTYPE][0], rtol=TOLERANCES[DTYPE][1])


@requires_triton
def test_non_contiguous_inputs():
    B, H, T, D = 2, 2, 77, 72
    g = torch.Generator().manual_seed(3)
    q = torch.randn(B, T, H, D, generator=g).to(DEVICE, DTYPE).transpose(1, 2)  # (B, H, T, D) seen from (B, T, H, D)
    k = torch.randn(B, T, H, D, generator=g).to(DEVICE, DTYPE).transpose(1, 2)
    v = torch.randn(B, H, D, T, generator=g).to(DEVICE, DTYPE).transpose(2, 3)  # last dim strided
    do = torch.randn(B * H * T * D + 1, generator=g).to(DEVICE, DTYPE)[1:].view(B, H, T, D)  # 2-byte aligned
    attention._load_triton()
    assert attention._kernel_flags(q, True, None, (q, k, v.contiguous()))['ALIGN'] == 8
    assert attention._kernel_flags(q, True, None, (q, k, do))['ALIGN'] == 1  # no vectorized loads from do
    got = output_and_grads(attention.triton_attention, q, k, v, do, True, None)
    want = output_and_grads(attention.reference_attention, q, k, v, do, True, None)
    for g_, w in zip(got, want):
        torch.testing.assert_close(g_, w, atol=TOLERANCES[DTYPE][0], rtol=TOLERANCES[DTYPE][1])


@requires_triton
def test_set_backend_triton():
    q, k, v, do = make_inputs(2, 2, 77, 77, 72, DTYPE, seed=5)
    doc_ids = packed_doc_ids(2, 77, [30]).to(DEVICE)
    previous = attention.BACKEND
    try:
        attention.set_backend('triton')
        got = output_and_grads(attention.attention, q, k, v, do, True, doc_ids)
    finally:
        attention.set_backend(previous)
    want = output_and_grads(attention.reference_attention, q, k, v, do, True, doc_ids)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=TOLERANCES[DTYPE][0], rtol=TOLERANCES[DTYPE][1])


@requires_triton
def test_mixed_dtypes_under_autocast():
    # in the decoder under autocast, qk-norm returns q, k in fp32 while v is in the autocast dtype:
    # the triton backend casts all three like SDPA does (fp16 here: the interpreter's bf16 is not exact)
    q, k, _, do = make_inputs(1, 2, 77, 77, 64, torch.float32, seed=6)
    v = make_inputs(1, 2, 77, 77, 64, torch.float16, seed=7)[2]
    previous = attention.BACKEND
    try:
        attention.set_backend('triton')
        with torch.autocast(q.device.type, dtype=torch.float16):
            got = attention.attention(q, k, v, causal=True)
    finally:
        attention.set_backend(previous)
    want = attention.reference_attention(q.half(), k.half(), v, causal=True)
    assert got.dtype == torch.float16
    torch.testing.assert_close(got, want, atol=TOLERANCES[torch.float16][0], rtol=TOLERANCES[torch.float16][1])


@requires_triton
def test_torch_compile_keeps_the_kernel_in_one_graph():
    # the kernels are custom operators: dynamo and AOT autograd trace them through their fake
    # implementations (fullgraph=True fails on any graph break) and the compiled call runs our kernels
    import torch._dynamo
    q, k, v, do = make_inputs(2, 2, 70, 70, 72, torch.float32, seed=8)
    doc_ids = packed_doc_ids(2, 70, [25]).to(DEVICE)
    torch._dynamo.reset()
    compiled = torch.compile(attention.triton_attention, backend='aot_eager', fullgraph=True)
    got = output_and_grads(compiled, q, k, v, do, True, doc_ids)
    want = output_and_grads(attention.reference_attention, q, k, v, do, True, doc_ids)
    for name, g, w in zip(('out', 'dq', 'dk', 'dv'), got, want):
        torch.testing.assert_close(g, w, atol=TOLERANCES[torch.float32][0], rtol=TOLERANCES[torch.float32][1],
                                   msg=lambda m: f"{name}: {m}")


@requires_triton
def test_bad_inputs_are_named():
    q, k, v, _ = make_inputs(1, 1, 16, 8, 32, torch.float32)
    with pytest.raises(ValueError, match="Tq <= Tk"):
        attention.triton_attention(q, k, v, causal=True)
    big = torch.zeros(1, 1, 8, 160, device=DEVICE)
    with pytest.raises(ValueError, match="up to 128"):
        attention.triton_attention(big, big, big)
    with pytest.raises(ValueError, match="doc_ids"):
        attention.triton_attention(k, k, k, doc_ids=torch.zeros(1, 8, device=DEVICE))
    with pytest.raises(ValueError, match="float32 / float16 / bfloat16"):
        attention.triton_attention(k.double(), k.double(), k.double())


def run_python(code, env=None):
    result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_import_does_not_need_triton():
    out = run_python(
        "import sys, torch\n"
        "sys.modules['triton'] = None  # as if Triton were not installed\n"
        "import attention\n"
        "q = torch.randn(1, 2, 5, 8)\n"
        "print(attention.attention(q, q, q).shape)\n"
        "try:\n"
        "    attention.triton_attention(q, q, q)\n"
        "except RuntimeError as e:\n"
        "    print('error:', e)\n")
    assert 'torch.Size([1, 2, 5, 8])' in out and "error:" in out and '`triton`' in out


@requires_triton
@pytest.mark.skipif(CUDA, reason="the interpreter is chosen only without a GPU")
def test_triton_imported_before_the_interpreter_was_chosen():
    # without a GPU the interpreter must be chosen before Triton is imported: say so rather than crash inside
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    out = run_python("import triton, torch, attention\n"
                     "q = torch.randn(1, 1, 20, 16)\n"
                     "try:\n"
                     "    attention.triton_attention(q, q, q)\n"
                     "except RuntimeError as e:\n"
                     "    print('error:', e)\n", env=env)
    assert 'error:' in out and 'TRITON_INTERPRET=1' in out
