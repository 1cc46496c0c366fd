import math

import pytest
import torch

import attention as A


def loop_attention(q, k, v, causal, doc_ids):
    """Query by query, with the allowed keys listed explicitly: an independent statement of the contract."""
    B, H, Tq, D = q.shape
    Tk = k.size(2)
    out = torch.zeros(B, H, Tq, D, dtype=torch.float64)
    for b in range(B):
        for i in range(Tq):
            allowed = [j for j in range(Tk)
                       if (not causal or j <= i + Tk - Tq)
                       and (doc_ids is None or doc_ids[b, Tk - Tq + i] == doc_ids[b, j])]
            for h in range(H):
                s = torch.stack([q[b, h, i].double() @ k[b, h, j].double() / math.sqrt(D) for j in allowed])
                p = torch.softmax(s, 0)
                out[b, h, i] = sum(p[n] * v[b, h, j].double() for n, j in enumerate(allowed))
    return out


def rand(B, H, T, D, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, H, T, D, generator=g)


def packed_doc_ids(B, T, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T, (B, 4), generator=g)
    ids = torch.zeros(B, T, dtype=torch.long)
    for b in range(B):
        pos = 0
        for d, n in enumerate(lengths[b].tolist() + [T]):
            ids[b, pos:pos + n] = d
            pos += n
            if pos >= T:
                break
    return ids


@pytest.mark.parametrize('causal', [True, False])
@pytest.mark.parametrize('with_docs', [False, True])
@pytest.mark.parametrize('Tq,Tk', [(9, 9), (1, 9), (4, 11)])
def test_reference_and_sdpa_match_the_loop(causal, with_docs, Tq, Tk):
    q, k, v = rand(2, 2, Tq, 8, 1), rand(2, 2, Tk, 8, 2), rand(2, 2, Tk, 8, 3)
    doc_ids = packed_doc_ids(2, Tk) if with_docs else None
    if with_docs and not causal:
        doc_ids[:, -Tq:] = doc_ids[:, :1]  # non-causal queries need a key of their own document
    expected = loop_attention(q, k, v, causal, doc_ids)
    torch.testing.assert_close(A.reference_attention(q, k, v, causal, doc_ids).double(), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(A.attention(q, k, v, causal=causal, doc_ids=doc_ids).double(), expected, atol=1e-5, rtol=1e-5)


def test_kv_cache_alignment_is_bottom_right():
    # the last Tq queries of a full causal pass equal a pass with only those queries against all keys
    q, k, v = rand(1, 2, 12, 16, 4), rand(1, 2, 12, 16, 5), rand(1, 2, 12, 16, 6)
    full = A.attention(q, k, v, causal=True)
    tail = A.attention(q[:, :, -3:], k, v, causal=True)
    torch.testing.assert_close(tail, full[:, :, -3:], atol=1e-6, rtol=1e-5)


def test_documents_do_not_see_each_other():
    q, k, v = rand(1, 2, 10, 8, 7), rand(1, 2, 10, 8, 8), rand(1, 2, 10, 8, 9)
    doc_ids = torch.tensor([[0] * 4 + [1] * 6])
    out = A.attention(q, k, v, causal=True, doc_ids=doc_ids)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, :4] += 5.0  # change document 0 only
    v2[:, :, :4] -= 3.0
    out2 = A.attention(q, k2, v2, causal=True, doc_ids=doc_ids)
    torch.testing.assert_close(out[:, :, 4:], out2[:, :, 4:])
    assert not torch.allclose(out[:, :, :4], out2[:, :, :4])
    # document 1's first token sees only itself: its output is its own value
    torch.testing.assert_close(out[:, :, 4], v[:, :, 4])


def test_gradients_match_reference():
    q, k, v = (rand(1, 2, 7, 8, s).requires_grad_() for s in (10, 11, 12))
    doc_ids = torch.tensor([[0, 0, 0, 1, 1, 2, 2]])
    grads = []
    for fn in (A.attention, A.reference_attention):
        out = fn(q, k, v, causal=True, doc_ids=doc_ids)
        grads.append(torch.autograd.grad((out * torch.arange(8.0)).sum(), (q, k, v)))
    for g1, g2 in zip(*grads):
        torch.testing.assert_close(g1, g2, atol=1e-5, rtol=1e-5)


def test_bad_doc_ids_shape_and_backend_are_clear():
    q = rand(1, 1, 4, 8)
    with pytest.raises(ValueError, match=r"doc_ids must be \(B, Tk\)"):
        A.attention(q, q, q, doc_ids=torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="attention backend must be one of"):
        A.set_backend('flash')
