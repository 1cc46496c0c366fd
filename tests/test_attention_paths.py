"""The decoder and the SigLIP encoder give the same outputs and gradients through either attention backend."""
import importlib.util

import pytest
import torch

import attention
from model import LM, LMConfig
from vision import SiglipConfig, SiglipVisionTower

pytestmark = pytest.mark.skipif(importlib.util.find_spec('triton') is None, reason="triton is not installed")
DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'


def both_backends(fn):
    outputs = []
    for backend in ('sdpa', 'triton'):
        attention.set_backend(backend)
        try:
            outputs.append(fn())
        finally:
            attention.set_backend('sdpa')
    return outputs


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


def test_decoder_kv_cache_generation_same_with_either_backend():
    torch.manual_seed(1)
    model = LM(LMConfig(vocab_size=64, block_size=32, n_layer=2, n_head=2, n_embd=64)).to(DEVICE).eval()
    prompt = torch.randint(0, 64, (2, 6), device=DEVICE)
    out_a, out_b = both_backends(lambda: model.generate(prompt, 8))
    assert torch.equal(out_a, out_b)


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
