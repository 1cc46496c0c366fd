"""vision.py: parity with HF transformers' SigLIP (test-only reference), checkpoint layouts and key
checks, preprocessing against SiglipImageProcessor, bad images, presets and `vision.py info`."""
import io
import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import vision
from vision import ImageError, load_siglip, normalize, preprocess, save_siglip


# -----------------------------------------------------------------------------
# parity with transformers' SiglipVisionModel, over every checkpoint layout

SHAPES = {
    # so400m at reduced depth and image size: width 1152, 16 heads of dim 72, MLP 4304, patch 14
    'so400m': dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=2, num_attention_heads=16,
                   image_size=56, patch_size=14),
    'base': dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=2, num_attention_heads=12,
                 image_size=224, patch_size=16),
}
LAYOUTS = ['as-saved', 'prefixed', 'unprefixed', 'full-model', 'sharded', 'no-config']


def _strip(key):
    return key[len('vision_model.'):] if key.startswith('vision_model.') else key


@pytest.fixture(scope='module', params=list(SHAPES))
def hf_reference(request, tmp_path_factory):
    transformers = pytest.importorskip('transformers')
    st = pytest.importorskip('safetensors.torch')
    torch.manual_seed(0)
    config = transformers.SiglipVisionConfig(**SHAPES[request.param], attn_implementation='eager')
    model = transformers.SiglipVisionModel(config).eval()
    with torch.no_grad():  # the HF init leaves biases at zero: make them count
        for name, p in model.named_parameters():
            if name.endswith('bias'):
                p.normal_(0, 0.02)
    pixels = torch.rand(2, 3, config.image_size, config.image_size) * 2 - 1
    with torch.no_grad():
        out = model(pixels, output_hidden_states=True)
    root = tmp_path_factory.mktemp(request.param)
    state = {_strip(k): v.contiguous() for k, v in model.state_dict().items()}
    vision_config = config.to_dict()

    def write(layout):
        folder = root / layout
        if layout == 'as-saved':  # whatever the installed transformers writes
            model.save_pretrained(folder)
        elif layout == 'sharded':
            model.save_pretrained(folder, max_shard_size='20MB')
            assert (folder / 'model.safetensors.index.json').exists()
        elif layout == 'full-model':  # SiglipModel: vision_model.*, text_model.*, logit_scale, logit_bias
            full_config = transformers.SiglipConfig(
                vision_config=vision_config,
                text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, vocab_size=100, projection_size=config.hidden_size))
            full = transformers.SiglipModel(full_config)
            full.load_state_dict({**full.state_dict(), **{'vision_model.' + k: v for k, v in state.items()}})
            full.save_pretrained(folder)
        else:  # 'prefixed' = transformers 4.x SiglipVisionModel, 'unprefixed' = 5.x
            folder.mkdir()
            prefix = '' if layout == 'unprefixed' else 'vision_model.'
            st.save_file({prefix + k: v for k, v in state.items()}, str(folder / 'model.safetensors'))
            if layout != 'no-config':  # without config.json the shape comes from the preset of that width
                (folder / 'config.json').write_text(json.dumps(vision_config))
        return folder

    yield dict(write=write, pixels=pixels, out=out, name=request.param)
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize('layout', LAYOUTS)
def test_matches_hf_siglip(hf_reference, layout):
    folder = hf_reference['write'](layout)
    tower = load_siglip(str(folder))
    shutil.rmtree(folder)
    pixels, out = hf_reference['pixels'], hf_reference['out']
    assert tower.feature_layer == -2 and tower.head is not None
    with torch.no_grad():
        second_last = tower(pixels)
        last = tower(pixels, feature_layer=-1)
        pooled = tower.embed(pixels)
    assert second_last.shape == out.hidden_states[-2].shape
    assert (second_last - out.hidden_states[-2]).abs().max() <= 1e-4
    assert (last - out.last_hidden_state).abs().max() <= 1e-4
    assert (pooled - out.pooler_output).abs().max() <= 1e-4


def test_feature_layer_indexing_and_drop_unused(tmp_path):
    transformers = pytest.importorskip('transformers')
    torch.manual_seed(0)
    config = transformers.SiglipVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                                             num_attention_heads=4, image_size=32, patch_size=8,
                                             attn_implementation='eager')
    model = transformers.SiglipVisionModel(config).eval()
    model.save_pretrained(tmp_path)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        hidden = model(pixels, output_hidden_states=True).hidden_states  # embeddings + 4 blocks
        tower = load_siglip(str(tmp_path), feature_layer=1)
        for layer in (0, 1, 2, 3, -2, -3, -5):  # everything but the final block comes without a norm
            assert (tower(pixels, feature_layer=layer) - hidden[layer]).abs().max() <= 1e-5
        assert (tower(pixels) - hidden[1]).abs().max() <= 1e-5  # the stored default
        for layer in (5, -6):
            with pytest.raises(ValueError, match='out of range'):
                tower(pixels, feature_layer=layer)
        expected = tower(pixels, feature_layer=-2)
        tower = load_siglip(str(tmp_path), feature_layer=-2).drop_unused()
        assert len(tower.encoder['layers']) == 3 and tower.head is None and tower.post_layernorm is None
        assert torch.equal(tower(pixels), expected)
        with pytest.raises(ValueError, match='dropped'):
            tower(pixels, feature_layer=-1)
        with pytest.raises(ValueError, match=r'\(B, 3, 32, 32\)'):
            tower(torch.zeros(2, 3, 16, 16))


# -----------------------------------------------------------------------------
# checkpoint key checks


def _tiny_checkpoint(folder):
    transformers = pytest.importorskip('transformers')
    config = transformers.SiglipVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                             num_attention_heads=4, image_size=32, patch_size=8)
    transformers.SiglipVisionModel(config).save_pretrained(folder)
    return folder


def test_key_errors_are_reported_together(tmp_path):
    st = pytest.importorskip('safetensors.torch')
    folder = _tiny_checkpoint(tmp_path)
    state = st.load_file(str(folder / 'model.safetensors'))
    prefix = 'vision_model.' if any(k.startswith('vision_model.') for k in state) else ''
    del state[prefix + 'encoder.layers.1.mlp.fc1.bias']
    state[prefix + 'encoder.layers.0.self_attn.rotary.weight'] = torch.zeros(3)
    state[prefix + 'post_layernorm.weight'] = torch.ones(65)
    st.save_file(state, str(folder / 'model.safetensors'))
    with pytest.raises(ValueError) as err:
        load_siglip(str(folder))
    message = str(err.value)
    assert 'missing: encoder.layers.1.mlp.fc1.bias' in message
    assert 'unexpected: ' + prefix + 'encoder.layers.0.self_attn.rotary.weight' in message
    assert 'wrong shape: ' + prefix + 'post_layernorm.weight: (65,)' in message


def test_unknown_width_without_config_asks_for_it(tmp_path):
    folder = _tiny_checkpoint(tmp_path)
    os.remove(folder / 'config.json')
    with pytest.raises(ValueError, match='config.json'):
        load_siglip(str(folder / 'model.safetensors'))


def test_missing_shard_and_missing_path(tmp_path):
    pytest.importorskip('safetensors')
    with pytest.raises(FileNotFoundError, match='no SigLIP checkpoint'):
        load_siglip(str(tmp_path / 'nothing'))
    index = {'weight_map': {'a': 'gone.safetensors'}}
    (tmp_path / 'model.safetensors.index.json').write_text(json.dumps(index))
    with pytest.raises(FileNotFoundError, match='gone.safetensors'):
        load_siglip(str(tmp_path))


# -----------------------------------------------------------------------------
# preprocessing against SiglipImageProcessor


def _hf_processor(size):
    transformers = pytest.importorskip('transformers')
    # transformers 5 names the PIL implementation ...Pil; in 4.x SiglipImageProcessor is the PIL one
    cls = getattr(transformers, 'SiglipImageProcessorPil', None) or transformers.SiglipImageProcessor
    return cls(size={'height': size, 'width': size})


def _test_images():
    rng = np.random.default_rng(0)
    noise = lambda *shape: rng.integers(0, 256, shape, dtype=np.uint8)
    rgba = noise(40, 30, 4)
    rgba[..., 3] = np.linspace(0, 255, 30, dtype=np.uint8)[None, :]  # alpha ramp across the image
    palette = Image.fromarray(noise(20, 20, 3)).quantize(16)
    palette.info['transparency'] = 3
    return {
        'rgb': Image.fromarray(noise(50, 70, 3)),
        'rgb-tall': Image.fromarray(noise(200, 37, 3)),
        'rgba': Image.fromarray(rgba, mode='RGBA'),
        'gray': Image.fromarray(noise(33, 33), mode='L'),
        'gray-alpha': Image.fromarray(noise(20, 25, 2), mode='LA'),
        'palette-transparent': palette,
        'tiny': Image.fromarray(noise(3, 2, 3)),
    }


@pytest.mark.parametrize('size', [64, 384])
def test_preprocess_matches_hf_processor(size):
    processor = _hf_processor(size)
    for name, image in _test_images().items():
        ours = normalize(preprocess(image, size)).numpy()
        theirs = processor(images=image.copy(), return_tensors='np')['pixel_values'][0]
        assert ours.shape == theirs.shape == (3, size, size), name
        assert np.abs(ours - theirs).max() <= 1 / 127.5, name


def test_preprocess_sources_and_orientation(tmp_path):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (10, 20, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # orientation: the camera was turned, rotate 90 degrees clockwise to display
    path = tmp_path / 'rotated.png'
    image.save(path, exif=exif)
    upright = preprocess(Image.fromarray(np.rot90(pixels, k=-1).copy()), 16)
    assert torch.equal(torch.from_numpy(preprocess(str(path), 16)), torch.from_numpy(upright))
    assert np.array_equal(preprocess(path.read_bytes(), 16), upright)
    with open(path, 'rb') as f:
        assert np.array_equal(preprocess(f, 16), upright)
    assert preprocess(str(path), 16).dtype == np.uint8


def test_preprocess_sixteen_bit_and_cmyk(tmp_path):
    levels = np.arange(256, dtype=np.uint16).reshape(16, 16)
    path = tmp_path / 'deep.png'
    Image.fromarray(levels * 257).save(path)  # a 16-bit grayscale PNG
    out = preprocess(str(path), 16)  # same size: the resize leaves the pixels alone
    assert np.array_equal(out, np.repeat(levels.astype(np.uint8)[..., None], 3, axis=-1))
    cmyk = Image.new('CMYK', (8, 8), (0, 0, 0, 0))  # no ink = white
    assert (preprocess(cmyk, 8) == 255).all()


def test_normalize():
    images = torch.tensor([0, 255, 51], dtype=torch.uint8).view(1, 1, 1, 3).expand(2, 4, 4, 3)
    x = normalize(images)
    assert x.shape == (2, 3, 4, 4)
    assert torch.allclose(x[:, :, 0, 0], torch.tensor([-1.0, 1.0, 51 / 127.5 - 1]).expand(2, 3))
    with pytest.raises(ValueError, match='uint8'):
        normalize(images.float())


# -----------------------------------------------------------------------------
# bad images


def _png_bytes(shape=(32, 32, 3)):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)).save(buffer, 'PNG')
    return buffer.getvalue()


def _jpeg_bytes():
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, 'JPEG')
    return buffer.getvalue()


def _bad_inputs(tmp_path):
    empty = tmp_path / 'empty.jpg'
    empty.write_bytes(b'')
    float_tiff = tmp_path / 'float.tiff'
    Image.fromarray(np.ones((8, 8), dtype=np.float32)).save(float_tiff)
    strip, wide = io.BytesIO(), io.BytesIO()
    Image.new('RGB', (1, 20000)).save(strip, 'PNG')
    Image.new('RGB', (1000, 4)).save(wide, 'PNG')
    return {
        'corrupt': b'\x89PNG\r\n\x1a\n' + b'garbage' * 20,
        'truncated-png': _png_bytes()[:300],
        'truncated-jpeg': _jpeg_bytes()[:600],
        'empty-file': str(empty),
        'missing-file': str(tmp_path / 'nope.png'),
        'strip': strip.getvalue(),
        'wide': wide.getvalue(),
        'float-mode': str(float_tiff),
        'float-mode-pil': Image.new('F', (8, 8)),
    }


def test_bad_images_raise_image_error(tmp_path):
    for name, bad in _bad_inputs(tmp_path).items():
        with pytest.raises(ImageError) as err:
            preprocess(bad, 16)
        assert isinstance(err.value, ValueError), name
        if isinstance(bad, str):
            assert bad in str(err.value), name
    with pytest.raises(ImageError, match='1x20000 pixels'):
        preprocess(_bad_inputs(tmp_path)['strip'], 16)
    with pytest.raises(ImageError, match='aspect ratio'):
        preprocess(_bad_inputs(tmp_path)['wide'], 16)
    with pytest.raises(ImageError, match='empty.jpg'):
        preprocess(str(tmp_path / 'empty.jpg'), 16)


def test_decompression_bomb_limit(monkeypatch):
    monkeypatch.setattr(vision, 'MAX_PIXELS', 1000)
    with pytest.raises(ImageError, match='pixel limit'):
        preprocess(_png_bytes((40, 40, 3)), 16)
    assert preprocess(_png_bytes((30, 30, 3)), 16).shape == (16, 16, 3)


def test_loop_skips_bad_images_and_keeps_good_ones(tmp_path):
    good = [_png_bytes(), _jpeg_bytes(), Image.new('L', (5, 9), 128)]
    bad = list(_bad_inputs(tmp_path).values())
    mixed = [bad[0], good[0], bad[1], bad[2], good[1], *bad[3:6], good[2], *bad[6:]]
    kept, skipped = [], 0
    for item in mixed:
        try:
            kept.append(preprocess(item, 24))
        except ImageError:
            skipped += 1
    assert skipped == len(bad) and len(kept) == len(good)
    assert np.array_equal(kept[0], preprocess(good[0], 24))
    assert (kept[2] == 128).all()


# -----------------------------------------------------------------------------
# presets and info


def test_presets_and_info(tmp_path, capsys):
    from tower import SiglipModel, TextConfig  # a whole SiglipModel checkpoint: vision and text towers
    so400m = vision.PRESETS['so400m-patch14-384']
    assert (so400m.width // so400m.heads, so400m.num_patches) == (72, 729)
    assert vision.PRESETS['tiny'].num_patches == 9
    model = SiglipModel(vision.PRESETS['tiny'], TextConfig())
    save_siglip(model, tmp_path)
    assert sorted(os.listdir(tmp_path)) == ['config.json', 'model.safetensors']  # no temporary file left
    vision.info(str(tmp_path))
    printed = capsys.readouterr().out
    n_vision = sum(p.numel() for p in model.vision_model.parameters())
    assert f"vision tower: {n_vision:,} parameters" in printed
    assert f"whole checkpoint: {sum(p.numel() for p in model.parameters()):,}" in printed
    vision.main(['info', f'--path={tmp_path}'])
    assert capsys.readouterr().out == printed


def test_info_command_line_errors(tmp_path):
    for argv, message in [(['info'], 'config error: --path=... is required'),
                          (['info', f'--path={tmp_path}/nothing'],
                           f'error: no SigLIP checkpoint at {tmp_path}'),
                          (['info', '--paht=x'], "unknown config key 'paht'; did you mean path?"),
                          (['pretrain'], "takes a command (info); 'pretrain' is not one")]:
        with pytest.raises(SystemExit) as exit:
            vision.main(argv)
        assert message in str(exit.value) and '\n' not in str(exit.value), argv
