"""The decoder and the SigLIP encoder give the same outputs and gradients through every attention backend;
the FlexAttention backend against a reference of its own."""
import importlib.util
import math

import pytest
import torch

import attention
from model import LM, LMConfig
from vision import SiglipConfig, SiglipVisionTower

needs_triton = pytest.mark.skipif(importlib.util.find_spec('triton') is None,
                                  reason="triton is not installed")
DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'


def both_backends(fn, backends=('sdpa', 'triton')):
    outputs = []
    for backend in backends:
        attention.set_backend(backend)
        try:
            outputs.append(fn())
        finally:
            attention.set_backend('sdpa')
    return outputs


@needs_triton
def test_decoder_same_with_either_backend():
    torch.manual_seed(0)
    model = LM(LMConfig(vocab_size=64, block_size=40, n_layer=2, n_head=2, n_embd=64)).to(DEVICE)
    idx = torch.randint(0, 64, (2, 37), device=DEVICE)
    doc_ids = torch.tensor([[0] * 12 + [1] * 25, [0] * 30 + [1] * 7], device=DEVICE)

    def run():
        model.zero_grad()
        logits, loss = model(idx, idx, doc_ids=doc_ids)
        loss.backward()
        return logits.detach(), model.layers[0].attention.in_proj.weight.grad.clone()

    (logits_a, grad_a), (logits_b, grad_b) = both_backends(run)
    torch.testing.assert_close(logits_a, logits_b, atol=2e-4, rtol=2e-4)
    torch.testing.assert_close(grad_a, grad_b, atol=2e-4, rtol=2e-3)


@needs_triton
def test_decoder_kv_cache_generation_same_with_either_backend():
    torch.manual_seed(1)
    model = LM(LMConfig(vocab_size=64, block_size=32, n_layer=2, n_head=2, n_embd=64)).to(DEVICE).eval()
    prompt = torch.randint(0, 64, (2, 6), device=DEVICE)
    out_a, out_b = both_backends(lambda: model.generate(prompt, 8))
    assert torch.equal(out_a, out_b)


@needs_triton
def test_encoder_head_dim_72_same_with_either_backend():
    torch.manual_seed(2)
    tower = SiglipVisionTower(SiglipConfig(image_size=12, patch_size=4, width=144, depth=2, heads=2, mlp_dim=96),
                              head=False).to(DEVICE)  # head dim 72, as SigLIP-so400m
    pixels = torch.randn(2, 3, 12, 12, device=DEVICE)

    def run():
        tower.zero_grad()
        features = tower(pixels, feature_layer=-1)
        features.square().mean().backward()
        return features.detach(), tower.encoder['layers'][0].self_attn.q_proj.weight.grad.clone()

    (feat_a, grad_a), (feat_b, grad_b) = both_backends(run)
    torch.testing.assert_close(feat_a, feat_b, atol=2e-4, rtol=2e-4)
    torch.testing.assert_close(grad_a, grad_b, atol=2e-4, rtol=2e-3)


# -----------------------------------------------------------------------------
# FlexAttention ('flex'): on a CPU PyTorch's unfused implementation, forward and backward

def masked_softmax_attention(q, k, v, causal, doc_ids):
    """float64, the allowed keys written out from the contract (not attention.attention_mask)."""
    B, H, Tq, D = q.shape
    Tk = k.size(2)
    i = torch.arange(Tq)[:, None] + (Tk - Tq)  # each query's position among the keys
    j = torch.arange(Tk)[None, :]
    allowed = (j <= i) if causal else torch.ones(Tq, Tk, dtype=torch.bool)
    allowed = allowed.expand(B, Tq, Tk)
    if doc_ids is not None:
        allowed = allowed & (doc_ids[:, Tk - Tq:, None] == doc_ids[:, None, :])
    scores = q.double() @ k.double().transpose(-2, -1) / math.sqrt(D)
    scores = scores.masked_fill(~allowed[:, None], float('-inf'))
    return scores.softmax(-1) @ v.double()


def documents(B, T, lengths):
    """doc_ids (B, T) from document lengths per row (the last runs to T)."""
    ids = torch.zeros(B, T, dtype=torch.long)
    for b, row in enumerate(lengths):
        for n in row:
            ids[b, n:] += 1
    return ids


@pytest.mark.parametrize('causal, D, T, Tq', [(True, 128, 150, 150), (False, 72, 150, 150),
                                             (True, 72, 140, 9), (False, 128, 130, 130)])
def test_flex_backend_matches_the_reference_forward_and_backward(causal, D, T, Tq):
    torch.manual_seed(0)
    q = torch.randn(2, 2, Tq, D, requires_grad=True)
    k, v = (torch.randn(2, 2, T, D, requires_grad=True) for _ in range(2))
    do = torch.randn(2, 2, Tq, D)
    doc_ids = documents(2, T, [[5, 40, 41, 129], [100]])  # crossing and inside the 128-blocks
    for ids in (doc_ids, None):
        want = masked_softmax_attention(q, k, v, causal, ids)
        want_grads = torch.autograd.grad(want, (q, k, v), do.double())  # float64 math, fp32 leaves
        attention.set_backend('flex')
        try:
            got = attention.attention(q, k, v, causal=causal, doc_ids=ids)
        finally:
            attention.set_backend('sdpa')
        grads = torch.autograd.grad(got, (q, k, v), do)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), want, atol=2e-5, rtol=2e-5)
        for g, w in zip(grads, want_grads):
            torch.testing.assert_close(g, w, atol=5e-5, rtol=5e-5)  # both fp32 (the grads of fp32 leaves)
        ref = attention.reference_attention(q, k, v, causal=causal, doc_ids=ids)
        torch.testing.assert_close(got, ref, atol=2e-5, rtol=2e-5)


def test_flex_block_mask_is_made_again_when_the_doc_ids_change():
    """The backend keeps the last block mask for the same doc_ids tensor: a write into it, or another
    tensor, gives another mask."""
    torch.manual_seed(1)
    q, k, v = (torch.randn(1, 2, 140, 16) for _ in range(3))
    ids = documents(1, 140, [[70]])
    first = attention.flex_attention(q, k, v, causal=True, doc_ids=ids)
    torch.testing.assert_close(first, attention.reference_attention(q, k, v, True, ids), atol=1e-5, rtol=1e-5)
    assert attention.flex_attention(q, k, v, causal=True, doc_ids=ids).equal(first)  # reused: the same
    ids[0, 70:] = 0  # in place: one document
    again = attention.flex_attention(q, k, v, causal=True, doc_ids=ids)
    torch.testing.assert_close(again, attention.reference_attention(q, k, v, True, ids), atol=1e-5, rtol=1e-5)
    other = documents(1, 140, [[3]])
    torch.testing.assert_close(attention.flex_attention(q, k, v, causal=True, doc_ids=other),
                               attention.reference_attention(q, k, v, True, other), atol=1e-5, rtol=1e-5)


def test_decoder_and_encoder_same_with_flex_and_sdpa():
    torch.manual_seed(3)
    model = LM(LMConfig(vocab_size=64, block_size=140, n_layer=2, n_head=2, n_embd=64)).to(DEVICE)
    idx = torch.randint(0, 64, (2, 137), device=DEVICE)
    doc_ids = documents(2, 137, [[12, 130], [60]]).to(DEVICE)

    def run():
        model.zero_grad()
        logits, loss = model(idx, idx, doc_ids=doc_ids)
        loss.backward()
        return logits.detach(), model.layers[0].attention.in_proj.weight.grad.clone()

    (logits_a, grad_a), (logits_b, grad_b) = both_backends(run, ('sdpa', 'flex'))
    torch.testing.assert_close(logits_a, logits_b, atol=2e-4, rtol=2e-4)
    torch.testing.assert_close(grad_a, grad_b, atol=2e-4, rtol=2e-3)
    encoder = SiglipConfig(image_size=12, patch_size=4, width=144, depth=2, heads=2, mlp_dim=96)
    tower = SiglipVisionTower(encoder, head=False).to(DEVICE)  # head dim 72, full attention, no documents
    pixels = torch.randn(2, 3, 12, 12, device=DEVICE)
    feat_a, feat_b = both_backends(lambda: tower(pixels, feature_layer=-1).detach(), ('sdpa', 'flex'))
    torch.testing.assert_close(feat_a, feat_b, atol=2e-4, rtol=2e-4)
