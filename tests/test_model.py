import math

import pytest
import torch
import torch.nn.functional as F

from model import LM, LMConfig, LM_PRESETS, estimate_mfu, lm_config, lm_loss, peak_flops


def closed_form_params(vocab, d, layers):
    hidden = 256 * math.ceil(8 * d / 3 / 256)
    per_layer = 3 * d * d + d * d + 2 * d * hidden + hidden * d + 4 * d  # in/out proj, SwiGLU, 2 norms + qk norms
    return 2 * vocab * d + layers * per_layer + d  # untied embedding and head, final norm


@pytest.mark.parametrize('preset', sorted(LM_PRESETS))
def test_parameter_count_matches_closed_form(preset):
    cfg = lm_config(preset)
    with torch.device('meta'):
        model = LM(cfg)
    n = sum(p.numel() for p in model.parameters())
    assert n == closed_form_params(cfg.vocab_size, cfg.n_embd, cfg.n_layer)


def test_paper_sizes():
    # Table 2 of the paper: 79M (d 512, 8 layers, head dim 128) and 1.4B (d 2048, 24 layers, head dim 128)
    assert round(closed_form_params(50304, 512, 8) / 1e6) == 79
    assert round(closed_form_params(50304, 2048, 24) / 1e9, 1) == 1.4
    assert lm_config('1b').n_embd // lm_config('1b').n_head == 128 == lm_config('79m').n_embd // lm_config('79m').n_head
    # SwiGLU hidden rounded to 256: DCLM-1B's 5632
    with torch.device('meta'):
        assert LM(lm_config('1b')).layers[0].feed_forward.w3.in_features == 5632


def small_model(seed=0, **kw):
    torch.manual_seed(seed)
    return LM(LMConfig(**{**dict(vocab_size=64, block_size=32, n_layer=2, n_head=2, n_embd=32), **kw})).eval()


def test_init_follows_openlm():
    torch.manual_seed(0)
    model = LM(LMConfig(vocab_size=64, block_size=16, n_layer=3, n_head=4, n_embd=256))
    d = 256
    w = model.layers[2].attention.out_proj.weight
    assert w.std().item() == pytest.approx(1 / math.sqrt(d) / math.sqrt(6), rel=0.1)
    assert w.abs().max().item() <= 3 * 1 / math.sqrt(d) / math.sqrt(6) + 1e-6  # truncated at 3 std
    assert model.layers[0].attention.in_proj.weight.std().item() == pytest.approx(1 / math.sqrt(d), rel=0.1)
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Linear))


def test_causality():
    model = small_model()
    idx = torch.randint(0, 64, (2, 20))
    logits1, _ = model(idx)
    idx2 = idx.clone()
    idx2[:, 11] = (idx2[:, 11] + 7) % 64
    logits2, _ = model(idx2)
    torch.testing.assert_close(logits1[:, :11], logits2[:, :11])
    assert not torch.allclose(logits1[:, 11:], logits2[:, 11:])


def test_loss_ignores_minus_100_and_matches_cross_entropy():
    model = small_model()
    idx = torch.randint(0, 64, (2, 10))
    targets = torch.randint(0, 64, (2, 10))
    targets[0, :4] = -100
    logits, loss = model(idx, targets)
    valid = targets != -100
    expected = F.cross_entropy(logits[valid], targets[valid])
    torch.testing.assert_close(loss, expected)
    _, loss_sum = model(idx, targets, reduction='sum')
    torch.testing.assert_close(loss_sum, expected * valid.sum())
    # z-loss: 1e-4 * mean logsumexp^2 over the counted positions
    _, with_z = model(idx, targets, z_loss=1e-4)
    torch.testing.assert_close(with_z, expected + 1e-4 * (torch.logsumexp(logits[valid], -1) ** 2).mean())


def test_doc_ids_isolate_documents():
    model = small_model()
    a, b = torch.randint(0, 64, (1, 6)), torch.randint(0, 64, (1, 8))
    packed = torch.cat([a, b], 1)
    doc_ids = torch.tensor([[0] * 6 + [1] * 8])
    logits_packed, _ = model(packed, doc_ids=doc_ids)
    logits_b, _ = model(b)
    # rotary attention depends on relative positions only, so b alone equals b inside the pack
    torch.testing.assert_close(logits_packed[:, 6:], logits_b, atol=1e-4, rtol=1e-4)


def test_kv_cache_generation_equals_full_forward_argmax():
    model = small_model(seed=3)
    prompt = torch.randint(0, 64, (3, 5))
    out = model.generate(prompt, 12)
    seq = prompt
    for _ in range(12):
        logits, _ = model(seq)
        seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, seq[:, 5:])


def test_left_padded_batch_generation_equals_one_at_a_time():
    model = small_model(seed=4)
    prompts = [torch.randint(0, 64, (n,)) for n in (3, 7, 5)]
    width = max(len(p) for p in prompts)
    idx = torch.stack([torch.cat([torch.zeros(width - len(p), dtype=torch.long), p]) for p in prompts])
    doc_ids = torch.stack([torch.cat([torch.zeros(width - len(p), dtype=torch.long), torch.ones(len(p), dtype=torch.long)])
                           for p in prompts])
    batched = model.generate(idx, 8, doc_ids=doc_ids)
    for row, p in zip(batched, prompts):
        assert torch.equal(row, model.generate(p[None], 8)[0])


def test_generate_stops_at_stop_token():
    model = small_model(seed=5)
    prompt = torch.randint(0, 64, (1, 4))
    first = model.generate(prompt, 1)[0, 0].item()
    out = model.generate(prompt, 10, stop_token=first)
    assert out.tolist() == [[first]]


def test_weight_decay_only_on_matrices():
    model = small_model()
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 1e-8, 'cpu')
    for group in opt.param_groups:
        assert all((p.dim() >= 2) == (group['weight_decay'] == 0.1) for p in group['params'])
    assert sum(p.numel() for g in opt.param_groups for p in g['params']) == sum(p.numel() for p in model.parameters())


def test_mfu_counts_head_not_embedding():
    model = small_model()
    c = model.config
    n_matmul = sum(p.numel() for p in model.parameters()) - c.vocab_size * c.n_embd
    assert model.flops_per_token(32) == 6 * n_matmul + 12 * 2 * 2 * 16 * 32
    assert peak_flops('NVIDIA H100 80GB HBM3') == 989e12
    assert peak_flops('NVIDIA H100 PCIe') == 756e12
    assert peak_flops('NVIDIA A100-SXM4-80GB') == 312e12
    assert peak_flops('cpu') is None and estimate_mfu(1e9, 1e3, 'cpu') is None
    assert estimate_mfu(989e9, 500, 'NVIDIA H200') == pytest.approx(0.5)


def test_block_size_is_enforced():
    model = small_model()
    with pytest.raises(ValueError, match="exceeds block_size"):
        model(torch.zeros(1, 33, dtype=torch.long))


def test_activation_checkpointing_gives_the_same_gradients():
    from model import checkpoint_activations
    idx = torch.randint(0, 64, (2, 16))
    grads = []
    for recompute in (False, True):
        model = small_model(seed=6).train()
        if recompute:
            checkpoint_activations(model)
        _, loss = model(idx, idx)
        loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
