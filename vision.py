"""
The vision encoder: a SigLIP vision tower written in plain PyTorch, image preprocessing, the HF
checkpoint loader and `save_siglip`, which writes a checkpoint in the HF SiglipModel layout.

    pixels = normalize(torch.from_numpy(images))     # (B, S, S, 3) uint8 -> (B, 3, S, S) float
    tower = load_siglip('siglip-so400m-patch14-384')  # HF safetensors checkpoint (file or folder)
    feats = tower(pixels)                             # (B, 729, 1152): block -2, no final norm

Reads top to bottom: configs, preprocessing (decode -> RGB -> square uint8), the tower, the
checkpoint loader, then the writer. Small towers are pre-trained from scratch by tower.py.

    python vision.py info --path=PATH     # config and parameter count of a checkpoint
"""
import io
import json
import math
import os
import re
import sys
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageOps

import configurator
from attention import attention
from shards import atomic_write_bytes

# -----------------------------------------------------------------------------
# configs


@dataclass
class SiglipConfig:
    image_size: int = 384
    patch_size: int = 14
    width: int = 1152
    depth: int = 27
    heads: int = 16
    mlp_dim: int = 4304
    eps: float = 1e-6

    def __post_init__(self):
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by {self.heads} heads")

    @property
    def num_patches(self):
        return (self.image_size // self.patch_size) ** 2


PRESETS = {
    'so400m-patch14-384': SiglipConfig(384, 14, 1152, 27, 16, 4304),  # google/siglip-so400m-patch14-384
    'base-patch16-224': SiglipConfig(224, 16, 768, 12, 12, 3072),     # google/siglip-base-patch16-224
    # the CPU study: 16 px patches, 3x3 = 9 image positions, one per cell of the shapes world's grid.
    # With 6 px patches (64 positions) a tiny tower needs several times the CPU budget to tell shapes apart.
    'tiny': SiglipConfig(48, 16, 128, 4, 4, 512),
    'small': SiglipConfig(48, 16, 192, 6, 6, 768),
}
# a checkpoint without config.json: the released SigLIP towers are told apart by width
PRESET_BY_WIDTH = {1152: 'so400m-patch14-384', 768: 'base-patch16-224'}


# -----------------------------------------------------------------------------
# preprocessing: any image file -> RGB uint8 (size, size, 3), as SiglipImageProcessor does


class ImageError(ValueError):
    """An image that cannot be used (corrupt, truncated, absurd shape, unsupported mode)."""


MIN_SIDE = 2          # a 1-pixel line carries no picture
MAX_ASPECT = 200      # longer side / shorter side; a 1x20000 strip is not a photograph
MAX_PIXELS = Image.MAX_IMAGE_PIXELS  # PIL's own decompression-bomb limit (~89M pixels)
SIXTEEN_BIT_MODES = ('I;16', 'I;16B', 'I;16L', 'I;16N')
ALPHA_MODES = ('RGBA', 'LA', 'PA', 'RGBa', 'La')


def _source_name(image):
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return f"<{len(image)} bytes>"
    if isinstance(image, Image.Image):
        return f"<PIL image {image.size[0]}x{image.size[1]} {image.mode}>"
    return getattr(image, 'name', None) or f"<{type(image).__name__}>"


def _to_rgb(im):
    """Any PIL mode -> RGB. Transparency is composited on white (as HF's convert_to_rgb does)."""
    mode = im.mode
    if mode in SIXTEEN_BIT_MODES or mode == 'I':
        # PIL's own convert clips 16-bit values at 255 (a white image); scale them instead.
        # Mode 'I' holds 16-bit PNG/TIFF data, or 8-bit values widened: tell them apart by range.
        a = np.asarray(im).astype(np.float64)
        if mode in SIXTEEN_BIT_MODES or a.max(initial=0) > 255:
            a = np.clip(a, 0, 65535) / 257.0
        a = np.clip(np.round(a), 0, 255).astype(np.uint8)
        return Image.fromarray(a, mode='L').convert('RGB')
    if mode == 'F':
        raise ImageError("mode F (32-bit float) has no defined intensity range")
    if mode in ALPHA_MODES or im.info.get('transparency') is not None:
        if mode == 'La':  # premultiplied alpha: PIL converts it only through LA
            im = im.convert('LA')
        im = im.convert('RGBA')
        white = Image.new('RGBA', im.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, im).convert('RGB')
    return im.convert('RGB')


def _decode(im, source, size):
    w, h = im.size
    if min(w, h) < MIN_SIDE:
        raise ImageError(f"{source}: image is {w}x{h} pixels, a side is under {MIN_SIDE}")
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise ImageError(f"{source}: image is {w}x{h} pixels, aspect ratio over {MAX_ASPECT}")
    if w * h > MAX_PIXELS:
        raise ImageError(f"{source}: image is {w}x{h} pixels, over the {MAX_PIXELS} pixel limit")
    try:
        im.load()  # decode now: a truncated or corrupt file fails here, not later
        try:
            im = ImageOps.exif_transpose(im)
        except Exception:  # a broken EXIF block does not make the pixels unusable
            pass
        im = _to_rgb(im)
        im = im.resize((size, size), Image.Resampling.BICUBIC)  # no crop: the paper's resize-naive
    except ImageError as e:
        raise ImageError(f"{source}: {e}") from None
    except Exception as e:  # PIL raises many kinds (OSError, SyntaxError, ValueError, ...)
        raise ImageError(f"{source}: cannot decode image ({type(e).__name__}: {e})") from e
    return np.array(im, dtype=np.uint8)  # a writable copy


def preprocess(image, size):
    """A path, bytes, a binary file object or a PIL image -> uint8 numpy (size, size, 3).

    EXIF orientation applied, converted to RGB, bicubic resize to the square (no crop).
    Any image that cannot be used raises ImageError naming the source and the reason."""
    source = _source_name(image)
    if isinstance(image, Image.Image):
        return _decode(image, source, size)
    if isinstance(image, (bytes, bytearray, memoryview)):
        image = io.BytesIO(bytes(image))
    try:
        opened = Image.open(image)  # reads the header only
    except Exception as e:
        raise ImageError(f"{source}: not a readable image ({type(e).__name__}: {e})") from e
    with opened as im:
        return _decode(im, source, size)


def normalize(images, dtype=torch.float32):
    """uint8 (..., S, S, 3) -> (..., 3, S, S): scale 1/255, mean 0.5, std 0.5, as SigLIP expects.
    Images are stored as uint8; this runs on whatever device they are on (cheap to transfer)."""
    images = torch.as_tensor(images)
    if images.dtype != torch.uint8 or images.dim() < 3 or images.size(-1) != 3:
        raise ValueError(f"normalize expects uint8 images (..., S, S, 3), "
                         f"got {images.dtype} {tuple(images.shape)}")
    x = images.movedim(-1, -3).float() / 255.0
    return ((x - 0.5) / 0.5).to(dtype)


# -----------------------------------------------------------------------------
# the tower. Module names follow the HF checkpoint, so state_dict() keys equal HF keys minus
# the 'vision_model.' prefix.


class SelfAttention(nn.Module):

    def __init__(self, cfg):
        super().__init__()
        self.heads = cfg.heads
        self.q_proj = nn.Linear(cfg.width, cfg.width)
        self.k_proj = nn.Linear(cfg.width, cfg.width)
        self.v_proj = nn.Linear(cfg.width, cfg.width)
        self.out_proj = nn.Linear(cfg.width, cfg.width)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (proj(x).view(B, T, self.heads, C // self.heads).transpose(1, 2)  # (B, H, T, D)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        y = attention(q, k, v, causal=False)
        return self.out_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):

    def __init__(self, cfg):
        super().__init__()
        self.fc1 = nn.Linear(cfg.width, cfg.mlp_dim)
        self.fc2 = nn.Linear(cfg.mlp_dim, cfg.width)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate='tanh'))


class Block(nn.Module):
    """Pre-LN transformer block, shared by the vision and the text tower."""

    def __init__(self, cfg):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.width, eps=cfg.eps)
        self.self_attn = SelfAttention(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.width, eps=cfg.eps)
        self.mlp = MLP(cfg)

    def forward(self, x):
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class PoolingAttention(nn.Module):
    """One learned query attends over the patches (the tensors of nn.MultiheadAttention)."""

    def __init__(self, cfg):
        super().__init__()
        self.heads = cfg.heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * cfg.width, cfg.width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * cfg.width))
        self.out_proj = nn.Linear(cfg.width, cfg.width)

    def forward(self, query, x):
        B, T, C = x.shape
        wq, wk, wv = self.in_proj_weight.chunk(3)
        bq, bk, bv = self.in_proj_bias.chunk(3)
        q = F.linear(query, wq, bq).view(B, 1, self.heads, -1).transpose(1, 2)  # (B, H, 1, D)
        k = F.linear(x, wk, bk).view(B, T, self.heads, -1).transpose(1, 2)      # (B, H, T, D)
        v = F.linear(x, wv, bv).view(B, T, self.heads, -1).transpose(1, 2)
        y = attention(q, k, v, causal=False)
        return self.out_proj(y.transpose(1, 2).reshape(B, 1, C))


class PoolingHead(nn.Module):
    """SigLIP's MAP head: the image embedding for the sigmoid loss. The VLM does not use it."""

    def __init__(self, cfg):
        super().__init__()
        self.probe = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.attention = PoolingAttention(cfg)
        self.layernorm = nn.LayerNorm(cfg.width, eps=cfg.eps)
        self.mlp = MLP(cfg)

    def forward(self, x):
        h = self.attention(self.probe.expand(x.size(0), -1, -1), x)  # (B, 1, C)
        h = h + self.mlp(self.layernorm(h))
        return h[:, 0]  # (B, C)


def init_weights(module):
    """SigLIP's initialisation (big_vision / HF) for training from scratch."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):  # lecun normal
        nn.init.trunc_normal_(module.weight, std=1 / math.sqrt(module.weight[0].numel()))
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=1 / math.sqrt(module.weight.size(1)))
    elif isinstance(module, PoolingAttention):
        nn.init.xavier_uniform_(module.in_proj_weight)
    elif isinstance(module, PoolingHead):
        nn.init.xavier_uniform_(module.probe.view(1, -1))


class SiglipVisionTower(nn.Module):
    """Patch features of a SigLIP ViT: conv patches + learned positions, pre-LN blocks.

    feature_layer picks the features, indexing HF's hidden_states tuple (0 = the embeddings,
    i = the output of block i, negative counts from the end: -2 = the output of the second-to-last
    block). The output of the final block (-1, or depth) always goes through post_layernorm,
    as HF's last_hidden_state does; any other layer is returned without a norm. Blocks past the
    requested one are not run. The module keeps a default (self.feature_layer) that forward()
    uses when it is given none."""

    def __init__(self, cfg, head=True, feature_layer=-2):
        super().__init__()
        self.cfg = cfg
        self.feature_layer = feature_layer
        self.layer_index(feature_layer)  # fail early on a bad index
        self.embeddings = nn.ModuleDict(dict(
            patch_embedding=nn.Conv2d(3, cfg.width, cfg.patch_size, stride=cfg.patch_size),  # valid padding
            position_embedding=nn.Embedding(cfg.num_patches, cfg.width),
        ))
        self.encoder = nn.ModuleDict(dict(layers=nn.ModuleList(Block(cfg) for _ in range(cfg.depth))))
        self.post_layernorm = nn.LayerNorm(cfg.width, eps=cfg.eps)
        self.head = PoolingHead(cfg) if head else None
        self.apply(init_weights)

    def layer_index(self, feature_layer):
        """feature_layer -> number of blocks to run (0..depth)."""
        depth = self.cfg.depth
        n = feature_layer + depth + 1 if feature_layer < 0 else feature_layer
        if not 0 <= n <= depth:
            raise ValueError(f"feature_layer {feature_layer} is out of range for a tower of {depth} blocks "
                             f"(valid: {-depth - 1}..{depth})")
        return n

    def forward(self, pixels, feature_layer=None):
        """Normalised pixels (B, 3, S, S) -> patch features (B, N, C)."""
        n = self.layer_index(self.feature_layer if feature_layer is None else feature_layer)
        S = self.cfg.image_size
        if pixels.dim() != 4 or tuple(pixels.shape[1:]) != (3, S, S):
            raise ValueError(f"the tower expects normalised pixels (B, 3, {S}, {S}), "
                             f"got {tuple(pixels.shape)}")
        layers = self.encoder['layers']
        if n > len(layers):
            raise ValueError(f"block {n} was dropped from this tower (it keeps {len(layers)} blocks)")
        patch_embedding = self.embeddings['patch_embedding']
        x = patch_embedding(pixels.to(patch_embedding.weight.dtype))  # (B, C, S/P, S/P)
        x = x.flatten(2).transpose(1, 2)  # (B, N, C)
        x = x + self.embeddings['position_embedding'].weight
        for block in layers[:n]:
            x = block(x)
        if n == self.cfg.depth:
            x = self.post_layernorm(x)
        return x

    def embed(self, pixels):
        """Pooled image embedding (B, C): final block, post_layernorm, MAP head."""
        if self.head is None:
            raise ValueError("this tower has no MAP head "
                             "(the checkpoint had none, or drop_unused removed it)")
        return self.head(self(pixels, feature_layer=-1))

    def drop_unused(self):
        """Delete what the default feature_layer never uses (later blocks, final norm, head):
        saves memory, and data-parallel training of an unfrozen tower needs every parameter used."""
        n = self.layer_index(self.feature_layer)
        self.encoder['layers'] = self.encoder['layers'][:n]
        if n < self.cfg.depth:
            self.post_layernorm = None
        self.head = None
        return self


# -----------------------------------------------------------------------------
# loading HF checkpoints (safetensors): a file, a folder, or a sharded checkpoint with its index


def _safetensors():
    try:
        import safetensors.torch
    except ImportError:
        raise ImportError("reading and writing SigLIP checkpoints needs the safetensors package: "
                          "pip install safetensors") from None
    return safetensors


def _checkpoint_files(path):
    """-> (list of .safetensors files, folder that holds config.json)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no SigLIP checkpoint at {path}")
    index = None
    if os.path.isdir(path):
        folder = path
        if os.path.exists(os.path.join(path, 'model.safetensors.index.json')):
            index = os.path.join(path, 'model.safetensors.index.json')
        elif os.path.exists(os.path.join(path, 'model.safetensors')):
            return [os.path.join(path, 'model.safetensors')], folder
        else:
            found = sorted(f for f in os.listdir(path) if f.endswith('.safetensors'))
            if len(found) != 1:
                raise FileNotFoundError(f"{path}: expected model.safetensors or "
                                        f"model.safetensors.index.json, "
                                        f"found {found or 'no .safetensors file'}")
            return [os.path.join(path, found[0])], folder
    else:
        folder = os.path.dirname(os.path.abspath(path))
        if path.endswith('.json'):
            index = path
        else:
            return [path], folder
    try:
        with open(index) as f:
            weight_map = json.load(f)['weight_map']
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{index}: not a safetensors index with a weight_map ({e})") from None
    files = [os.path.join(os.path.dirname(index), name) for name in sorted(set(weight_map.values()))]
    missing = [f for f in files if not os.path.exists(f)]
    if missing:
        raise FileNotFoundError(f"{index}: shards listed in the index are missing: {missing}")
    return files, folder


def _read_shapes(files):
    """-> {key: (file, shape)} over all shards, without reading the tensors."""
    safe_open = _safetensors().safe_open
    shapes = {}
    for file in files:
        try:
            with safe_open(file, framework='pt') as f:
                for key in f.keys():
                    shapes[key] = (file, tuple(f.get_slice(key).get_shape()))
        except Exception as e:
            raise ValueError(f"{file}: not a readable safetensors file ({type(e).__name__}: {e})") from e
    return shapes


def _vision_keys(shapes):
    """Checkpoint keys -> {tower key: checkpoint key}, and the keys that belong to nothing.

    SiglipModel and transformers-4.x SiglipVisionModel checkpoints prefix the tower with
    'vision_model.'; transformers 5.x saves SiglipVisionModel without the prefix."""
    prefixed = any(k.startswith('vision_model.') for k in shapes)
    mapping, unexpected = {}, []
    for key in shapes:
        if key.endswith('position_ids'):  # a non-persistent buffer that old checkpoints stored
            continue
        if prefixed:
            if key.startswith('vision_model.'):
                mapping[key[len('vision_model.'):]] = key
            elif not (key.startswith('text_model.') or key in ('logit_scale', 'logit_bias')):
                unexpected.append(key)
        else:
            mapping[key] = key
    return mapping, unexpected


def _config_from_json(file):
    with open(file) as f:
        try:
            raw = json.load(f)
        except ValueError as e:
            raise ValueError(f"{file}: not valid JSON ({e})") from None
    vc = raw.get('vision_config', raw)  # SiglipConfig nests it; SiglipVisionConfig is flat
    # fields left out of an HF config.json take the SiglipVisionConfig defaults
    if vc.get('hidden_act', 'gelu_pytorch_tanh') not in ('gelu_pytorch_tanh', 'gelu_new'):
        raise ValueError(f"{file}: hidden_act {vc['hidden_act']!r} "
                         f"is not the tanh GELU this tower implements")
    if vc.get('num_channels', 3) != 3:
        raise ValueError(f"{file}: num_channels {vc['num_channels']} (the tower takes RGB images)")
    return SiglipConfig(image_size=vc.get('image_size', 224), patch_size=vc.get('patch_size', 16),
                        width=vc.get('hidden_size', 768), depth=vc.get('num_hidden_layers', 12),
                        heads=vc.get('num_attention_heads', 12), mlp_dim=vc.get('intermediate_size', 3072),
                        eps=vc.get('layer_norm_eps', 1e-6))


def _config_from_tensors(shapes, mapping, where):
    """Width, patch, image size, depth and MLP size are in the tensors; heads and eps come from
    the preset of the same width."""
    def shape(key):
        if key not in mapping:
            raise ValueError(f"{where}: no config.json and no {key} tensor to infer the tower's shape from")
        return shapes[mapping[key]][1]
    width, _, patch, _ = shape('embeddings.patch_embedding.weight')
    positions = shape('embeddings.position_embedding.weight')[0]
    preset = PRESETS.get(PRESET_BY_WIDTH.get(width))
    if preset is None:
        raise ValueError(f"{where}: no config.json beside the weights, and width {width} matches no known "
                         f"SigLIP (1152 = so400m, 768 = base): the number of heads is not in the tensors. "
                         f"Put the model's config.json (SiglipConfig or SiglipVisionConfig) next to the "
                         f"weights.")
    layers = {int(m.group(1)) for k in mapping if (m := re.match(r'encoder\.layers\.(\d+)\.', k))}
    return SiglipConfig(image_size=math.isqrt(positions) * patch, patch_size=patch, width=width,
                        depth=max(layers) + 1 if layers else 0, heads=preset.heads,
                        mlp_dim=shape('encoder.layers.0.mlp.fc1.weight')[0], eps=preset.eps)


def load_siglip(path, feature_layer=-2, dtype=torch.float32):
    """An HF SigLIP checkpoint (SiglipModel or SiglipVisionModel, safetensors) -> SiglipVisionTower.

    path: a .safetensors file, a folder, or a sharded checkpoint's index .json. The shape comes
    from config.json beside the weights, else from the tensors plus the preset of the same width.
    Every tensor is checked: missing, unexpected and wrongly shaped ones raise one error listing
    all of them. feature_layer is stored on the tower as its default (forward can override it).
    The MAP head is built when the checkpoint has one."""
    files, folder = _checkpoint_files(path)
    shapes = _read_shapes(files)
    mapping, unexpected = _vision_keys(shapes)
    config_file = os.path.join(folder, 'config.json')
    if os.path.exists(config_file):
        cfg = _config_from_json(config_file)
    else:
        cfg = _config_from_tensors(shapes, mapping, path)
    has_head = any(k.startswith('head.') for k in mapping)
    with torch.device('meta'):  # no time spent on a random init that the checkpoint overwrites
        tower = SiglipVisionTower(cfg, head=has_head, feature_layer=feature_layer)
    expected = {k: tuple(v.shape) for k, v in tower.state_dict().items()}
    missing = [k for k in expected if k not in mapping]
    unexpected += [mapping[k] for k in mapping if k not in expected]
    wrong = [f"{mapping[k]}: {shapes[mapping[k]][1]} in the checkpoint, {expected[k]} expected"
             for k in expected if k in mapping and shapes[mapping[k]][1] != expected[k]]
    if missing or unexpected or wrong:
        lines = [f"{path}: the checkpoint does not match a SigLIP tower of {cfg}"]
        lines += [f"  missing: {k}" for k in missing]
        lines += [f"  unexpected: {k}" for k in unexpected]
        lines += [f"  wrong shape: {w}" for w in wrong]
        raise ValueError('\n'.join(lines))
    safe_open = _safetensors().safe_open
    state = {}
    for file in files:
        with safe_open(file, framework='pt') as f:
            for k, ck in mapping.items():
                if shapes[ck][0] == file:
                    state[k] = f.get_tensor(ck).to(dtype)
    tower.load_state_dict(state, assign=True)
    return tower.eval()


def save_siglip(model, out_dir):
    """Write model.safetensors in the HF SiglipModel key layout and config.json (SiglipConfig
    form), so that load_siglip (and transformers' SiglipModel) read it as a real checkpoint.
    model: a SiglipModel of tower.py (vision_model, text_model, logit_scale, logit_bias). Each file
    goes through a temporary name; model.safetensors comes last, so its presence means the
    checkpoint is complete."""
    save = _safetensors().torch.save
    os.makedirs(out_dir, exist_ok=True)
    v, t = model.vision_model.cfg, model.text_model.cfg
    config = {
        'model_type': 'siglip',
        'architectures': ['SiglipModel'],
        'vision_config': dict(model_type='siglip_vision_model', hidden_size=v.width,
                              intermediate_size=v.mlp_dim, num_hidden_layers=v.depth,
                              num_attention_heads=v.heads, image_size=v.image_size,
                              patch_size=v.patch_size, layer_norm_eps=v.eps, num_channels=3,
                              hidden_act='gelu_pytorch_tanh',
                              vision_use_head=model.vision_model.head is not None),
        'text_config': dict(model_type='siglip_text_model', vocab_size=t.vocab_size, hidden_size=t.width,
                            intermediate_size=t.mlp_dim, num_hidden_layers=t.depth,
                            num_attention_heads=t.heads, max_position_embeddings=t.max_len,
                            layer_norm_eps=t.eps, projection_size=v.width,
                            hidden_act='gelu_pytorch_tanh', pad_token_id=t.pad_id),
    }
    atomic_write_bytes(os.path.join(out_dir, 'config.json'), json.dumps(config, indent=2).encode())
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(os.path.join(out_dir, 'model.safetensors'), save(state, metadata={'format': 'pt'}))


# -----------------------------------------------------------------------------

def info(path):
    """Print the config and the parameter counts of a checkpoint (a file, a folder or an index)."""
    tower = load_siglip(path, feature_layer=-1)
    files, _ = _checkpoint_files(path)
    shapes = _read_shapes(files)
    total = sum(math.prod(shape) for _, shape in shapes.values())
    vision = sum(p.numel() for p in tower.parameters())
    print(f"{path}: {len(files)} file(s), {len(shapes)} tensors")
    print(json.dumps(asdict(tower.cfg), indent=2))
    print(f"MAP head: {'yes' if tower.head is not None else 'no'}")
    print(f"vision tower: {vision:,} parameters ({vision / 1e6:.1f}M); whole checkpoint: {total:,}")


INFO_DEFAULTS = dict(
    path='',  # a .safetensors file, a folder or a sharded checkpoint's index .json
)


def main(argv=None):
    command, settings = configurator.parse_command({'info': INFO_DEFAULTS}, argv, 'vision.py')
    configurator.require(settings, 'path')
    try:
        info(settings['path'])
    except (ValueError, OSError, ImportError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
