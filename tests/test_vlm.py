import pytest
import torch

from model import VLM, build_model, lm_config, make_projector, vlm_args
from tokenizer import TOKENIZERS, chat_tokens, get_tokenizer
from vision import PRESETS, SiglipConfig

IMAGE = TOKENIZERS['bytes']['image_id']
EOT = TOKENIZERS['bytes']['eot_id']
VISION = SiglipConfig(image_size=12, patch_size=4, width=24, depth=3, heads=2, mlp_dim=48)  # 9 patches


def tiny_vlm(freeze=True, projector='mlp2', seed=0):
    torch.manual_seed(seed)
    return VLM(lm_config('nano'), VISION, projector=projector, image_id=IMAGE, freeze_vision=freeze)


def caption_row(caption, T=32):
    """<|endoftext|> + 9 x <|image|> + caption + <|endoftext|>, padded; targets built by hand."""
    enc = get_tokenizer('bytes')
    text = enc.encode_ordinary(caption)
    tokens = [EOT] + [IMAGE] * 9 + text + [EOT]
    ids = tokens + [EOT] * (T - len(tokens))
    # position t predicts token t+1: only caption tokens and the closing <|endoftext|> are targets
    targets = [-100] * T
    for t in range(9, 9 + len(text) + 1):
        targets[t] = tokens[t + 1]
    return torch.tensor(ids), torch.tensor(targets)


def batch(n_img=2, n_text=1):
    rows = [caption_row(f"a red circle {i}") for i in range(n_img)]
    g = torch.Generator().manual_seed(1)
    for _ in range(n_text):
        ids = torch.randint(0, 256, (32,), generator=g)
        rows.append((ids, torch.cat([ids[1:], torch.tensor([EOT])])))
    images = torch.randint(0, 256, (len(rows), 12, 12, 3), generator=g, dtype=torch.uint8)
    has_image = torch.tensor([True] * n_img + [False] * n_text)
    images[~has_image] = 0
    return dict(input_ids=torch.stack([r[0] for r in rows]), targets=torch.stack([r[1] for r in rows]),
                images=images, has_image=has_image)


def test_patches_replace_image_embeddings_and_only_text_is_scored():
    model = tiny_vlm().eval()
    b = batch()
    x = model.embed(b['input_ids'], b['images'], b['has_image'])
    patches = model.encode_images(b['images'][:2])
    torch.testing.assert_close(x[0, 1:10], patches[0])
    torch.testing.assert_close(x[1, 1:10], patches[1])
    torch.testing.assert_close(x[2], model.lm.tok_embeddings(b['input_ids'][2]))
    logits, loss = model(**b)
    valid = b['targets'] != -100
    assert not valid[:2, :9].any()  # BOS and image positions are never targets (built by hand above)
    expected = torch.nn.functional.cross_entropy(logits[valid], b['targets'][valid])
    torch.testing.assert_close(loss, expected)


def test_image_content_changes_the_text_logits():
    model = tiny_vlm().eval()
    b = batch(n_img=1, n_text=0)
    logits1, _ = model(**b)
    b['images'] = 255 - b['images']
    logits2, _ = model(**b)
    assert not torch.allclose(logits1[0, 10:], logits2[0, 10:])
    torch.testing.assert_close(logits1[0, :1], logits2[0, :1])  # BOS comes before the image: causal


@pytest.mark.parametrize('freeze', [True, False])
def test_gradients_reach_projector_and_lm_and_only_an_unfrozen_encoder(freeze):
    model = tiny_vlm(freeze=freeze).train()
    _, loss = model(**batch())
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.projector.parameters())
    assert model.lm.tok_embeddings.weight.grad.abs().sum() > 0
    vision_grads = [p.grad for p in model.vision.parameters()]
    if freeze:
        assert all(g is None for g in vision_grads)
        assert not model.vision.training  # frozen encoder stays in eval mode
        opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 1e-8, 'cpu')
        held = {id(p) for g in opt.param_groups for p in g['params']}
        assert not any(id(p) in held for p in model.vision.parameters())
    else:
        assert all(g is not None and g.abs().sum() > 0 for g in vision_grads)
        opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 1e-8, 'cpu', vision_lr=1e-4)
        vision_ids = {id(p) for p in model.vision.parameters()}
        for group in opt.param_groups:
            in_vision = {id(p) in vision_ids for p in group['params']}
            assert len(in_vision) == 1
            assert group['lr'] == pytest.approx(1e-4 if in_vision.pop() else 1e-3)


def test_text_only_micro_batch_keeps_projector_in_graph():
    model = tiny_vlm(freeze=False).train()
    b = batch(n_img=0, n_text=2)
    _, loss = model(**b)
    loss.backward()
    assert all(p.grad is not None for p in model.projector.parameters())
    assert all(p.grad is not None for p in model.vision.parameters())


def test_wrong_number_of_image_tokens_is_an_error():
    model = tiny_vlm().eval()
    b = batch(n_img=1, n_text=0)
    b['input_ids'][0, 5] = 65
    with pytest.raises(ValueError, match="exactly 9 <|image|> tokens"):
        model(**b)


def test_projector_parameter_counts_at_1b():
    d, w = lm_config('1b').n_embd, PRESETS['so400m-patch14-384'].width
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(make_projector('mlp2', w, d)) == (w * d + d) + (d * d + d)
    assert count(make_projector('mlp1', w, d)) == w * d + d
    with pytest.raises(ValueError, match="projector must be one of"):
        make_projector('mlp3', w, d)


def test_generation_from_image_and_prompt_matches_full_forward():
    model = tiny_vlm(seed=2).eval()
    enc = get_tokenizer('bytes')
    prompt, _ = chat_tokens(enc, [('user', 'what colour?')], n_image=9)
    ids = torch.tensor([prompt])
    images = torch.randint(0, 256, (1, 12, 12, 3), dtype=torch.uint8)
    has_image = torch.tensor([True])
    out = model.generate(ids, images, has_image, max_new_tokens=5)
    seq = ids
    for _ in range(5):
        logits, _ = model(seq, images=images, has_image=has_image)
        seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, seq[:, ids.size(1):])


def test_rebuild_from_model_args():
    model = tiny_vlm(projector='mlp1')
    args = vlm_args(lm_config('nano'), VISION, 'mlp1', -2, IMAGE, True)
    rebuilt = build_model(args)
    rebuilt.load_state_dict(model.state_dict())
    b = batch()
    torch.testing.assert_close(model.eval()(**b)[1], rebuilt.eval()(**b)[1])


# -----------------------------------------------------------------------------
# VLM.forward's one graph break: the batch checks run eagerly first, the rest is data-independent

def mixed_batch():
    """Rows text, image, text, image (the images not first), with documents in every row."""
    b = batch(n_img=2, n_text=2)
    order = torch.tensor([2, 0, 3, 1])
    b = {k: v[order] for k, v in b.items()}
    b['doc_ids'] = (torch.arange(32) >= 20).long().expand(4, 32).contiguous()  # two documents per row
    return b


def embeddings_by_hand(model, b):
    """Each row on its own: the token embeddings, the row's own patches written at its <|image|> positions."""
    rows = []
    for i in range(len(b['input_ids'])):
        e = model.lm.tok_embeddings(b['input_ids'][i])  # (T, C)
        if b['has_image'][i]:
            where = (b['input_ids'][i] == IMAGE).nonzero().squeeze(1)  # (P,)
            e = e.index_put((where,), model.encode_images(b['images'][i:i + 1])[0])
        rows.append(e)
    return torch.stack(rows)  # (B, T, C)


def loss_and_grads(model, forward):
    model.zero_grad(set_to_none=True)
    loss = forward()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize('n_img', [2, 0])
def test_loss_and_gradients_match_a_forward_by_hand(n_img):
    model = tiny_vlm(freeze=False).train()
    b = mixed_batch() if n_img else batch(n_img=0, n_text=3)
    if not n_img:
        b['doc_ids'] = None
    got, got_grads = loss_and_grads(model, lambda: model(**b)[1])

    def by_hand():
        x = embeddings_by_hand(model, b)
        return model.lm(b['input_ids'], b['targets'], doc_ids=b['doc_ids'], inputs_embeds=x)[1]
    want, want_grads = loss_and_grads(model, by_hand)
    torch.testing.assert_close(got, want)
    if not n_img:  # no image: the projector and the encoder only get zero gradients (kept for DDP)
        assert torch.equal(got, want)
        assert all(not g.any() for n, g in got_grads.items() if not n.startswith('lm.'))
        got_grads = {n: g for n, g in got_grads.items() if n.startswith('lm.')}
    assert got_grads.keys() == want_grads.keys() and len(got_grads) > 0
    for name, g in got_grads.items():
        torch.testing.assert_close(g, want_grads[name], msg=name)


@pytest.mark.parametrize('spoil, message', [
    ('stray', "exactly 9 <|image|> tokens"),  # an <|image|> token in a row without an image
    ('shifted', "exactly 9 <|image|> tokens"),  # 8 in one image row, 10 in the other: right in total
    ('no_has_image', "but no images"),
    ('no_images', "but no images"),
])
def test_bad_batches_are_errors(spoil, message):
    model = tiny_vlm().eval()
    b = mixed_batch()
    if spoil == 'stray':
        b['input_ids'][0, 3] = IMAGE
    elif spoil == 'shifted':
        b['input_ids'][1, 9] = 65
        b['input_ids'][3, 12] = IMAGE
    elif spoil == 'no_has_image':
        b['has_image'][:] = False
    else:
        b['images'] = None
    with pytest.raises(ValueError, match=message):
        model(**b)


def test_compiled_forward_is_one_graph_with_the_eager_results():
    """Compiled with dynamo and AOT autograd (aot_eager: Inductor's CPU code generation would take minutes
    here): one graph after the eager batch checks, the eager loss and gradients, the same errors."""
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    model = tiny_vlm(freeze=False).train()
    b = mixed_batch()
    want, want_grads = loss_and_grads(model, lambda: model(**b)[1])
    compiled = torch.compile(model, backend='aot_eager')
    got, got_grads = loss_and_grads(model, lambda: compiled(**b)[1])
    assert counters['stats']['unique_graphs'] == 1
    torch.testing.assert_close(got, want)
    for name, g in got_grads.items():
        torch.testing.assert_close(g, want_grads[name], msg=name)
    b['input_ids'][0, 3] = IMAGE
    with pytest.raises(ValueError, match="exactly 9 <|image|> tokens"):
        compiled(**b)
    # what follows the checks compiles with fullgraph=True: no break anywhere in it
    b = mixed_batch()
    rows = model.image_rows(b['input_ids'], b['images'], b['has_image'])
    rest = torch.compile(lambda ids, targets, doc_ids, images, rows: model.lm(
        ids, targets, doc_ids=doc_ids, inputs_embeds=model.embed_rows(ids, images, rows))[1],
        backend='aot_eager', fullgraph=True)
    torch.testing.assert_close(rest(b['input_ids'], b['targets'], b['doc_ids'], b['images'], rows), want)
    torch._dynamo.reset()
