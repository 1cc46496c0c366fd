"""
Sigmoid-loss pre-training of small SigLIP towers from scratch (the CPU study has no public weights
to start from): a vision tower of vision.py and a small text tower, trained together on the
image-caption pairs of a captions folder made by prepare_data.py, saved in the HF SiglipModel layout
that vision.load_siglip (and transformers) read.

    python tower.py --captions=data/shapes/captions --out=out/tower --steps=1600 --batch_size=32 \\
        --lr=1e-3 --swap_words=circle,square,triangle,star,cross --seed=0 --device=cpu

Several groups of swap words are separated by ';' (--swap_words='red,blue;left,right').
A stopped run (SIGTERM, SIGINT, --stop_at_step) leaves out/ckpt.pt; the same command resumes from
it and gives the same tower, bit for bit, as a run that was never stopped. The finished tower is
out/config.json and out/model.safetensors, written in that order, each under a temporary name renamed
last; out/ckpt.pt (written the same way) is removed after them. So a kill -9 at any moment leaves
either no model.safetensors or a whole tower, and the same command resumes from the last ckpt.pt (or
starts over) to the same tower; it removes the temporary files a killed run left.

Reads top to bottom: the settings, the text tower and the two-tower model, the sigmoid loss, the
hard negatives (one word swapped), the training loop and its resume checkpoint, the held-out
figures, then pretrain, which reads the caption shards, trains, reports and saves.
"""
import io
import math
import os
import signal
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

import configurator
from model import load_checkpoint, lr_at
from shards import ImageShards, atomic_write_bytes, remove_leftovers
from tokenizer import encode, get_tokenizer
from vision import PRESETS, Block, SiglipVisionTower, init_weights, normalize, save_siglip

DEFAULTS = dict(
    captions='',  # a captions folder made by prepare_data.py (required)
    out='',  # the tower's folder: model.safetensors + config.json, and ckpt.pt while unfinished (required)
    preset='tiny',  # the vision tower's shape, a name in vision.PRESETS
    steps=1000,  # optimizer steps
    batch_size=64,  # image-caption pairs per step
    lr=5e-4,  # peak learning rate: linear warmup, then cosine decay to lr / 10
    seed=0,  # the initialisation and the order of the batches
    max_len=0,  # caption tokens the text tower reads; 0 = the longest caption, so none is cut
    swap_words='',  # groups of interchangeable words, 'W1,W2,...;W3,W4': one-word-swapped hard negatives
    device='cuda' if torch.cuda.is_available() else 'cpu',  # where the towers train
    checkpoint_interval=200,  # write out/ckpt.pt every this many steps (0 = only when stopped)
    stop_at_step=-1,  # stop after this step and save out/ckpt.pt, as on SIGTERM; -1 = never
)


# -----------------------------------------------------------------------------
# the small text tower, and the two towers together


@dataclass
class TextConfig:
    """The small text tower trained against a small vision tower (HF SiglipTextModel layout)."""
    vocab_size: int = 320  # the byte tokenizer, padded to 320
    max_len: int = 32      # captions are padded / truncated to exactly this many tokens
    width: int = 128
    depth: int = 2
    heads: int = 4
    mlp_dim: int = 512
    eps: float = 1e-6
    pad_id: int = 256      # <|endoftext|> of the byte tokenizer

    def __post_init__(self):
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by {self.heads} heads")


class TextTower(nn.Module):
    """SigLIP's text tower (HF SiglipTextModel layout): token + position embeddings,
    bidirectional pre-LN blocks over the caption padded to max_len, no attention mask, pooled at
    the last position (a padding token for short captions, which SigLIP trains to summarise)."""

    def __init__(self, cfg, embed_dim):
        super().__init__()
        self.cfg = cfg
        self.embeddings = nn.ModuleDict(dict(
            token_embedding=nn.Embedding(cfg.vocab_size, cfg.width),
            position_embedding=nn.Embedding(cfg.max_len, cfg.width),
        ))
        self.encoder = nn.ModuleDict(dict(layers=nn.ModuleList(Block(cfg) for _ in range(cfg.depth))))
        self.final_layer_norm = nn.LayerNorm(cfg.width, eps=cfg.eps)
        self.head = nn.Linear(cfg.width, embed_dim)
        self.apply(init_weights)

    def forward(self, tokens):
        """tokens (B, L) padded ids -> text embedding (B, embed_dim)."""
        L = tokens.size(1)
        x = self.embeddings['token_embedding'](tokens)  # (B, L, C)
        x = x + self.embeddings['position_embedding'].weight[:L]
        for block in self.encoder['layers']:
            x = block(x)
        return self.head(self.final_layer_norm(x)[:, -1])


class SiglipModel(nn.Module):
    """Vision tower + text tower + learned temperature and bias (HF SiglipModel layout)."""

    def __init__(self, vision, text):
        super().__init__()
        self.vision_model = SiglipVisionTower(vision, head=True)
        self.text_model = TextTower(text, vision.width)
        self.logit_scale = nn.Parameter(torch.tensor([math.log(10.0)]))  # t' (the temperature is exp t')
        self.logit_bias = nn.Parameter(torch.tensor([-10.0]))  # starts far negative: most pairs are negatives

    def forward(self, pixels, tokens):
        """-> logits (B_images, B_texts)."""
        img = F.normalize(self.vision_model.embed(pixels), dim=-1)
        txt = F.normalize(self.text_model(tokens), dim=-1)
        return img @ txt.t() * self.logit_scale.exp() + self.logit_bias


# -----------------------------------------------------------------------------
# the sigmoid loss, captions as tensors, hard negatives


def sigmoid_loss(logits):
    """SigLIP's loss over a (B, B + K) logit matrix whose first B columns hold the batch's captions
    (the matching pairs on the diagonal) and whose K extra columns, if any, hold false captions:
    -log sigmoid(label * logit), label +1 on the diagonal and -1 elsewhere, summed over all pairs
    and divided by the batch size (as in the paper)."""
    labels = 2 * torch.eye(*logits.shape, device=logits.device, dtype=logits.dtype) - 1
    return -F.logsigmoid(labels * logits).sum() / logits.size(0)


def pad_captions(captions, max_len, pad_id):
    """Lists of token ids -> (N, max_len) int64 numpy, truncated or right-padded with pad_id."""
    tokens = np.full((len(captions), max_len), pad_id, dtype=np.int64)
    for i, ids in enumerate(captions):
        ids = list(ids)[:max_len]
        tokens[i, :len(ids)] = ids
    return tokens


def swap_one_word(tokens, groups, rng):
    """False captions, as hard negatives: each caption with one word of a group (a shape name, say)
    replaced by another word of that group which the caption does not already hold (a repeated word
    would give the fake away). A batch of random captions differs in many words, so the sigmoid loss
    is satisfied by the easiest (color, position) and never asks the tower for a hard one (shape); a
    caption that differs from the true one in a single word does.
    tokens (B, L) padded ids, groups: lists of token ids -> (K, L), K <= B: the captions that hold a
    word of some group and have a word left to swap in."""
    fakes = []
    for row in tokens:
        places = swap_places(row, groups)
        if not places:
            continue
        i, others = places[int(rng.integers(len(places)))]
        if others:
            fake = row.copy()
            fake[i] = others[int(rng.integers(len(others)))]
            fakes.append(fake)
    return np.stack(fakes) if fakes else tokens[:0]


def swap_places(row, groups):
    """[(position, words that may replace it)] for each word of a group in a caption's ids: the other
    words of its group that the caption does not hold (possibly none)."""
    group_of = {t: g for g in groups for t in g}
    return [(i, [w for w in group_of[int(t)] if w not in row])
            for i, t in enumerate(row) if int(t) in group_of]


# -----------------------------------------------------------------------------
# training, with a checkpoint to resume from


def _check_pairs(images, captions, vision, text):
    S = vision.image_size
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (S, S, 3):
        raise ValueError(f"images must be uint8 (N, {S}, {S}, 3) for this tower, "
                         f"got {images.dtype} {images.shape}")
    if len(captions) != len(images):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    for i, ids in enumerate(captions):
        if len(ids) == 0:
            raise ValueError(f"caption {i} is empty")
        if min(ids) < 0 or max(ids) >= text.vocab_size:
            raise ValueError(f"caption {i} has a token id outside 0..{text.vocab_size - 1}")


def save_resume(path, model, optimizer, rng, step, settings):
    """Everything the loop needs to go on exactly where it stopped, through a temporary name."""
    state = dict(model=model.state_dict(), optimizer=optimizer.state_dict(), rng=rng.bit_generator.state,
                 torch=torch.get_rng_state(), step=step, settings=settings)
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def resume(path, settings, model, optimizer, rng):
    """Load a resume checkpoint written by save_resume into the model, the optimizer and the
    generators; a checkpoint of other settings is refused. -> the step to go on from."""
    try:
        state = load_checkpoint(path)
    except ValueError as e:  # one line: the loader's cause may run over several
        raise ValueError(f"{' '.join(str(e).split())}; remove {path} to start over") from None
    saved = state.get('settings', {}) if isinstance(state, dict) else {}
    differ = [k for k in sorted(set(settings) | set(saved)) if saved.get(k) != settings.get(k)]
    if differ:
        what = '; '.join(f"{k} {saved.get(k)!r} there, {settings.get(k)!r} here" for k in differ)
        raise ValueError(f"{path}: a resume checkpoint of other settings ({what}); "
                         f"re-run with its settings, or remove it to start over")
    model.load_state_dict(state['model'])
    optimizer.load_state_dict(state['optimizer'])
    rng.bit_generator.state = state['rng']
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])
    return state['step']


def train_tower(images, captions, model=None, vision='tiny', text=None, steps=1000, batch_size=64,
                lr=5e-4, weight_decay=1e-4, warmup=50, grad_clip=1.0, seed=0, device='cpu',
                progress=True, swap_groups=(), checkpoint=None, settings=None, checkpoint_interval=0,
                stop_at_step=-1):
    """Pre-train a small SigLIP with the sigmoid loss on CPU (or any device).

    images: uint8 (N, S, S, 3) numpy array or memmap; captions: N lists of token ids (truncated /
    padded to text.max_len). model: a SiglipModel to continue training, else a new one of the
    `vision` preset (name or SiglipConfig) and `text` TextConfig. AdamW, linear warmup then cosine
    decay to lr/10, weight decay on matrices only, gradients clipped to norm grad_clip (0 = off).
    swap_groups: lists of interchangeable token ids; each caption of a batch then also meets the image
    as a hard negative with one of them swapped (swap_one_word).
    checkpoint: a path for the resume state (save_resume), tagged with the dict `settings`: read at
    the start when it exists, written every checkpoint_interval steps (0 = never), and after step
    stop_at_step or on SIGTERM / SIGINT, which stop the run. Returns the model in eval mode, or None
    when the run stopped before its last step (its state is in the checkpoint)."""
    if model is None:
        vision = PRESETS[vision] if isinstance(vision, str) else vision
        torch.manual_seed(seed)
        model = SiglipModel(vision, text or TextConfig())
    model.to(device).train()
    vcfg, tcfg = model.vision_model.cfg, model.text_model.cfg
    _check_pairs(images, captions, vcfg, tcfg)
    tokens = pad_captions(captions, tcfg.max_len, tcfg.pad_id)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([
        dict(params=[p for p in params if p.dim() >= 2], weight_decay=weight_decay),
        dict(params=[p for p in params if p.dim() < 2], weight_decay=0.0),
    ], lr=lr, betas=(0.9, 0.95))
    rng = np.random.default_rng(seed)
    batch_size = min(batch_size, len(images))
    settings = settings or {}
    start = 0
    if checkpoint and os.path.exists(checkpoint):
        start = resume(checkpoint, settings, model, optimizer, rng)
    stop = []  # the signal that asked the run to stop
    handlers = {}
    if checkpoint:
        for s in (signal.SIGTERM, signal.SIGINT):
            handlers[s] = signal.signal(s, lambda signum, frame: stop.append(signum))

    # in a log file (the study's tower.log) a bar redrawn at every step is megabytes of carriage returns
    bar = tqdm(range(start, steps), desc='siglip', disable=not progress, initial=start, total=steps,
               mininterval=0.1 if sys.stderr.isatty() else 10)
    try:
        for step in bar:
            idx = np.sort(rng.choice(len(images), batch_size, replace=False))  # sorted: memmap-friendly reads
            pixels = normalize(torch.from_numpy(np.ascontiguousarray(images[idx])).to(device))
            texts = tokens[idx]
            if swap_groups:
                texts = np.concatenate([texts, swap_one_word(texts, swap_groups, rng)])  # (B + K, L)
            logits = model(pixels, torch.from_numpy(texts).to(device))  # (B, B + K)
            loss = sigmoid_loss(logits)
            for group in optimizer.param_groups:
                group['lr'] = lr_at(step, steps, lr, 0.1 * lr, warmup, peak_at_warmup_end=True)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            optimizer.step()
            if progress and (step % 10 == 0 or step == steps - 1):  # .item() waits for the device
                bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            done = step + 1
            if not checkpoint or done == steps:
                continue
            stopping = bool(stop) or done == stop_at_step
            if stopping or (checkpoint_interval and done % checkpoint_interval == 0):
                save_resume(checkpoint, model, optimizer, rng, done, settings)
            if stopping:
                bar.close()
                reason = f"signal {stop[0]}" if stop else f"stop_at_step={stop_at_step}"
                print(f"{reason}: saved {checkpoint} at step {done} of {steps}; "
                      f"the same command resumes from it")
                return None
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
    return model.eval()


# -----------------------------------------------------------------------------
# held-out figures


@torch.no_grad()
def retrieval_accuracy(model, images, captions):
    """Image -> caption top-1 accuracy over one held-out batch. A retrieved caption with the same
    tokens as the true one counts as correct (synthetic captions repeat)."""
    tcfg = model.text_model.cfg
    device = next(model.parameters()).device
    tokens = pad_captions(captions, tcfg.max_len, tcfg.pad_id)
    logits = model(normalize(torch.from_numpy(np.ascontiguousarray(images))).to(device),
                   torch.from_numpy(tokens).to(device))
    best = logits.argmax(dim=1).cpu().numpy()
    return float(np.mean([(tokens[b] == tokens[i]).all() for i, b in enumerate(best)]))


@torch.no_grad()
def swap_accuracy(model, images, captions, groups):
    """How often an image scores its caption above the same caption with one word of a group swapped
    for another the caption does not hold (swap_places), over every such swap of every
    caption: one random swap per caption makes the figure of a small held-out set swing by 0.15.
    0.5 = a tower blind to those words. Retrieval saturates long before this does: the other captions
    of a batch are told apart by easier words. Captions with nothing to swap are left out.
    -> (accuracy, number of captions scored)."""
    tcfg = model.text_model.cfg
    device = next(model.parameters()).device
    tokens = pad_captions(captions, tcfg.max_len, tcfg.pad_id)
    fakes, owner = [], []  # every false caption, and the index of the caption it was made from
    for k, row in enumerate(tokens):
        for i, others in swap_places(row, groups):
            for other in others:
                fake = row.copy()
                fake[i] = other
                fakes.append(fake)
                owner.append(k)
    if not fakes:
        return float('nan'), 0
    keep = sorted(set(owner))
    pixels = normalize(torch.from_numpy(np.ascontiguousarray(images[keep]))).to(device)
    texts = np.concatenate([tokens[keep], np.stack(fakes)])  # (K + F, L): the captions, then every fake
    logits = model(pixels, torch.from_numpy(texts).to(device))  # (K, K + F), one pass of each tower
    K, row_of = len(keep), {k: j for j, k in enumerate(keep)}
    rows = torch.tensor([row_of[k] for k in owner], device=logits.device)
    true, fake = logits[rows, rows], logits[rows, K + torch.arange(len(fakes), device=logits.device)]
    return float((true > fake).float().mean()), K


# -----------------------------------------------------------------------------
# pre-training on a captions folder

def word_groups(groups, tokenizer, tokenizer_file=None):
    """'circle,square,...' strings -> lists of token ids, one per word as it reads inside a caption
    (after a space); a word that is not a single token cannot be swapped in place and is refused."""
    enc = get_tokenizer(tokenizer, tokenizer_file=tokenizer_file)
    out = []
    for group in groups:
        words = [w for w in group.split(',') if w]
        ids = [encode(enc, ' ' + w) for w in words]
        for w, i in zip(words, ids):
            if len(i) != 1:
                raise ValueError(f"swap word {w!r} is {len(i)} tokens in the {tokenizer!r} tokenizer, "
                                 f"not one")
        if len(words) < 2:
            raise ValueError(f"swap group {group!r} needs at least two words")
        out.append([i[0] for i in ids])
    return out


def _caption_of(sample):
    return sample['tokens'][sample['loss_mask'] > 0][:-1].tolist()  # without its closing <|endoftext|>


def _report(model, captions_dir, swap_groups):
    """Print the held-out figures of a trained model, when the folder has a val split worth scoring."""
    held_out = ImageShards(captions_dir, 'val')
    if len(held_out) < 8:
        return
    val = [held_out[i] for i in range(min(len(held_out), 256))]
    val_images, val_captions = np.stack([v['image'] for v in val]), [_caption_of(v) for v in val]
    accuracy = retrieval_accuracy(model, val_images, val_captions)
    print(f"image -> caption retrieval on {len(val)} held-out pairs: {accuracy:.3f} "
          f"(chance {1 / len(val):.3f})")
    if swap_groups:
        accuracy, n = swap_accuracy(model, val_images, val_captions, swap_groups)
        print(f"caption above each of its one-word swaps, {n} held-out pairs: {accuracy:.3f} (chance 0.5)")


def pretrain(captions_dir, out_dir, preset='tiny', steps=1000, batch_size=64, lr=5e-4, seed=0, max_len=0,
             swap_words=(), device='cpu', checkpoint_interval=200, stop_at_step=-1):
    """Pre-train a small tower on prepared caption shards (the CPU study) and save it in the HF layout.
    max_len: caption tokens the text tower reads; 0 = the longest caption, so none is cut (a cut
    caption no longer describes its image, and the contrastive task stops teaching the tower).
    swap_words: groups of interchangeable words ('circle,square,triangle'); each caption of a batch
    also gets a false copy with one of them swapped, as a hard negative (see swap_one_word).
    A stopped run leaves out_dir/ckpt.pt (see train_tower) and returns None; the same call resumes."""
    if preset not in PRESETS:
        raise ValueError(f"preset {preset!r} is not one of {', '.join(PRESETS)}")
    shards = ImageShards(captions_dir, 'train')
    manifest = shards.manifest
    neox_file = os.path.join(captions_dir, 'tokenizer.json') if manifest['tokenizer'] == 'neox' else None
    swap_groups = word_groups(swap_words, manifest['tokenizer'], neox_file)
    vision = PRESETS[preset]
    if manifest['image_size'] != vision.image_size:
        raise ValueError(f"{captions_dir}: images are {manifest['image_size']} px, "
                         f"preset '{preset}' takes {vision.image_size} px")
    images = np.zeros((len(shards), vision.image_size, vision.image_size, 3), dtype=np.uint8)
    captions = []
    for i in range(len(shards)):
        sample = shards[i]
        images[i] = sample['image']
        captions.append(_caption_of(sample))
    longest = max(len(c) for c in captions)
    settings = dict(captions=os.path.abspath(captions_dir), preset=preset, steps=steps, batch_size=batch_size,
                    lr=lr, seed=seed, max_len=max_len, swap_words=list(swap_words))
    max_len = max_len or longest + 1  # + 1: the last position, where the text tower pools, is always padding
    cut = sum(len(c) > max_len for c in captions)
    if cut:
        print(f"warning: {cut:,} of {len(captions):,} captions are longer than max_len={max_len} tokens "
              f"and are cut")
    text = TextConfig(vocab_size=manifest['vocab_size'], max_len=max_len, pad_id=manifest['eot_id'])
    os.makedirs(out_dir, exist_ok=True)
    remove_leftovers(out_dir)  # the temporary files of a killed run: it never renamed them
    checkpoint = os.path.join(out_dir, 'ckpt.pt')
    model = train_tower(images, captions, vision=preset, text=text, steps=steps, batch_size=batch_size, lr=lr,
                        seed=seed, swap_groups=swap_groups, device=device, checkpoint=checkpoint,
                        settings=settings, checkpoint_interval=checkpoint_interval, stop_at_step=stop_at_step)
    if model is None:
        return None
    _report(model, captions_dir, swap_groups)
    # config.json, then model.safetensors: weights never stand without their config; the resume checkpoint
    # goes last, so a kill before it leaves the step to resume from
    save_siglip(model, out_dir)
    if os.path.exists(checkpoint):
        os.remove(checkpoint)
    print(f"saved {out_dir}/model.safetensors")
    return model


def main(argv=None):
    settings = configurator.parse(DEFAULTS, argv, 'tower.py')
    configurator.require(settings, 'captions', 'out')
    groups = [group for group in settings['swap_words'].split(';') if group]
    try:
        pretrain(settings['captions'], settings['out'], settings['preset'], settings['steps'],
                 settings['batch_size'], settings['lr'], settings['seed'], settings['max_len'], groups,
                 settings['device'], settings['checkpoint_interval'], settings['stop_at_step'])
    except (ValueError, OSError, ImportError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
