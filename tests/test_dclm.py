"""DCLM-1B's layout (open_lm's HF files): a small model with the real key names, config.json keys and
sharding loads with the logits of a forward pass written here from open_lm's definitions; bad folders
are one clear error; train.py starts the text and mixed stages from such a folder; `python model.py
export` writes a checkpoint's language model back in the same layout, and the round trip is exact."""
import json
import math
import os

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

import model as model_module
import train
from model import LM, VLM, LMConfig, load_dclm, vlm_args

DIM, N_LAYERS, N_HEADS, VOCAB, SEQ_LEN = 64, 2, 4, 256, 32
# DCLM-1B's config.json: open_lm's Params fields and the names its HF class and training arguments use
CONFIG = dict(architectures=['OpenLMForCausalLM'], model_type='openlm', dim=DIM, n_layers=N_LAYERS,
              n_heads=N_HEADS, vocab_size=VOCAB, seq_len=SEQ_LEN, norm_eps=1e-5, post_embed_norm=False,
              weight_tying=False, ffn_type='swiglu_torch', positional_embedding_type='rotary',
              model_norm='gain_only_lp_layer_norm', norm_type='gain_only_lp_layer_norm', qk_norm=True,
              apply_qk_norm=True, attn_name='torch_attn', torch_dtype='float32')
SHARDS = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']
INDEX = 'model.safetensors.index.json'


# -----------------------------------------------------------------------------
# the fixture: open_lm's Transformer under OpenLMForCausalLM's 'model.' prefix, in its modules' order

def hidden_dim(dim):
    return 256 * ((int(2 * 4 * dim / 3) + 256 - 1) // 256)  # open_lm's Block, ffn_type swiglu(_torch)


def open_lm_shapes(c):
    """{key: shape} in the order open_lm's modules register them (CustomAttn, then Block, Transformer)."""
    d, h, head = c['dim'], hidden_dim(c['dim']), c['dim'] // c['n_heads']
    shapes = {'model.tok_embeddings.weight': (c['vocab_size'], d)}
    for i in range(c['n_layers']):
        layer = {'attention.in_proj.weight': (3 * d, d), 'attention.out_proj.weight': (d, d),
                 'attention.pos_embed.inv_freq': (head // 2,), 'attention.q_norm.weight': (d,),
                 'attention.k_norm.weight': (d,), 'feed_forward.w12.weight': (2 * h, d),
                 'feed_forward.w3.weight': (d, h), 'attention_norm.weight': (d,), 'ffn_norm.weight': (d,)}
        shapes.update({f'model.layers.{i}.{k}': v for k, v in layer.items()})
    shapes.update({'model.norm.weight': (d,), 'model.output.weight': (c['vocab_size'], d)})
    return shapes


def random_weights(c, seed=0):
    g = torch.Generator().manual_seed(seed)
    head = c['dim'] // c['n_heads']
    weights = {}
    for key, shape in open_lm_shapes(c).items():
        if key.endswith('inv_freq'):  # RotaryEmbedding.reset_parameters
            weights[key] = 1.0 / (10000 ** (torch.arange(0, head, 2).float() / head))
        elif len(shape) == 1:  # norm gains away from 1, so that a gain left out shows
            weights[key] = 1 + 0.2 * torch.randn(shape, generator=g)
        else:
            weights[key] = torch.randn(shape, generator=g) / math.sqrt(shape[1])
    return weights


def shard_split(weights, max_bytes):
    """transformers' rule: in key order, a new shard when the next tensor would pass max_bytes."""
    shards, size = [{}], 0
    for key, tensor in weights.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards, size = shards + [{}], 0
        shards[-1][key] = tensor
        size += nbytes
    return shards


def shard_bytes(weights):
    """A shard size that puts the output head (and the tensors just before it) in a second shard, as
    DCLM-1B's 774 MB second file holds its output head and the end of the last layers."""
    total = sum(t.numel() * t.element_size() for t in weights.values())
    return total - 2 * weights['model.output.weight'].numel() * 4


def write_folder(folder, weights, config, max_bytes):
    os.makedirs(folder, exist_ok=True)
    shards = shard_split(weights, max_bytes)
    names = [f'model-{i + 1:05d}-of-{len(shards):05d}.safetensors' for i in range(len(shards))]
    for name, shard in zip(names, shards):
        save_file(shard, os.path.join(folder, name), metadata={'format': 'pt'})
    total = sum(t.numel() * t.element_size() for t in weights.values())
    index = dict(metadata=dict(total_size=total),
                 weight_map={k: name for name, shard in zip(names, shards) for k in shard})
    with open(os.path.join(folder, INDEX), 'w') as f:
        json.dump(index, f, indent=2, sort_keys=True)
    with open(os.path.join(folder, 'config.json'), 'w') as f:
        json.dump(config, f, indent=2, sort_keys=True)
    return folder


@pytest.fixture(scope='module')
def fixture(tmp_path_factory):
    weights = random_weights(CONFIG)
    folder = write_folder(str(tmp_path_factory.mktemp('dclm') / 'DCLM-1B'), weights, CONFIG,
                          shard_bytes(weights))
    assert sorted(os.listdir(folder)) == sorted(SHARDS + [INDEX, 'config.json'])
    return folder, weights


# -----------------------------------------------------------------------------
# the reference: open_lm's forward pass, in plain PyTorch from its definitions

def norm(x, weight, model_norm, eps):
    if model_norm == 'rms_norm':  # open_lm's RmsNorm
        return (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)).type_as(x) * weight
    return F.layer_norm(x, (x.size(-1),), weight, None, eps)  # gain_only_(lp_)layer_norm


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def reference_logits(weights, c, idx):
    """open_lm's Transformer.forward: pre-norm blocks, qk-norm over the full width, RotaryEmbedding on
    (B, T, H, D), causal attention, SwiGLUTorch (w12 -> gate, up; w3), final norm, untied head."""
    w = {k[len('model.'):]: v for k, v in weights.items()}
    eps, kind, H = c['norm_eps'], c['model_norm'], c['n_heads']
    B, T = idx.shape
    D = c['dim'] // H
    x = w['tok_embeddings.weight'][idx]  # (B, T, C)
    inv_freq = w['layers.0.attention.pos_embed.inv_freq']
    freqs = torch.einsum('i,j->ij', torch.arange(T, dtype=torch.float32), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[None, :, None, :], emb.sin()[None, :, None, :]  # (1, T, 1, D)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for i in range(c['n_layers']):
        p = lambda name: w[f'layers.{i}.{name}']  # noqa: E731
        h = norm(x, p('attention_norm.weight'), kind, eps)
        q, k, v = (h @ p('attention.in_proj.weight').T).chunk(3, dim=-1)
        q = norm(q, p('attention.q_norm.weight'), kind, eps)
        k = norm(k, p('attention.k_norm.weight'), kind, eps)
        q, k, v = (t.view(B, T, H, D) for t in (q, k, v))
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        scores = (q @ k.transpose(-1, -2) / math.sqrt(D)).masked_fill(~causal, float('-inf'))
        y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, H * D)
        x = x + y @ p('attention.out_proj.weight').T
        h = norm(x, p('ffn_norm.weight'), kind, eps)
        gate, up = (h @ p('feed_forward.w12.weight').T).chunk(2, dim=-1)
        x = x + (F.silu(gate) * up) @ p('feed_forward.w3.weight').T
    return norm(x, w['norm.weight'], kind, eps) @ w['output.weight'].T  # (B, T, V)


def tokens(n=2, seed=1):
    return torch.randint(0, VOCAB, (n, SEQ_LEN), generator=torch.Generator().manual_seed(seed))


# -----------------------------------------------------------------------------
# reading

def test_the_real_1b_names_shapes_order_and_sharding(tmp_path):
    """At DCLM-1B's own config: this LM's weights under open_lm's names are open_lm's keys, shapes and
    order, 1.44B parameters, and transformers' 5 GB split of them is DCLM-1B's two files (4.99 GB and
    774 MB). On the meta device: nothing is allocated."""
    real = dict(CONFIG, dim=2048, n_layers=24, n_heads=16, vocab_size=50432, seq_len=2048)
    with open(tmp_path / 'config.json', 'w') as f:
        json.dump(real, f)
    config = model_module.dclm_lm_config(str(tmp_path / 'config.json'))
    with torch.device('meta'):
        own = {model_module.DCLM_PREFIX + k: tuple(v.shape) for k, v in LM(config).state_dict().items()}
    expected = open_lm_shapes(real)
    assert model_module.dclm_keys(config.n_layer) == list(expected)
    assert {k: v for k, v in expected.items() if not k.endswith('inv_freq')} == own
    assert round(sum(math.prod(s) for s in expected.values()) / 1e9, 2) == 1.44
    plan = model_module.dclm_shard_plan({k: 4 * math.prod(s) for k, s in expected.items()},
                                        model_module.DCLM_SHARD_BYTES)
    sizes = [sum(4 * math.prod(expected[k]) for k in keys) for keys in plan]
    assert sizes == [4_985_656_832, 773_923_328]
    assert plan[1][-2:] == ['model.norm.weight', 'model.output.weight']


def test_the_loaded_lm_computes_open_lms_logits(fixture):
    folder, weights = fixture
    lm = load_dclm(folder)
    assert lm.config.vocab_size == VOCAB and lm.config.block_size == SEQ_LEN
    idx = tokens()
    with torch.no_grad():
        logits, _ = lm(idx)
    expected = reference_logits(weights, CONFIG, idx)
    assert logits.shape == expected.shape == (2, SEQ_LEN, VOCAB)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    # and the reference is sensitive to what it checks: a gain, the qk-norm, the gate/up order
    for key in ('model.layers.1.attention.q_norm.weight', 'model.layers.0.ffn_norm.weight'):
        other = dict(weights, **{key: torch.ones_like(weights[key])})
        assert not torch.allclose(reference_logits(other, CONFIG, idx), expected, atol=1e-3)
    w12 = weights['model.layers.0.feed_forward.w12.weight']
    swapped = dict(weights, **{'model.layers.0.feed_forward.w12.weight': torch.cat(w12.chunk(2)[::-1])})
    assert not torch.allclose(reference_logits(swapped, CONFIG, idx), expected, atol=1e-3)


def test_an_early_revision_nests_the_arguments_under_params_args_dict(fixture, tmp_path):
    folder, weights = fixture
    nested = dict(architectures=['OpenLMForCausalLM'], model_type='openlm', params=None,
                  params_args_dict=dict(model='open_lm_1b_swiglutorch', hidden_dim=DIM, n_layers=N_LAYERS,
                                        n_heads=N_HEADS, vocab_size=VOCAB, seq_len=SEQ_LEN,
                                        model_norm='gain_only_lp_layer_norm', qk_norm=True,
                                        ffn_type='swiglu_torch', positional_embedding_type='rotary',
                                        post_embed_norm=False, weight_tying=False))
    other = write_folder(str(tmp_path / 'nested'), weights, nested, shard_bytes(weights))
    idx = tokens()
    with torch.no_grad():
        assert torch.equal(load_dclm(other)(idx)[0], load_dclm(folder)(idx)[0])


def broken(tmp_path, weights, config=CONFIG, drop=(), add=None, reshape=None):
    weights = {k: v for k, v in weights.items() if k not in drop}
    weights.update(add or {})
    for key, shape in (reshape or {}).items():
        weights[key] = torch.zeros(shape)
    return write_folder(str(tmp_path / 'broken'), weights, config, shard_bytes(weights))


def one_line_error(folder, *words):
    with pytest.raises(ValueError) as e:
        load_dclm(folder)
    message = str(e.value)
    assert '\n' not in message and folder in message, message
    for word in words:
        assert word in message, (word, message)


def test_missing_unexpected_and_misshaped_keys_are_named_in_one_error(fixture, tmp_path):
    _, weights = fixture
    folder = broken(tmp_path, weights, drop=['model.layers.1.attention.k_norm.weight'],
                    add={'model.layers.0.attention.bias': torch.zeros(3)},
                    reshape={'model.layers.0.feed_forward.w3.weight': (DIM, 128)})
    one_line_error(folder, '1 missing: model.layers.1.attention.k_norm.weight (64,)',
                   '1 unexpected: model.layers.0.attention.bias (3,)',
                   'model.layers.0.feed_forward.w3.weight (64, 128) in the file, (64, 256) expected')


def test_an_architecture_this_decoder_lacks_is_refused_by_name(fixture, tmp_path):
    _, weights = fixture
    for key, value in (('model_norm', 'rms_norm'), ('qk_norm', False), ('ffn_type', 'gelu'),
                       ('positional_embedding_type', 'llama_rotary'), ('weight_tying', True)):
        config = dict(CONFIG, **{key: value})
        if key == 'model_norm':
            config['norm_type'] = value
        if key == 'qk_norm':
            config['apply_qk_norm'] = value
        one_line_error(broken(tmp_path, weights, config), key, repr(value))
    config = {k: v for k, v in CONFIG.items() if k != 'n_heads'}
    one_line_error(broken(tmp_path, weights, config), 'no n_heads')
    one_line_error(broken(tmp_path, weights, dict(CONFIG, dim='64')), "dim '64' is not a positive whole")
    one_line_error(broken(tmp_path, weights, dict(CONFIG, n_heads='4')), "n_heads '4' is not")
    one_line_error(broken(tmp_path, weights, dict(CONFIG, n_heads=5)), 'dim 64 is not n_heads (5)')
    freq = weights['model.layers.0.attention.pos_embed.inv_freq']
    one_line_error(broken(tmp_path, weights, add={'model.layers.0.attention.pos_embed.inv_freq': freq / 2}),
                   'inv_freq', 'rotary of base 10000')


def test_a_folder_without_its_index_or_a_shard_is_a_clear_error(fixture, tmp_path):
    _, weights = fixture
    folder = broken(tmp_path, weights)
    os.remove(os.path.join(folder, SHARDS[1]))
    with pytest.raises(FileNotFoundError, match=f'names shards that are not there: .*{SHARDS[1]}'):
        load_dclm(folder)
    os.remove(os.path.join(folder, 'config.json'))
    with pytest.raises(FileNotFoundError, match='not a DCLM-1B folder'):
        load_dclm(folder)
    os.remove(os.path.join(folder, INDEX))
    with pytest.raises(FileNotFoundError, match='not a DCLM-1B folder'):
        load_dclm(folder)
    with open(os.path.join(folder, 'config.json'), 'w') as f:
        f.write('{"dim": 64,')
    with open(os.path.join(folder, INDEX), 'w') as f:
        json.dump(dict(weight_map={}), f)
    with pytest.raises(ValueError, match='config.json: not valid JSON'):
        load_dclm(folder)


# -----------------------------------------------------------------------------
# train.py: init_from naming the folder

def tiny_tower(folder):
    import tower
    import vision
    torch.manual_seed(0)
    vision.save_siglip(tower.SiglipModel(vision.SiglipConfig(24, 6, 32, 2, 2, 64),
                                         tower.TextConfig(width=32, depth=1, heads=2, mlp_dim=64)), folder)
    return folder


def stage_model(monkeypatch, **settings):
    for key, value in settings.items():
        monkeypatch.setattr(train, key, value)
    manifest = dict(tokenizer='neox', vocab_size=VOCAB, image_id=VOCAB - 1)
    return train.build_stage_model({}, manifest, None)


def test_train_starts_the_text_and_the_mixed_stage_from_the_folder(fixture, tmp_path, monkeypatch):
    folder, weights = fixture
    idx = tokens()
    expected = load_dclm(folder)(idx)[0].detach()
    model, args, step, lineage, parent = stage_model(monkeypatch, stage='text', init_from=folder)
    assert step == 0 and parent['tokenizer'] == 'neox' and args['vocab_size'] == VOCAB
    assert torch.equal(model.eval()(idx)[0].detach(), expected)
    assert lineage['parent']['path'] == folder
    model, args, _, lineage, parent = stage_model(monkeypatch, stage='mixed', init_from=folder,
                                                  block_size=16, vision_init=tiny_tower(str(tmp_path / 't')))
    assert isinstance(model, VLM) and model.lm.config.block_size == 16
    assert args['lm']['vocab_size'] == VOCAB
    assert torch.equal(model.lm.eval()(idx[:, :16])[0].detach(), expected[:, :16])
    # the 100 % start: the stage's own peak and warmup, re-warmed
    monkeypatch.setattr(train, 'start_fraction', -1.0)
    schedule = train.stage_schedule(parent, lineage, {})
    assert schedule == (train.learning_rate, train.warmup_iters, train.max_iters)
    assert lineage['start_fraction'] == 1.0
    with pytest.raises(SystemExit, match='holds a text model; the finetune stage starts from'):
        stage_model(monkeypatch, stage='finetune', init_from=folder)
    fields = train.run_fields(dict(init_from=folder, freeze_vision=True, projector='mlp2'))
    assert fields['start'] == 'DCLM-1B'


# -----------------------------------------------------------------------------
# export back

def layout(folder):
    """{file: {key: (shape, dtype)}} of a folder's shards, its index's weight_map and config.json."""
    with open(os.path.join(folder, INDEX)) as f:
        index = json.load(f)
    with open(os.path.join(folder, 'config.json')) as f:
        config = json.load(f)
    files = {}
    for name in sorted(set(index['weight_map'].values())):
        with safe_open(os.path.join(folder, name), framework='pt') as f:
            assert f.metadata() == {'format': 'pt'}
            files[name] = {k: (tuple(f.get_tensor(k).shape), f.get_tensor(k).dtype) for k in f.keys()}
    return files, index, config


def tensors(folder):
    found = {}
    for name in SHARDS:
        with safe_open(os.path.join(folder, name), framework='pt') as f:
            found.update({k: f.get_tensor(k) for k in f.keys()})
    return found


def export(ckpt, out, max_bytes):
    model_module.main(['export', f'--ckpt={ckpt}', f'--out={out}', f'--shard_bytes={max_bytes}'])


@pytest.mark.parametrize('kind', ['lm', 'vlm'])
def test_export_writes_the_fixtures_layout_and_the_round_trip_is_exact(fixture, tmp_path, kind):
    folder, weights = fixture
    lm = load_dclm(folder)
    if kind == 'lm':
        checkpoint = dict(model=lm.state_dict(), model_args=vars(lm.config).copy())
    else:
        from vision import SiglipConfig
        vision_config = SiglipConfig(24, 6, 32, 2, 2, 64)
        vlm = VLM(lm.config, vision_config, image_id=VOCAB - 1)
        vlm.lm.load_state_dict(lm.state_dict())
        checkpoint = dict(model=vlm.state_dict(),
                          model_args=vlm_args(lm.config, vision_config, 'mlp2', -2, VOCAB - 1, True))
    torch.save(checkpoint, tmp_path / 'ckpt.pt')
    out = str(tmp_path / 'export')
    export(tmp_path / 'ckpt.pt', out, shard_bytes(weights))
    assert sorted(os.listdir(out)) == sorted(os.listdir(folder))
    files, index, config = layout(out)
    fixture_files, fixture_index, fixture_config = layout(folder)
    assert files == fixture_files  # the same keys in the same files, shapes and fp32
    assert index == fixture_index and config == fixture_config
    exported = tensors(out)
    assert all(torch.equal(exported[k], v) for k, v in weights.items())
    idx = tokens()
    with torch.no_grad():
        assert torch.equal(load_dclm(out)(idx)[0], lm(idx)[0])


def test_export_of_a_bad_checkpoint_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        export(tmp_path / 'nothing.pt', tmp_path / 'out', 10**9)
    assert str(e.value) == f"error: checkpoint not found: {tmp_path / 'nothing.pt'}"
    with pytest.raises(SystemExit) as e:
        model_module.main(['export', '--out=x'])
    assert str(e.value) == 'config error: --ckpt=... is required'


def test_lm_config_fields_are_what_the_reader_fills():
    assert set(vars(LMConfig())) == {'vocab_size', 'block_size', 'n_layer', 'n_head', 'n_embd', 'norm_eps',
                                     'rope_base'}
