"""
The decoder language model (OpenLM / DCLM-1B architecture) and, below it, the VLM that joins a
vision encoder, a projector and the LM.

Decoder facts (open_lm model.py, DCLM-1B config): pre-norm blocks; gain-only LayerNorm (eps 1e-5);
one fused in_proj (d -> 3d); qk-norm = gain-only LayerNorm over the full width of q and k before the
heads are split; rotary embeddings (base 10000, rotate-half); SwiGLU with hidden 256*ceil(8d/3/256);
no biases; untied input embedding and output head; truncated-normal init with std 1/sqrt(fan_in)
and output projections scaled by 1/sqrt(2*(layer+1)).

DCLM-1B's published weights (open_lm's HF layout) load into the LM (load_dclm, and train.py's init_from
naming their folder), and a trained LM or VLM's language model goes back to that layout:

    python model.py export --ckpt=out/mixed_1b/080_frozen_mlp2/ckpt.pt --out=export/dclm_layout
"""
import hashlib
import inspect
import json
import math
import os
import sys
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from attention import attention
from shards import atomic_write_bytes
from tokenizer import TOKENIZERS, get_tokenizer, stored_tokenizer_file, token_ids
from vision import SiglipConfig, SiglipVisionTower, normalize


@dataclass
class LMConfig:
    vocab_size: int = 50304  # GPT-2's 50257 ids padded to a multiple of 64
    block_size: int = 2048
    n_layer: int = 24
    n_head: int = 16
    n_embd: int = 2048
    norm_eps: float = 1e-5
    rope_base: float = 10000.0


# The paper's Table 2 sizes, and small ones for the CPU (vocab_size of the byte tokenizer; training takes the
# vocabulary size from the data's manifest, e.g. 1280 for the shapes tokenizer).
LM_PRESETS = {
    '1b': dict(n_layer=24, n_head=16, n_embd=2048, block_size=2048, vocab_size=50304),
    '79m': dict(n_layer=8, n_head=4, n_embd=512, block_size=2048, vocab_size=50304),
    'tiny': dict(n_layer=4, n_head=4, n_embd=128, block_size=256, vocab_size=320),
    'nano': dict(n_layer=2, n_head=2, n_embd=64, block_size=64, vocab_size=320),
}


def lm_config(preset, **overrides):
    if preset not in LM_PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; known: {sorted(LM_PRESETS)}")
    return LMConfig(**{**LM_PRESETS[preset], **overrides})


def swiglu_hidden(n_embd):
    return 256 * math.ceil(8 * n_embd / 3 / 256)


class LayerNorm(nn.Module):
    """LayerNorm with a gain and no bias."""

    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, None, self.eps)


def rotary_tables(head_dim, max_len, base, device=None):
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(max_len, device=device, dtype=torch.float32), inv_freq)  # (T, D/2)
    angles = torch.cat([angles, angles], dim=-1)  # (T, D): rotate-half pairs i with i + D/2
    return angles.cos(), angles.sin()


def apply_rotary(x, cos, sin):
    # x (B, H, T, D); cos/sin (T, D)
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


class KVCache:
    """Keys and values of every layer for incremental decoding; `doc_ids` masks left padding."""

    def __init__(self, n_layer, batch, n_head, max_len, head_dim, device, dtype):
        shape = (batch, n_head, max_len, head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.doc_ids = None
        self.pos = 0

    def update(self, layer, k, v):
        T = k.size(2)
        self.k[layer][:, :, self.pos:self.pos + T] = k
        self.v[layer][:, :, self.pos:self.pos + T] = v
        return self.k[layer][:, :, :self.pos + T], self.v[layer][:, :, :self.pos + T]


class Attention(nn.Module):
    def __init__(self, config):
        super().__init__()
        d = config.n_embd
        self.n_head = config.n_head
        self.in_proj = nn.Linear(d, 3 * d, bias=False)
        self.q_norm = LayerNorm(d, config.norm_eps)
        self.k_norm = LayerNorm(d, config.norm_eps)
        self.out_proj = nn.Linear(d, d, bias=False)

    def forward(self, x, cos, sin, doc_ids=None, kv_cache=None, layer=0):
        B, T, C = x.shape
        q, k, v = self.in_proj(x).split(C, dim=-1)
        q, k = self.q_norm(q), self.k_norm(k)  # over the full width, before the heads are split
        # split the heads: (B, T, C) -> (B, H, T, D)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if kv_cache is not None:
            k, v = kv_cache.update(layer, k, v)  # (B, H, Tk, D), Tk = cached + T
        y = attention(q, k, v, causal=True, doc_ids=doc_ids)  # (B, H, T, D)
        return self.out_proj(y.transpose(1, 2).reshape(B, T, C))


class SwiGLU(nn.Module):
    def __init__(self, config):
        super().__init__()
        hidden = swiglu_hidden(config.n_embd)
        self.w12 = nn.Linear(config.n_embd, 2 * hidden, bias=False)
        self.w3 = nn.Linear(hidden, config.n_embd, bias=False)

    def forward(self, x):
        gate, up = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, config, layer):
        super().__init__()
        self.layer = layer
        self.attention_norm = LayerNorm(config.n_embd, config.norm_eps)
        self.attention = Attention(config)
        self.ffn_norm = LayerNorm(config.n_embd, config.norm_eps)
        self.feed_forward = SwiGLU(config)

    def forward(self, x, cos, sin, doc_ids=None, kv_cache=None):
        x = x + self.attention(self.attention_norm(x), cos, sin, doc_ids, kv_cache, self.layer)
        return x + self.feed_forward(self.ffn_norm(x))


def trunc_normal_(weight, std):
    nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-3 * std, b=3 * std)


class LM(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.n_embd)
        self.layers = nn.ModuleList([Block(config, i) for i in range(config.n_layer)])
        self.norm = LayerNorm(config.n_embd, config.norm_eps)
        self.output = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        head_dim = config.n_embd // config.n_head
        assert config.n_embd % config.n_head == 0 and head_dim % 2 == 0, "head dim must be even for rotary"
        cos, sin = rotary_tables(head_dim, config.block_size, config.rope_base)
        self.register_buffer('rope_cos', cos, persistent=False)
        self.register_buffer('rope_sin', sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self):
        d = self.config.n_embd
        trunc_normal_(self.tok_embeddings.weight, 1 / math.sqrt(d))
        trunc_normal_(self.output.weight, 1 / math.sqrt(d))
        for block in self.layers:
            depth_scale = 1 / math.sqrt(2 * (block.layer + 1))
            trunc_normal_(block.attention.in_proj.weight, 1 / math.sqrt(d))
            trunc_normal_(block.attention.out_proj.weight, depth_scale / math.sqrt(d))
            trunc_normal_(block.feed_forward.w12.weight, 1 / math.sqrt(d))
            trunc_normal_(block.feed_forward.w3.weight, depth_scale / math.sqrt(swiglu_hidden(d)))

    def num_params(self, exclude_embedding=True):
        """Parameters, without the input embedding table by default (it does no matmul)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.tok_embeddings.weight.numel() if exclude_embedding else n

    def forward(self, idx, targets=None, doc_ids=None, inputs_embeds=None, kv_cache=None,
                z_loss=0.0, reduction='mean', last_only=False):
        """
        idx (B, T) token ids, or inputs_embeds (B, T, C) (the VLM's merged embeddings).
        targets (B, T) with -100 where no loss. Returns (logits, loss); loss is None without targets.
        reduction='sum' returns the summed loss, for gradient accumulation normalised by the number
        of target tokens in the whole step.
        """
        x = self.tok_embeddings(idx) if inputs_embeds is None else inputs_embeds  # (B, T, C)
        T = x.size(1)
        start = 0
        if kv_cache is not None:
            start = kv_cache.pos
            if doc_ids is not None:
                kv_cache.doc_ids = (doc_ids if kv_cache.doc_ids is None
                                    else torch.cat([kv_cache.doc_ids, doc_ids], 1))
                doc_ids = kv_cache.doc_ids
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds block_size {self.config.block_size}")
        cos, sin = self.rope_cos[start:start + T], self.rope_sin[start:start + T]
        for block in self.layers:
            x = block(x, cos, sin, doc_ids, kv_cache)
        if kv_cache is not None:
            kv_cache.pos += T
        x = self.norm(x)
        if targets is None:
            return self.output(x[:, -1:] if last_only else x), None
        logits = self.output(x)  # (B, T, V)
        return logits, lm_loss(logits, targets, z_loss, reduction)

    def configure_optimizers(self, weight_decay, learning_rate, betas, eps, device_type):
        return make_adamw(self.named_parameters(), weight_decay, learning_rate, betas, eps, device_type)

    def flops_per_token(self, T):
        """
        Training FLOPs per token: 6N (N = matmul weights, the head yes, the input table no)
        + 12·L·H·Q·T.
        """
        c = self.config
        return 6 * self.num_params() + 12 * c.n_layer * c.n_head * (c.n_embd // c.n_head) * T

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=0.0, top_k=None, stop_token=None,
                 inputs_embeds=None, doc_ids=None):
        """
        Decode with a KV cache. idx (B, T) is the prompt (or inputs_embeds (B, T, C) with idx giving
        only its length); temperature 0 is greedy. Left-padded batches pass doc_ids (B, T) with a
        distinct id on the padding, so real tokens never attend to it; rotary makes the shift of
        positions irrelevant. Stops when every row has produced `stop_token`.
        Returns the new tokens (B, <= max_new_tokens).
        """
        B, T = idx.shape[:2]
        c = self.config
        param = self.output.weight
        cache = KVCache(c.n_layer, B, c.n_head, T + max_new_tokens, c.n_embd // c.n_head, param.device,
                        inputs_embeds.dtype if inputs_embeds is not None else param.dtype)
        if T + max_new_tokens > c.block_size:
            raise ValueError(f"prompt ({T}) + max_new_tokens ({max_new_tokens}) exceeds "
                             f"block_size {c.block_size}")
        logits, _ = self(idx, inputs_embeds=inputs_embeds, kv_cache=cache, doc_ids=doc_ids, last_only=True)
        new_doc = None if doc_ids is None else doc_ids[:, -1:]
        out, done = [], torch.zeros(B, dtype=torch.bool, device=param.device)
        for _ in range(max_new_tokens):
            next_token = sample_next(logits[:, -1, :], temperature, top_k)  # (B, 1)
            if stop_token is not None:
                next_token = torch.where(done[:, None], torch.full_like(next_token, stop_token), next_token)
                done |= next_token[:, 0] == stop_token
            out.append(next_token)
            if done.all() or len(out) == max_new_tokens:
                break
            logits, _ = self(next_token, kv_cache=cache, doc_ids=new_doc, last_only=True)
        return torch.cat(out, dim=1)


def lm_loss(logits, targets, z_loss=0.0, reduction='mean'):
    """
    Cross-entropy over targets != -100, plus z_loss * logsumexp(logits)^2 (OpenLM's stabiliser).
    reduction: 'mean' over the targets, 'sum', or 'none' (per position, 0 where there is no target).
    """
    logits = logits.float().view(-1, logits.size(-1))
    targets = targets.reshape(-1)
    loss = F.cross_entropy(logits, targets, ignore_index=-100, reduction='none')
    if z_loss:
        loss = loss + z_loss * torch.logsumexp(logits, dim=-1) ** 2 * (targets != -100)
    if reduction == 'none':
        return loss
    if reduction == 'sum':
        return loss.sum()
    return loss.sum() / (targets != -100).sum().clamp(min=1)


def sample_next(logits, temperature, top_k):
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float('-inf'))
    return torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)


# -----------------------------------------------------------------------------
# Scoring text: eval.py's multiple choice and the lm-eval bridge score through this one function

@torch.no_grad()
def loglikelihoods(lm, requests, batch_size, pad_id, desc='mc', greedy=False):
    """Sum of log p(continuation | context) per request (context, continuation: token lists), in
    right-padded batches (a causal model never looks at the padding after a row). A context that does not
    fit is cut from the left. greedy: (sum, whether greedy decoding gives the continuation) per request."""
    block_size = lm.config.block_size
    device = lm.output.weight.device
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i][0]) - len(requests[i][1]))
    results = [0.0] * len(requests)
    for start in tqdm(range(0, len(order), batch_size), desc=desc, unit='batch', dynamic_ncols=True):
        chunk = order[start:start + batch_size]
        seqs = [(requests[i][0] + requests[i][1])[-(block_size + 1):] for i in chunk]
        width = max(len(s) for s in seqs) - 1
        idx = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        for row, s in enumerate(seqs):
            idx[row, :len(s) - 1] = torch.tensor(s[:-1])
        logits, _ = lm(idx.to(device))  # (B, T, V)
        for row, (i, s) in enumerate(zip(chunk, seqs)):
            n, end = len(requests[i][1]), len(s) - 1
            # (n, V): the positions that predict the continuation
            logp = F.log_softmax(logits[row, end - n:end].float(), dim=-1)
            target = torch.tensor(s[-n:], device=logp.device)
            results[i] = logp.gather(1, target[:, None]).sum().item()
            if greedy:
                results[i] = (results[i], bool((logp.argmax(dim=-1) == target).all()))
    return results


def make_adamw(named_params, weight_decay, learning_rate, betas, eps, device_type, groups=None):
    """AdamW with weight decay on >=2-D weights only. `groups` maps a name prefix to an lr scale."""
    params = [(n, p) for n, p in named_params if p.requires_grad]
    groups = groups or {}
    buckets = {}
    for name, p in params:
        scale = next((s for prefix, s in groups.items() if name.startswith(prefix)), 1.0)
        decay = weight_decay if p.dim() >= 2 else 0.0
        buckets.setdefault((scale, decay), []).append(p)
    param_groups = [dict(params=ps, weight_decay=decay, lr_scale=scale, lr=learning_rate * scale)
                    for (scale, decay), ps in buckets.items()]
    fused = device_type == 'cuda' and 'fused' in inspect.signature(torch.optim.AdamW).parameters
    return torch.optim.AdamW(param_groups, lr=learning_rate, betas=betas, eps=eps,
                             **({'fused': True} if fused else {}))


def lr_at(step, max_steps, peak, floor, warmup, peak_at_warmup_end=False):
    """Linear warmup, then cosine decay from `peak` to `floor` at `max_steps`. The ramp is
    peak * (step + 1) / (warmup + 1), so the first step after it is the peak (train.py); with
    peak_at_warmup_end it is peak * (step + 1) / warmup, reaching the peak on its last step (tower.py)."""
    if step < warmup:
        return peak * (step + 1) / (warmup if peak_at_warmup_end else warmup + 1)
    if step >= max_steps:
        return floor
    progress = (step - warmup) / max(1, max_steps - warmup)
    return floor + 0.5 * (1.0 + math.cos(math.pi * progress)) * (peak - floor)


# bf16 dense peak FLOP/s by GPU name, for MFU
PEAK_FLOPS = [('H200', 989e12), ('H100 NVL', 835e12), ('H100 PCIe', 756e12), ('H100', 989e12),
              ('A100', 312e12), ('L40S', 362e12), ('A10G', 125e12)]


def peak_flops(device_name):
    """bf16 dense peak of a GPU by its name, or None (unknown) for anything else, the CPU included."""
    for key, flops in PEAK_FLOPS:
        if key.lower() in (device_name or '').lower():
            return flops
    return None


def estimate_mfu(flops_per_token, tokens_per_sec, device_name):
    """Model FLOPs utilisation, or None when the device's peak is unknown."""
    peak = peak_flops(device_name)
    return None if peak is None else flops_per_token * tokens_per_sec / peak


# -----------------------------------------------------------------------------
# The VLM: SigLIP patches -> projector -> the LM's embeddings at the <|image|> positions

PROJECTORS = ('mlp2', 'mlp1')


def make_projector(kind, vision_width, n_embd):
    if kind == 'mlp2':  # Prismatic's gelu-mlp: the default
        return nn.Sequential(nn.Linear(vision_width, n_embd), nn.GELU(), nn.Linear(n_embd, n_embd))
    if kind == 'mlp1':  # Prismatic's linear, LLaVA-1's projector
        return nn.Linear(vision_width, n_embd)
    raise ValueError(f"projector must be one of {PROJECTORS}, got {kind!r}")


class VLM(nn.Module):
    """
    The batch of the contracts: input_ids (B, T) with <|image|> at the image positions, targets (B, T)
    (-100 where no loss), doc_ids (B, T) or None, images (B, S, S, 3) uint8 and has_image (B,) bool.
    Rows with an image hold exactly num_patches <|image|> tokens; their embeddings are replaced by the
    projected patch features, in order. Everything else is the LM's usual path.
    """

    def __init__(self, lm_config, vision_config, projector='mlp2', feature_layer=-2, image_id=50257,
                 freeze_vision=True):
        super().__init__()
        self.lm = LM(lm_config)
        self.vision = SiglipVisionTower(vision_config, head=False, feature_layer=feature_layer).drop_unused()
        self.projector = make_projector(projector, vision_config.width, lm_config.n_embd)
        self.image_id = image_id
        self.num_patches = vision_config.num_patches
        self.freeze_vision = freeze_vision
        self.vision.requires_grad_(not freeze_vision)

    def train(self, mode=True):
        super().train(mode)
        if self.freeze_vision:
            self.vision.eval()  # a frozen encoder stays in eval mode
        return self

    def encode_images(self, images):
        """uint8 (N, S, S, 3) -> projected patches (N, P, C)."""
        dtype = self.vision.embeddings['patch_embedding'].weight.dtype
        pixels = normalize(images, dtype)
        if self.freeze_vision:
            with torch.no_grad():
                features = self.vision(pixels)  # (N, P, W)
        else:
            features = self.vision(pixels)
        return self.projector(features.to(self.projector_dtype()))  # (N, P, C)

    def projector_dtype(self):
        return next(self.projector.parameters()).dtype

    def embed(self, input_ids, images=None, has_image=None):
        """(B, T) ids -> (B, T, C) embeddings, the projected patches at the <|image|> positions."""
        return self.embed_rows(input_ids, images, self.image_rows(input_ids, images, has_image))

    def embed_rows(self, input_ids, images, rows):
        """embed() given image_rows(): no data-dependent branch, so a compiled model traces it whole."""
        x = self.lm.tok_embeddings(input_ids)  # (B, T, C)
        if rows is None:
            if self.training and torch.is_grad_enabled():
                # no image in this micro-batch: keep the projector (and a trained encoder) in the graph
                # with a zero contribution, so data-parallel gradient syncs still see every parameter
                blank = torch.zeros((1, *self.image_shape()), dtype=torch.uint8, device=x.device)
                dummy = self.encode_images(blank)
                x = x + 0.0 * dummy.sum().to(x.dtype)
            return x
        patches = self.encode_images(images[rows])  # (N, P, C), only the rows that hold an image
        is_image = input_ids == self.image_id  # (B, T)
        return x.masked_scatter(is_image[..., None], patches.to(x.dtype))

    # Which rows hold an image, and whether the batch is well formed, depend on the data: a compiled
    # model cannot branch on them inside a graph. Every such question is asked in check_image_rows, at
    # once (one device sync), run eagerly at the start of VLM.forward, before any traced op: the rest of
    # the forward compiles to one graph (7 graphs before, split at each check). Encoding every row's
    # image instead would need no break but costs the encoder on the rows without one
    # (docs/benchmarks.md, the mixed-stage step on packed rows).
    def image_rows(self, input_ids, images, has_image):
        """The indices (N,) of the rows with an image, or None when there are none (or no images); a
        ValueError when a row with an image lacks exactly num_patches <|image|> tokens or a row without
        one has any."""
        if torch.compiler.is_compiling():
            # wrapped only here, not with a decorator: torch.compiler.disable imports dynamo and with it
            # Triton, which must not be imported before attention.py chooses its interpreter on a CPU
            return torch.compiler.disable(self.check_image_rows)(input_ids, images, has_image, True)
        return self.check_image_rows(input_ids, images, has_image)

    def check_image_rows(self, input_ids, images, has_image, compiled=False):
        P = self.num_patches
        is_image = input_ids == self.image_id  # (B, T)
        if images is None or has_image is None:
            if bool(is_image.any()):
                raise ValueError("the batch has <|image|> tokens but no images")
            return None
        per_row = is_image.sum(1)  # (B,)
        n, found, stray, wrong = torch.stack([
            has_image.sum(), per_row[has_image].sum(), per_row[~has_image].sum(),
            (has_image & (per_row != P)).sum()]).tolist()
        if n == 0:
            if stray:
                raise ValueError("the batch has <|image|> tokens but no images")
            return None
        if wrong or stray:
            raise ValueError(f"each row with an image needs exactly {P} <|image|> tokens "
                             f"(and rows without one none): found {found + stray}, expected {n * P}")
        rows = has_image.nonzero().squeeze(1)  # (N,)
        if compiled:  # (dynamo is imported then) N varies: one graph for any N >= 2, not one per N
            torch._dynamo.maybe_mark_dynamic(rows, 0)
        return rows

    def image_shape(self):
        S = self.vision.cfg.image_size
        return (S, S, 3)

    def forward(self, input_ids, targets=None, doc_ids=None, images=None, has_image=None, z_loss=0.0,
                reduction='mean'):
        # embed()'s two steps, called from here: image_rows' graph break then comes before any traced op
        # and the rest is one graph (a break inside embed would also split this frame's graph)
        rows = self.image_rows(input_ids, images, has_image)  # (N,) or None
        x = self.embed_rows(input_ids, images, rows)  # (B, T, C)
        return self.lm(input_ids, targets, doc_ids=doc_ids, inputs_embeds=x, z_loss=z_loss,
                       reduction=reduction)

    @torch.no_grad()
    def generate(self, input_ids, images=None, has_image=None, max_new_tokens=32, doc_ids=None, **kw):
        """Answer from image + prompt rows (left-padded, with doc_ids marking the padding)."""
        x = self.embed(input_ids, images, has_image)
        return self.lm.generate(input_ids, max_new_tokens, inputs_embeds=x, doc_ids=doc_ids, **kw)

    def configure_optimizers(self, weight_decay, learning_rate, betas, eps, device_type, vision_lr=None):
        # frozen weights have requires_grad False, so the optimizer holds no state for them
        groups = {'vision.': vision_lr / learning_rate} if vision_lr is not None else None
        return make_adamw(self.named_parameters(), weight_decay, learning_rate, betas, eps, device_type,
                          groups)

    def num_params(self, exclude_embedding=True):
        n = sum(p.numel() for p in self.parameters())
        return n - self.lm.tok_embeddings.weight.numel() if exclude_embedding else n

    def vision_flops_per_image(self):
        """Forward FLOPs of the encoder for one image: 2 per weight per patch + attention's 4·L·W·P²."""
        P, W = self.num_patches, self.vision.cfg.width
        n_weights = sum(p.numel() for n, p in self.vision.named_parameters()
                        if p.dim() >= 2 and 'position' not in n)
        return 2 * n_weights * P + 4 * len(self.vision.encoder['layers']) * W * P * P

    def flops_per_step(self, num_tokens, num_images, T):
        """LM training FLOPs for the tokens + the encoder: forward only when frozen, 3x when trained."""
        vision = self.vision_flops_per_image() * num_images * (1 if self.freeze_vision else 3)
        projector = 6 * sum(p.numel() for p in self.projector.parameters()) * self.num_patches * num_images
        return self.lm.flops_per_token(T) * num_tokens + vision + projector


def checkpoint_activations(model):
    """Recompute each decoder block's activations in the backward pass instead of storing them."""
    from torch.utils.checkpoint import checkpoint
    for block in (model.lm.layers if isinstance(model, VLM) else model.layers):
        block.forward = (lambda f: lambda *a, **k: checkpoint(f, *a, use_reentrant=False, **k))(block.forward)


def vlm_args(lm_config, vision_config, projector, feature_layer, image_id, freeze_vision):
    return dict(lm=asdict(lm_config), vision=asdict(vision_config), projector=projector,
                feature_layer=feature_layer, image_id=image_id, freeze_vision=freeze_vision)


def build_model(model_args, where=None):
    """LM from LM args, or VLM from vlm_args(...): what a checkpoint's model_args rebuild. Args that describe
    no model are a ValueError of one line (prefixed by `where`, the file they came from)."""
    try:
        if 'vision' not in model_args:
            return LM(LMConfig(**model_args))
        return VLM(LMConfig(**model_args['lm']), SiglipConfig(**model_args['vision']),
                   model_args['projector'], model_args['feature_layer'], model_args['image_id'],
                   model_args['freeze_vision'])
    except (TypeError, KeyError, ValueError, AssertionError) as e:
        prefix = f"{where}: " if where else ''
        raise ValueError(f"{prefix}its model_args describe no model ({type(e).__name__}: {e})") from None


# -----------------------------------------------------------------------------
# Checkpoints (written by train.py): weights, model_args, tokenizer, config, step, lineage, ...

# what rebuilding a checkpoint's model and feeding it text need; train.py's checkpoints also hold step,
# config, lineage, rng (and optimizer)
MODEL_KEYS = ('model', 'model_args', 'tokenizer')
SHOW_KEYS = 3  # keys named in a weights error; all of them are counted


def load_checkpoint(path, keys=('model',)):
    """A checkpoint file -> its dict, without running pickled code (weights_only). A missing file is a
    FileNotFoundError; a file that does not load, is not a dict or lacks one of `keys` is a ValueError of
    one line naming the file and what is missing."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ''
        raise ValueError(f"{path}: cannot load checkpoint ({type(e).__name__}: {first})") from e
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path}: not a checkpoint: it holds a {type(checkpoint).__name__}, not a dict")
    missing = [k for k in keys if k not in checkpoint]
    if missing:
        raise ValueError(f"{path}: not a whole checkpoint: no {', '.join(repr(k) for k in missing)} "
                         f"(it holds {', '.join(map(str, checkpoint)) or 'nothing'})")
    return checkpoint


def raise_key_problems(found, message):
    """found: {what: [key ...]} (missing, unexpected, of another shape ...) -> one ValueError line that
    names the first few keys of each kind, or nothing when every list is empty."""
    problems = [f"{len(keys)} {what}: {', '.join(keys[:SHOW_KEYS])}"
                + (f", and {len(keys) - SHOW_KEYS} more" if len(keys) > SHOW_KEYS else '')
                for what, keys in found.items() if keys]
    if problems:
        raise ValueError(f"{message} ({'; '.join(problems)})")


def load_weights(module, state, where):
    """module.load_state_dict(state), with every missing, unexpected or mis-shaped key turned into one
    ValueError naming `where` (the file) and the first few keys with their shapes."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{where}: its weights are not a dict of tensors")
    own = module.state_dict()
    shape = lambda tensor: tuple(tensor.shape)
    found = {
        'of another shape': [f"{k} {shape(state[k])} in the file, {shape(v)} in the model"
                             for k, v in own.items() if k in state and state[k].shape != v.shape],
        'missing': [f"{k} {shape(v)}" for k, v in own.items() if k not in state],
        'unexpected': [f"{k} {shape(v)}" for k, v in state.items() if k not in own],
    }
    raise_key_problems(found, f"{where}: its weights do not fit the {type(module).__name__}")
    module.load_state_dict(state)


def model_from_checkpoint(path, device='cpu'):
    """Rebuild the model a checkpoint holds; returns (model in eval mode, checkpoint dict). Anything in
    the file that does not make a model for its tokenizer is a ValueError of one line naming the file.
    A neox checkpoint carries its tokenizer.json (tokenizer_json): checkpoint['tokenizer_file'] is then a
    copy of it, for get_tokenizer(checkpoint['tokenizer'], tokenizer_file=checkpoint.get('tokenizer_file'))
    (None for the others)."""
    checkpoint = load_checkpoint(path, MODEL_KEYS)
    name = checkpoint['tokenizer']
    if not isinstance(name, str) or name not in (*TOKENIZERS, 'neox'):
        raise ValueError(f"{path}: unknown tokenizer {name!r}; known: "
                         f"{', '.join(sorted(TOKENIZERS) + ['neox'])}")
    ids = TOKENIZERS.get(name)
    if name == 'neox':
        data = checkpoint.get('tokenizer_json')
        sha256 = hashlib.sha256(data).hexdigest() if isinstance(data, bytes) else None
        if sha256 is None or sha256 != checkpoint.get('tokenizer_sha256'):
            raise ValueError(f"{path}: a neox checkpoint needs its tokenizer.json: tokenizer_json bytes "
                             f"whose sha256 is tokenizer_sha256")
        checkpoint['tokenizer_file'] = stored_tokenizer_file(data)
        ids = token_ids(get_tokenizer(name, tokenizer_file=checkpoint['tokenizer_file']))
    model = build_model(checkpoint['model_args'], path)
    load_weights(model, checkpoint['model'], path)
    vocab_size = (model.lm if isinstance(model, VLM) else model).config.vocab_size
    top = max(ids['eot_id'], ids['image_id'])
    if top >= vocab_size:
        raise ValueError(f"{path}: the {name} tokenizer's ids reach {top}, past the model's vocab_size "
                         f"{vocab_size}")
    return model.to(device).eval(), checkpoint


# -----------------------------------------------------------------------------
# DCLM-1B: open_lm's HF layout (TRI-ML/DCLM-1B), read into an LM and written back from one
#
# A folder: config.json, model.safetensors.index.json and the shards it names (model-00001-of-00002...).
# The keys are open_lm's Transformer's, under OpenLMForCausalLM's 'model.' prefix: this LM's names with
# the prefix, plus each layer's rotary inv_freq buffer (attention.pos_embed.inv_freq, which this LM
# computes instead). config.json is flat (open_lm's Params fields, model_norm / norm_type, qk_norm /
# apply_qk_norm); early revisions nest the training arguments under params_args_dict.

DCLM_INDEX = 'model.safetensors.index.json'
DCLM_PREFIX = 'model.'
DCLM_NORMS = ('gain_only_lp_layer_norm', 'gain_only_layer_norm')  # gain-only LayerNorm, this decoder's
DCLM_FFNS = ('swiglu_torch', 'swiglu')  # both one w12 (gate, then up) and w3
DCLM_SHARD_BYTES = 5 * 10**9  # transformers' default max_shard_size: DCLM-1B's 4.99 GB + 774 MB
DCLM_ROPE_BASE = 10000.0  # open_lm's RotaryEmbedding has no other


def dclm_lm_config(config_file):
    """config.json -> LMConfig; anything this decoder does not implement is one ValueError naming the key."""
    try:
        with open(config_file) as f:
            raw = json.load(f)
    except ValueError as e:
        raise ValueError(f"{config_file}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{config_file}: not a JSON object")
    # the flat keys describe the model as built; the nested ones are the arguments of an early revision
    c = {**(raw.get('params_args_dict') or {}), **{k: v for k, v in raw.items() if v is not None}}
    c.setdefault('dim', c.get('hidden_dim'))
    c.setdefault('model_norm', c.get('norm_type'))
    c.setdefault('qk_norm', c.get('apply_qk_norm', False))
    missing = [k for k in ('dim', 'n_layers', 'n_heads', 'vocab_size', 'seq_len', 'model_norm')
               if c.get(k) is None]
    if missing:
        raise ValueError(f"{config_file}: no {', '.join(missing)} (flat or under params_args_dict)")
    sizes = ('dim', 'n_layers', 'n_heads', 'vocab_size', 'seq_len')
    bad = next((k for k in sizes if type(c[k]) is not int or c[k] < 1), None)
    if bad:
        raise ValueError(f"{config_file}: {bad} {c[bad]!r} is not a positive whole number")
    if c['dim'] % c['n_heads'] or c['dim'] // c['n_heads'] % 2:
        raise ValueError(f"{config_file}: dim {c['dim']} is not n_heads ({c['n_heads']}) even-sized heads")
    fits = dict(model_norm=c['model_norm'] in DCLM_NORMS, qk_norm=c['qk_norm'] is True,
                ffn_type=c.get('ffn_type', 'swiglu') in DCLM_FFNS,
                positional_embedding_type=c.get('positional_embedding_type', 'rotary') == 'rotary',
                post_embed_norm=not c.get('post_embed_norm', False),
                weight_tying=not c.get('weight_tying', False))
    wrong = [k for k, ok in fits.items() if not ok]
    if wrong:
        k = wrong[0]
        raise ValueError(f"{config_file}: {k} {c.get(k)!r} is not this decoder's (gain-only LayerNorm, "
                         f"qk_norm true, SwiGLU, rotary, no post-embedding norm, untied output)")
    return LMConfig(vocab_size=c['vocab_size'], block_size=c['seq_len'], n_layer=c['n_layers'],
                    n_head=c['n_heads'], n_embd=c['dim'], norm_eps=c.get('norm_eps', 1e-5),
                    rope_base=DCLM_ROPE_BASE)


def dclm_inv_freq(config):
    head_dim = config.n_embd // config.n_head
    return 1.0 / (config.rope_base ** (torch.arange(0, head_dim, 2).float() / head_dim))  # (D/2,)


def dclm_shards(folder):
    """The index's {file key: shard path}; a folder without one, or a shard it names that is not there,
    is an error naming the file."""
    index = os.path.join(folder, DCLM_INDEX)
    if not os.path.isfile(index) or not os.path.isfile(os.path.join(folder, 'config.json')):
        raise FileNotFoundError(f"{folder}: not a DCLM-1B folder (config.json and {DCLM_INDEX} expected)")
    try:
        with open(index) as f:
            weight_map = json.load(f)['weight_map']
        weight_map = {str(k): os.path.join(folder, str(v)) for k, v in weight_map.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{index}: not a safetensors index with a weight_map ({type(e).__name__}: {e})") \
            from None
    absent = sorted({v for v in weight_map.values() if not os.path.isfile(v)})
    if absent:
        raise FileNotFoundError(f"{index}: names shards that are not there: {', '.join(absent)}")
    return weight_map


def read_dclm(folder):
    """A DCLM-1B folder -> (LMConfig, state dict in this LM's names, fp32). Every missing, unexpected or
    mis-shaped key is named (the file's names) in one ValueError, before any tensor is read."""
    from safetensors import safe_open
    weight_map = dclm_shards(folder)
    config = dclm_lm_config(os.path.join(folder, 'config.json'))
    shapes = {}
    for shard in sorted(set(weight_map.values())):
        try:
            with safe_open(shard, framework='pt') as f:
                shapes.update({k: (shard, tuple(f.get_slice(k).get_shape())) for k in f.keys()})
        except Exception as e:
            raise ValueError(f"{shard}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    with torch.device('meta'):
        own = {DCLM_PREFIX + k: tuple(v.shape) for k, v in LM(config).state_dict().items()}
    rotary = (config.n_embd // config.n_head // 2,)
    own.update({f"{DCLM_PREFIX}layers.{i}.attention.pos_embed.inv_freq": rotary
                for i in range(config.n_layer)})
    found = {
        'of another shape': [f"{k} {shapes[k][1]} in the file, {v} expected" for k, v in own.items()
                             if k in shapes and shapes[k][1] != v],
        'missing': [f"{k} {v}" for k, v in own.items() if k not in shapes],
        'unexpected': [f"{k} {v[1]}" for k, v in shapes.items() if k not in own],
        'in another shard than the index says': [k for k, v in shapes.items() if weight_map.get(k) != v[0]],
    }
    raise_key_problems(found, f"{folder}: its weights do not fit the LM of its config.json")
    state, expected_freq = {}, dclm_inv_freq(config)
    for shard in sorted(set(weight_map.values())):
        with safe_open(shard, framework='pt') as f:
            for key in f.keys():
                tensor = f.get_tensor(key).float()
                if key.endswith('.pos_embed.inv_freq'):  # a buffer: it must be the rotary this LM computes
                    if not torch.allclose(tensor, expected_freq, rtol=1e-6, atol=0):
                        raise ValueError(f"{shard}: {key} is not open_lm's rotary of base "
                                         f"{DCLM_ROPE_BASE:g} over {2 * rotary[0]} dims")
                    continue
                state[key[len(DCLM_PREFIX):]] = tensor
    return config, state


def load_dclm(folder):
    """A DCLM-1B folder -> the LM it holds (eval mode, fp32, the checkpoint's vocab_size)."""
    config, state = read_dclm(folder)
    lm = LM(config)
    load_weights(lm, state, folder)
    return lm.eval()


def dclm_checkpoint(folder):
    """A DCLM-1B folder as the checkpoint train.py starts a stage from: the finished text run (its
    100 % point, step 1 of 1), GPT-NeoX-tokenised."""
    config, state = read_dclm(folder)
    source = dict(source='DCLM-1B (open_lm)', folder=folder)
    checkpoint = dict(model=state, model_args=asdict(config), tokenizer='neox', step=1,
                      config=dict(stage='text', max_iters=1, **source),
                      lineage=dict(config=source, parent=None))
    tokenizer_file = os.path.join(folder, 'tokenizer.json')
    if os.path.isfile(tokenizer_file):  # its GPT-NeoX file: train.py checks it against the data's
        with open(tokenizer_file, 'rb') as f:
            checkpoint['tokenizer_json'] = f.read()
        checkpoint['tokenizer_sha256'] = hashlib.sha256(checkpoint['tokenizer_json']).hexdigest()
    return checkpoint


def dclm_keys(n_layer):
    """open_lm's names (with the prefix), in the order its modules register them: transformers fills the
    shards in this order, so it decides which tensors share DCLM-1B's second file."""
    layer = ['attention.in_proj.weight', 'attention.out_proj.weight', 'attention.pos_embed.inv_freq',
             'attention.q_norm.weight', 'attention.k_norm.weight', 'feed_forward.w12.weight',
             'feed_forward.w3.weight', 'attention_norm.weight', 'ffn_norm.weight']
    keys = ['tok_embeddings.weight'] + [f'layers.{i}.{name}' for i in range(n_layer) for name in layer]
    return [DCLM_PREFIX + k for k in keys + ['norm.weight', 'output.weight']]


def dclm_state(lm):
    """An LM's weights under open_lm's names, in its order (fp32, with the inv_freq buffers)."""
    own, inv_freq = lm.state_dict(), dclm_inv_freq(lm.config)
    state = {}
    for key in dclm_keys(lm.config.n_layer):
        # one tensor per inv_freq key: safetensors refuses tensors that share memory
        tensor = inv_freq.clone() if key.endswith('inv_freq') else own[key[len(DCLM_PREFIX):]]
        state[key] = tensor.detach().to('cpu', torch.float32).contiguous()
    return state


def dclm_config_json(config):
    """The config.json open_lm's HF class (OpenLMForCausalLM) builds this LM from: its Params fields,
    norm_type and attn_name, with model_norm and qk_norm (the training arguments' names) beside them."""
    return dict(architectures=['OpenLMForCausalLM'], model_type='openlm', dim=config.n_embd,
                n_layers=config.n_layer, n_heads=config.n_head, vocab_size=config.vocab_size,
                seq_len=config.block_size, norm_eps=config.norm_eps, post_embed_norm=False,
                weight_tying=False, ffn_type='swiglu_torch', positional_embedding_type='rotary',
                model_norm='gain_only_lp_layer_norm', norm_type='gain_only_lp_layer_norm', qk_norm=True,
                apply_qk_norm=True, attn_name='torch_attn', torch_dtype='float32')


def dclm_shard_plan(nbytes, shard_bytes):
    """{key: bytes} in file order -> the keys of each shard, as transformers splits a state dict: a new
    shard when the next tensor would take this one past shard_bytes."""
    plan, size = [[]], 0
    for key, n in nbytes.items():
        if plan[-1] and size + n > shard_bytes:
            plan.append([])
            size = 0
        plan[-1].append(key)
        size += n
    return plan


def save_dclm(lm, out_dir, shard_bytes=DCLM_SHARD_BYTES):
    """Write an LM as a DCLM-1B folder: shards of at most shard_bytes filled in key order, as transformers
    splits them (model-00001-of-0000N.safetensors), config.json, and the index last (a folder with an
    index is whole). Returns the shard names."""
    from safetensors.torch import save_file
    if lm.config.rope_base != DCLM_ROPE_BASE:
        raise ValueError(f"rope_base {lm.config.rope_base:g}: open_lm's rotary has base {DCLM_ROPE_BASE:g}")
    state = dclm_state(lm)
    plan = dclm_shard_plan({k: t.numel() * t.element_size() for k, t in state.items()}, shard_bytes)
    shards = [{k: state[k] for k in keys} for keys in plan]
    os.makedirs(out_dir, exist_ok=True)
    names = [f'model-{i + 1:05d}-of-{len(shards):05d}.safetensors' for i in range(len(shards))]
    for name, shard in zip(names, shards):
        tmp = os.path.join(out_dir, f'{name}.tmp{os.getpid()}')
        save_file(shard, tmp, metadata={'format': 'pt'})
        os.replace(tmp, os.path.join(out_dir, name))
    atomic_write_bytes(os.path.join(out_dir, 'config.json'),
                       json.dumps(dclm_config_json(lm.config), indent=2, sort_keys=True).encode())
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = dict(metadata=dict(total_size=total),
                 weight_map={k: name for name, shard in zip(names, shards) for k in shard})
    atomic_write_bytes(os.path.join(out_dir, DCLM_INDEX),
                       json.dumps(index, indent=2, sort_keys=True).encode())
    return names


EXPORT_DEFAULTS = dict(
    ckpt='',  # a checkpoint of train.py (an LM, or a VLM whose language model is written)
    out='',  # the DCLM-1B folder to write
    shard_bytes=DCLM_SHARD_BYTES,  # largest shard, in bytes
)


def main(argv=None):
    """python model.py export --ckpt=CKPT --out=DIR: a checkpoint's language model in DCLM-1B's layout."""
    import configurator
    _, settings = configurator.parse_command({'export': EXPORT_DEFAULTS}, argv, 'model.py')
    configurator.require(settings, 'ckpt', 'out')
    if settings['shard_bytes'] < 1:
        sys.exit(f"config error: --shard_bytes must be at least 1, got {settings['shard_bytes']}")
    try:
        checkpoint = load_checkpoint(settings['ckpt'], ('model', 'model_args'))
        model = build_model(checkpoint['model_args'], settings['ckpt'])
        load_weights(model, checkpoint['model'], settings['ckpt'])
        lm = model.lm if isinstance(model, VLM) else model
        names = save_dclm(lm, settings['out'], settings['shard_bytes'])
    except (OSError, ValueError, ImportError) as e:
        sys.exit(f"error: {e}")
    print(f"wrote {settings['out']}: config.json, {DCLM_INDEX}, {', '.join(names)}")


if __name__ == '__main__':
    main()
