"""
Training, one stage per config: a base per stage and size, then overlays (see config/*.py)

    python train.py config/tiny_text.py                                  # one process (CPU or one GPU)
    torchrun --standalone --nproc_per_node=8 train.py config/mixed_1b.py config/arm_unfrozen.py

Stages:
  text      text-only pre-training, warmup + cosine; milestone checkpoints (ckpt_080.pt at 80 %)
  mixed     a text milestone + a SigLIP encoder + a fresh projector, trained on image-caption and
            text rows at a controlled ratio; the learning rate continues the text schedule
  finetune  instruction tuning of a mixed-stage VLM on conversations, loss on the answers only

Every config key below can be set in a config file or as --key=value (see configurator.py). out_dir may
name {vision} ('frozen' | 'unfrozen'), {projector}, {start} (init_from's file name: ckpt_080.pt -> 080)
and {parent} (the folder holding init_from); init_from may name {vision} and {projector}. So the bases
spell each run's folder once and two arms never share one.

main() reads as its steps: the config, the processes, the data, the model and its checks, the schedule,
the optimizer, the loaders, then train(): evaluate, checkpoint, train_step, log, until the last step.
"""
import hashlib
import json
import math
import os
import random
import resource
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import attention as attention_module
from configurator import configure
from model import (LM, PROJECTORS, LMConfig, VLM, build_model, checkpoint_activations, dclm_checkpoint,
                   estimate_mfu, load_checkpoint, load_weights, lr_at, vlm_args)
from shards import ImageShards, atomic_write_bytes, load_text_split
from vision import load_siglip

# -----------------------------------------------------------------------------
# default config: a tiny text model on the CPU
# I/O
out_dir = 'out/tiny_text'
init_from = 'scratch'  # 'scratch' | 'resume' (out_dir/ckpt.pt) | a checkpoint (weights, a fresh optimizer)
# init_from may also name a DCLM-1B folder (config.json, its safetensors index and shards)
eval_interval = 100  # val losses and ckpt.pt every this many steps
eval_iters = 10
log_interval = 10
milestones = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # ckpt_NNN.pt (weights only) at these fractions of the run
stop_at_step = -1  # save ckpt.pt and exit after this step (a long run cut into jobs); -1 = run to max_iters
# data
stage = 'text'  # 'text' | 'mixed' | 'finetune'
text_data = 'data/tiny_text'  # token shards; every stage measures the text val loss, to watch forgetting
caption_data = ''  # image-caption shards (mixed)
instruct_data = ''  # instruction shards (finetune)
image_ratio = 0.1  # mixed: fraction of non-padding positions that belong to image-caption samples
image_row_fill = 'text'  # after a caption: 'text' (kept apart by doc_ids) or 'pad'
epochs = 3  # finetune: passes over the instruction data (sets max_iters when max_iters = 0)
# model
n_layer = 4
n_head = 4
n_embd = 128
block_size = 256
vision_init = ''  # mixed: an HF SigLIP checkpoint or a pre-trained tiny tower (vision.load_siglip)
feature_layer = -2  # encoder block whose patch features the VLM uses (-2: second-to-last)
projector = 'mlp2'  # 'mlp2' | 'mlp1'
freeze_vision = True
vision_lr = 1e-4  # learning rate of an unfrozen encoder (follows the same schedule shape)
start_fraction = -1.0  # mixed: the milestone init_from holds (0.8 = 80 %); -1 = read it from the checkpoint
# optimizer (AdamW) and schedule (warmup + cosine to min_lr)
batch_size = 16  # rows per micro-batch, per process
gradient_accumulation_steps = 1  # micro-batches per step, over all processes together
max_iters = 1000
learning_rate = 3e-3
min_lr = 3e-4
warmup_iters = 50
weight_decay = 0.033
beta1 = 0.9
beta2 = 0.95
adam_eps = 1e-8
grad_clip = 1.0
z_loss = 1e-4
# system
device = 'cuda' if torch.cuda.is_available() else 'cpu'
dtype = 'bfloat16' if torch.cuda.is_available() else 'float32'  # autocast dtype on CUDA
vision_dtype = 'bfloat16' if torch.cuda.is_available() else 'float32'  # a frozen encoder's dtype
compile = False
activation_checkpointing = False
fsdp = False  # FSDP2 (fully_shard per block) instead of DDP, for 1B and up
attention = 'sdpa'  # one of attention.BACKENDS: 'sdpa' | 'triton' | 'flex'
seed = 1337
# logging to Weights & Biases (optional; the records of log.jsonl, from the master process)
wandb_log = False
wandb_project = 'vlm-pretrain'
wandb_run_name = ''  # '' = out_dir's last folder name
# -----------------------------------------------------------------------------


# -----------------------------------------------------------------------------
# Data. Every step's global batch is a function of (seed, step) alone, so a run resumes from the step
# number and gives the same rows whatever the number of processes; rank r takes its slice of the rows.
# A row is a dict of 1-D arrays: input_ids, targets (-100: no loss), doc_ids, segment (0 padding,
# 1 image/conversation sample, 2 text) and image (or None).

SEGMENT_PAD, SEGMENT_SAMPLE, SEGMENT_TEXT = 0, 1, 2


def text_windows(shards, num_rows, block_size, rng):
    """num_rows random windows of block_size + 1 tokens, shards picked in proportion to their size."""
    sizes = np.array([s.size - block_size - 1 for s in shards], dtype=np.int64)
    if (sizes <= 0).all():
        raise ValueError(f"every text shard is shorter than block_size + 1 = {block_size + 1} tokens")
    sizes = np.maximum(sizes, 0)
    which = rng.choice(len(shards), size=num_rows, p=sizes / sizes.sum())
    windows = []
    for s in which:
        start = rng.integers(0, sizes[s])
        windows.append(np.asarray(shards[s][start:start + block_size + 1], dtype=np.int64))
    return windows


def text_row(window, eot_id, first_doc=0):
    x, y = window[:-1], window[1:]
    return dict(input_ids=x, targets=y, doc_ids=first_doc + np.cumsum(x == eot_id),
                segment=np.full(len(x), SEGMENT_TEXT, dtype=np.int64), image=None)


def sample_row(sample, block_size, eot_id, filler=None):
    """One image-caption or conversation sample, then text (filler, block_size + 1 - used tokens) or padding.
    Position t predicts token t+1, a target only where the sample's loss mask is 1 there."""
    tokens = np.asarray(sample['tokens'][:block_size + 1], dtype=np.int64)
    mask = np.asarray(sample['loss_mask'][:block_size + 1])
    used = len(tokens) - 1
    row = dict(input_ids=np.full(block_size, eot_id, dtype=np.int64),
               targets=np.full(block_size, -100, dtype=np.int64), doc_ids=np.ones(block_size, dtype=np.int64),
               segment=np.zeros(block_size, dtype=np.int64), image=sample['image'])
    row['input_ids'][:used] = tokens[:-1]
    row['targets'][:used] = np.where(mask[1:] > 0, tokens[1:], -100)
    row['doc_ids'][:used] = 0
    row['segment'][:used] = SEGMENT_SAMPLE
    if filler is not None and used < block_size:
        rest = text_row(filler[:block_size - used + 1], eot_id, first_doc=1)
        for key in ('input_ids', 'targets', 'doc_ids', 'segment'):
            row[key][used:] = rest[key]
    return row


def collate(rows, image_shape, need_doc_ids):
    """Rows -> the batch of the contracts (+ segment, for the per-source losses and fractions)."""
    batch = {k: torch.from_numpy(np.stack([r[k] for r in rows])) for k in ('input_ids', 'targets', 'segment')}
    batch['doc_ids'] = torch.from_numpy(np.stack([r['doc_ids'] for r in rows])) if need_doc_ids else None
    if image_shape is not None:
        has_image = [r['image'] is not None for r in rows]
        images = np.zeros((len(rows), *image_shape), dtype=np.uint8)
        for i, r in enumerate(rows):
            if r['image'] is not None:
                images[i] = r['image']
        batch['images'], batch['has_image'] = torch.from_numpy(images), torch.tensor(has_image)
    return batch


class TextLoader:
    """Random windows of the text shards. No document mask: a text window attends across the
    <|endoftext|> between documents, as DCLM's (open_lm's) pre-training does."""

    def __init__(self, shards, block_size, eot_id, seed, split_tag=0):
        self.shards, self.block_size, self.eot_id = shards, block_size, eot_id
        self.seed, self.split_tag = seed, split_tag
        self.image_shape = None

    def rows(self, step, num_rows):
        rng = np.random.default_rng([self.seed, self.split_tag, step])
        return [text_row(w, self.eot_id) for w in text_windows(self.shards, num_rows, self.block_size, rng)]

    def need_doc_ids(self, rows):
        return False


class MixedLoader(TextLoader):
    """
    Text rows and image-caption rows, interleaved by a deterministic schedule so that image-caption
    positions make up `ratio` of the non-padding positions. Within each window of WINDOW steps an
    error-diffusion rule picks, slot by slot, whichever of "image row" or "text row" keeps the running
    fraction closer to the target; the state restarts at each window, so any step's plan is known by
    replaying at most WINDOW - 1 steps (resuming needs only the step number). With ratio 0 every row
    is the text stage's row for that step.
    """
    WINDOW = 100

    def __init__(self, text_shards, captions, block_size, eot_id, seed, ratio, fill):
        super().__init__(text_shards, block_size, eot_id, seed)
        self.captions, self.ratio, self.fill = captions, ratio, fill
        self.positions = np.minimum(captions.lengths(), block_size + 1) - 1  # input positions a sample uses
        self.image_shape = (captions.manifest['image_size'],) * 2 + (3,)
        self.window_state = {}  # step -> (image positions, non-padding positions) so far in its window

    def plan(self, step, num_rows):
        """Sample index per row slot, -1 for a text row."""
        start = step - step % self.WINDOW
        if step not in self.window_state:
            self.window_state = {start: (0, 0)}
            for s in range(start, step):
                self.plan(s, num_rows)
        image_pos, total = self.window_state[step]
        rng = np.random.default_rng([self.seed, 3, step])
        n = len(self.positions)
        candidates = rng.choice(n, size=num_rows, replace=num_rows > n)  # distinct within a step if possible
        plan = []
        for c in candidates:
            used = self.positions[c]
            image_total = total + (used if self.fill == 'pad' else self.block_size)
            image_error = abs(image_pos + used - self.ratio * image_total)
            text_error = abs(image_pos - self.ratio * (total + self.block_size))
            if self.ratio > 0 and image_error < text_error:
                plan.append(int(c))
                image_pos, total = image_pos + used, image_total
            else:
                plan.append(-1)
                total += self.block_size
        if (step + 1) % self.WINDOW:
            self.window_state[step + 1] = (image_pos, total)
        return plan

    def rows(self, step, num_rows):
        plan = self.plan(step, num_rows)
        text = super().rows(step, num_rows)  # the text stage's rows, so ratio 0 trains exactly like it
        rng = np.random.default_rng([self.seed, 2, step])
        rows = []
        for i, c in enumerate(plan):
            if c < 0:
                rows.append(text[i])
                continue
            filler = None
            if self.fill == 'text':
                filler = text_windows(self.shards, 1, self.block_size, rng)[0]
            rows.append(sample_row(self.captions[c], self.block_size, self.eot_id, filler))
        return rows

    def need_doc_ids(self, rows):
        # a padded caption row needs no mask: causal attention never lets the sample see the padding after it
        return self.fill == 'text' and any(r['image'] is not None for r in rows)


class InstructLoader:
    """Conversations, one per row, padded; epochs over a seeded permutation per epoch."""

    def __init__(self, samples, block_size, eot_id, seed, image_shape):
        self.samples, self.block_size, self.eot_id, self.seed = samples, block_size, eot_id, seed
        self.image_shape = image_shape
        self.orders = {}

    def index(self, g):
        epoch, i = divmod(g, len(self.samples))
        if epoch not in self.orders:
            self.orders = {epoch: np.random.default_rng([self.seed, 4, epoch]).permutation(len(self.samples))}
        return int(self.orders[epoch][i])

    def rows(self, step, num_rows):
        return [sample_row(self.samples[self.index(step * num_rows + j)], self.block_size, self.eot_id)
                for j in range(num_rows)]

    def need_doc_ids(self, rows):
        return False


def rank_batches(loader, step, rank, world_size, micro_batches, batch_size):
    """This rank's micro-batches of the global batch of `step`."""
    rows = loader.rows(step, micro_batches * world_size * batch_size)
    mine = rows[rank * micro_batches * batch_size:(rank + 1) * micro_batches * batch_size]
    micro = [mine[i * batch_size:(i + 1) * batch_size] for i in range(micro_batches)]
    return [collate(m, loader.image_shape, loader.need_doc_ids(m)) for m in micro]


def val_batches(data, kind, eval_iters, batch_size, block_size, eot_id, seed, image_shape=None):
    """Fixed validation batches: text windows, or the first samples of an image split, padded."""
    if kind == 'text':
        loader = TextLoader(data, block_size, eot_id, seed, split_tag=1)
        return [collate(loader.rows(i, batch_size), None, False) for i in range(eval_iters)]
    n = min(len(data), eval_iters * batch_size)
    rows = [sample_row(data[i], block_size, eot_id) for i in range(n)]
    return [collate(rows[i:i + batch_size], image_shape, False) for i in range(0, n, batch_size)]


# -----------------------------------------------------------------------------
# Checkpoints: self-contained, written to a temporary file and renamed

def rng_state():
    # the data order depends on (seed, step) alone; these cover dropout-free sampling done by torch
    state = dict(python=random.getstate(), torch=torch.get_rng_state())
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(state['python'])
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


class CheckpointWriteError(OSError):
    pass


def save_checkpoint(path, checkpoint):
    """Write to a temporary name, fsync, rename: a crash or a full disk mid-write leaves the previous
    checkpoint intact, and a checkpoint that exists is complete."""
    tmp = f"{path}.tmp"
    try:
        with open(tmp, 'wb') as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
    except (OSError, RuntimeError) as e:  # a full disk: OSError, or RuntimeError from torch's zip writer
        if os.path.exists(tmp):
            os.remove(tmp)
        raise CheckpointWriteError(f"could not write {path} ({str(e).splitlines()[0]}); the previous "
                                   f"one, if any, is intact") from e
    os.replace(tmp, path)


def milestone_steps(fractions, max_steps):
    return {round(f * max_steps): f for f in fractions}


def optimizer_state_by_index(state, model, optimizer):
    """A full optimizer state keyed by parameter name -> the index-keyed form load_state_dict takes."""
    names = {id(p): n for n, p in model.named_parameters()}
    order = [names[id(p)] for g in optimizer.param_groups for p in g['params']]
    index = {n: i for i, n in enumerate(order)}
    groups = [{**g, 'params': [index[n] for n in g['params']]} for g in state['param_groups']]
    return dict(state={index[n]: v for n, v in state['state'].items()}, param_groups=groups)


def fail(message):
    sys.exit(f"error: {message}")


# -----------------------------------------------------------------------------
# Set-up: the config's checks and derived paths, the processes, the data

def run_fields(config):
    """The fields out_dir may name: overlays need not each spell a folder, two arms never share one."""
    source = os.path.normpath(config['init_from'])
    start = os.path.splitext(os.path.basename(source))[0]
    return dict(vision='frozen' if config['freeze_vision'] else 'unfrozen', projector=config['projector'],
                start=start[len('ckpt_'):] if start.startswith('ckpt_') else start,
                parent=os.path.basename(os.path.dirname(source)))


def fill_run_paths(config):
    """init_from may name {vision} and {projector}; out_dir also {start} and {parent} (from init_from)."""
    fields = run_fields(config)
    if config['init_from'] == 'resume' and ('{start}' in out_dir or '{parent}' in out_dir):
        fail(f"out_dir '{config['out_dir']}' is named after init_from, which is 'resume': give the run's "
             f"folder as --out_dir")
    try:
        config['init_from'] = init_from.format(vision=fields['vision'], projector=fields['projector'])
        config['out_dir'] = config['out_dir'].format(**run_fields(config))
    except (KeyError, IndexError, ValueError) as e:
        fail(f"out_dir / init_from: unknown field {e}; known: {', '.join(fields)}")
    globals().update(init_from=config['init_from'], out_dir=config['out_dir'])
    return config


def check_config():
    """One pass over the values before anything is read or written: the first bad one, in one line."""
    choices = dict(stage=('text', 'mixed', 'finetune'), image_row_fill=('text', 'pad'),
                   projector=PROJECTORS, attention=attention_module.BACKENDS,
                   dtype=('float32', 'bfloat16', 'float16'), vision_dtype=('float32', 'bfloat16', 'float16'))
    for key, allowed in choices.items():
        if globals()[key] not in allowed:
            fail(f"{key} must be one of {', '.join(map(repr, allowed))}, got {globals()[key]!r}")
    for key in ('batch_size', 'gradient_accumulation_steps', 'eval_interval', 'eval_iters', 'log_interval',
                'block_size', 'n_layer', 'n_head', 'n_embd'):
        if globals()[key] < 1:
            fail(f"{key} must be at least 1, got {globals()[key]}")
    if max_iters < (0 if stage == 'finetune' else 1):
        fail(f"max_iters must be at least 1 (finetune: 0 = from epochs), got {max_iters}")
    if stage == 'finetune' and max_iters == 0 and epochs <= 0:
        fail(f"epochs must be positive when max_iters is 0, got {epochs}")
    if not 0 <= image_ratio <= 1:
        fail(f"image_ratio must be within [0, 1], got {image_ratio}")
    if not all(0 <= m <= 1 for m in milestones):
        fail(f"milestones are fractions of the run, within [0, 1]: got {milestones}")
    if min(learning_rate, min_lr, warmup_iters, weight_decay, grad_clip, z_loss) < 0:
        fail("learning_rate, min_lr, warmup_iters, weight_decay, grad_clip and z_loss must not be negative")
    if device.startswith('cuda') and not torch.cuda.is_available():
        fail(f"device is '{device}' but this machine has no CUDA device (use --device=cpu)")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        fail(f"out_dir {out_dir} is a file, not a folder")


@dataclass
class Processes:
    """Where this process runs, among the others (torchrun sets RANK, WORLD_SIZE and LOCAL_RANK)."""
    ddp: bool  # a process group: DDP (several processes) or FSDP2 (fsdp = True, one process or more)
    rank: int
    local_rank: int
    world_size: int
    device: str  # this process's device, e.g. 'cuda:3'
    device_type: str  # 'cuda' | 'cpu'
    micro_batches: int  # this process's micro-batches per step

    @property
    def master(self):
        return self.rank == 0


def setup_processes():
    ddp = int(os.environ.get('WORLD_SIZE', 1)) > 1 or fsdp and 'RANK' in os.environ  # FSDP2 needs a group
    local_rank = int(os.environ.get('LOCAL_RANK', 0))
    if ddp:
        dist.init_process_group(backend='nccl' if device.startswith('cuda') else 'gloo')
        rank, world_size = dist.get_rank(), dist.get_world_size()
        run_device = f'cuda:{local_rank}' if device.startswith('cuda') else device
        if run_device.startswith('cuda'):
            torch.cuda.set_device(run_device)
    else:
        rank, world_size, run_device = 0, 1, device
    if fsdp and not ddp:
        fail("fsdp = True needs a process group: launch with torchrun (one process is enough)")
    if gradient_accumulation_steps % world_size:
        fail(f"gradient_accumulation_steps ({gradient_accumulation_steps}) must be a multiple of the number "
             f"of processes ({world_size})")
    device_type = 'cuda' if run_device.startswith('cuda') else 'cpu'
    procs = Processes(ddp, rank, local_rank, world_size, run_device, device_type,
                      gradient_accumulation_steps // world_size)
    attention_module.set_backend(attention)
    torch.manual_seed(seed)  # the same on every rank: FSDP2 shards each rank's own fresh weights
    if procs.master:
        os.makedirs(out_dir, exist_ok=True)
    return procs


def load_data():
    """The stage's shards: {'text_manifest', 'text_train', 'text_val', 'captions', 'caption_val',
    'instruct', 'instruct_val'} (None where the stage has no such data)."""
    try:
        text_manifest, text_train = load_text_split(text_data, 'train')
        _, text_val = load_text_split(text_data, 'val')
        data = dict(text_manifest=text_manifest, text_train=text_train, text_val=text_val,
                    captions=ImageShards(caption_data, 'train') if stage == 'mixed' else None,
                    caption_val=ImageShards(caption_data, 'val') if stage == 'mixed' else None,
                    instruct=ImageShards(instruct_data, 'train') if stage == 'finetune' else None,
                    instruct_val=ImageShards(instruct_data, 'val') if stage == 'finetune' else None)
    except (OSError, ValueError) as e:
        fail(f"data: {e}")
    if stage == 'mixed' and not caption_data or stage == 'finetune' and not instruct_data:
        fail(f"the {stage} stage needs {'caption_data' if stage == 'mixed' else 'instruct_data'}")
    for key, kind in (('captions', 'captions'), ('instruct', 'instruct')):
        if data[key] is not None and data[key].manifest['kind'] != kind:
            folder = caption_data if key == 'captions' else instruct_data
            fail(f"{'caption_data' if key == 'captions' else 'instruct_data'}: {folder} holds "
                 f"{data[key].manifest['kind']} data, not {kind} (prepare_data.py "
                 f"{'captions' if kind == 'captions' else 'llava'} makes it)")
    return data


# -----------------------------------------------------------------------------
# The model of each stage, checked against the data before anything trains

def check_data(manifest, where, tokenizer, vocab_size, sha256=None):
    if manifest['tokenizer'] != tokenizer:
        fail(f"{where}: tokenizer '{manifest['tokenizer']}' differs from the text data's / checkpoint's "
             f"'{tokenizer}'")
    if manifest['vocab_size'] != vocab_size:
        fail(f"{where}: vocab_size {manifest['vocab_size']} differs from the model's {vocab_size}")
    if sha256 is not None and manifest.get('tokenizer_sha256') != sha256:
        fail(f"{where}: tokenizer.json sha256 {str(manifest.get('tokenizer_sha256'))[:12]}... differs from "
             f"the checkpoint's / text data's {sha256[:12]}... (tokenised with another GPT-NeoX file)")


def tokenizer_keys(tokenizer, manifest):
    """A checkpoint's tokenizer keys: the name; for neox the text data's tokenizer.json and its sha256."""
    if tokenizer != 'neox':
        return dict(tokenizer=tokenizer)
    path = os.path.join(text_data, 'tokenizer.json')
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as e:
        fail(f"{path}: cannot read the data's tokenizer file ({e.strerror or e})")
    if hashlib.sha256(data).hexdigest() != manifest.get('tokenizer_sha256'):
        fail(f"{path}: its sha256 differs from the manifest's tokenizer_sha256 (re-run prepare_data.py)")
    return dict(tokenizer=tokenizer, tokenizer_json=data, tokenizer_sha256=manifest['tokenizer_sha256'])


def check_images(manifest, where, model):
    S = model.vision.cfg.image_size
    if manifest['image_size'] != S:
        fail(f"{where}: images are {manifest['image_size']} px, the encoder takes {S} px (re-run "
             f"prepare_data.py with --image_size={S})")
    if manifest['image_positions'] != model.num_patches:
        fail(f"{where}: samples hold {manifest['image_positions']} image positions, the encoder gives "
             f"{model.num_patches} patches")


def load_parent():
    """The checkpoint this stage starts from (a text milestone, a mixed-stage VLM), or a DCLM-1B folder
    (model.dclm_checkpoint: the finished text run, its 100 % point)."""
    if os.path.isdir(init_from):
        parent = dclm_checkpoint(init_from)
    else:
        parent = load_checkpoint(init_from, ('model', 'model_args', 'step', 'lineage', 'config'))
    is_vlm = 'vision' in parent['model_args']
    if stage == 'mixed' and is_vlm:
        fail(f"{init_from} is already a VLM checkpoint; the mixed stage starts from a text (LM) checkpoint")
    if stage == 'finetune' and not is_vlm:
        fail(f"{init_from} holds a text model; the finetune stage starts from a mixed-stage VLM checkpoint")
    return parent


RESUME_KEYS = ('model', 'model_args', 'optimizer', 'rng', 'config', 'step', 'lineage', 'tokenizer')


def load_resumed():
    """out_dir/ckpt.pt when init_from = 'resume', checked against stage and block_size before any data."""
    if init_from != 'resume':
        return None
    path, t0 = os.path.join(out_dir, 'ckpt.pt'), time.time()
    try:
        checkpoint = load_checkpoint(path, RESUME_KEYS)
    except (OSError, ValueError) as e:
        fail(f"resume: {e}")
    print(f"{path}: read in {time.time() - t0:.1f} s")
    for key in ('stage', 'block_size'):
        if checkpoint['config'].get(key) != globals()[key]:
            fail(f"{path}: saved by a run with {key} {checkpoint['config'].get(key)!r}; resuming it with "
                 f"{key} {globals()[key]!r} is not the same run (start a new out_dir instead)")
    return checkpoint


def build_stage_model(config, text_manifest, resumed):
    """(model, model_args, step, lineage, checkpoint): the checkpoint resumed or started from, or None."""
    lineage = dict(config=config, init_from=init_from, parent=None)
    if resumed is not None:
        model = build_model(resumed['model_args'], os.path.join(out_dir, 'ckpt.pt'))
        load_weights(model, resumed['model'], os.path.join(out_dir, 'ckpt.pt'))
        return model, resumed['model_args'], resumed['step'], resumed['lineage'], resumed
    if stage == 'text' and init_from == 'scratch':
        args = dict(vocab_size=text_manifest['vocab_size'], block_size=block_size, n_layer=n_layer,
                    n_head=n_head, n_embd=n_embd)
        return LM(LMConfig(**args)), args, 0, lineage, None
    if init_from == 'scratch':
        fail(f"the {stage} stage starts from a checkpoint: set init_from (e.g. "
             f"{'out/text/ckpt_080.pt' if stage == 'mixed' else 'out/mixed/ckpt.pt'})")
    if stage == 'mixed' and not vision_init:
        fail("the mixed stage needs vision_init: an HF SigLIP checkpoint or a pre-trained tiny tower")
    parent = load_parent()
    if stage == 'text':
        args = parent['model_args']
        model = build_model(args, init_from)
        load_weights(model, parent['model'], init_from)
    elif stage == 'mixed':  # the text LM + a SigLIP encoder + a fresh projector
        tower = load_siglip(vision_init, feature_layer=feature_layer)
        lm_args = dict(parent['model_args'], block_size=block_size)
        args = vlm_args(LMConfig(**lm_args), tower.cfg, projector, feature_layer, text_manifest['image_id'],
                        freeze_vision)
        model = build_model(args)
        load_weights(model.lm, parent['model'], init_from)
        model.vision.load_state_dict(tower.drop_unused().state_dict())
    else:  # finetune: a mixed-stage VLM, its rotary tables sized to this stage's rows
        args = dict(parent['model_args'], freeze_vision=freeze_vision,
                    lm=dict(parent['model_args'].get('lm', {}), block_size=block_size))
        model = build_model(args, init_from)
        load_weights(model, parent['model'], init_from)
    lineage['parent'] = dict(path=init_from, step=parent['step'], lineage=parent['lineage'])
    return model, args, 0, lineage, parent


def check_model_fits_data(model, checkpoint, data):
    """The tokenizer (and neox's file), vocabulary, image size and positions, block size: one line for any
    mismatch. Returns the checkpoint's tokenizer keys (tokenizer_keys)."""
    lm, text = (model.lm if isinstance(model, VLM) else model), data['text_manifest']
    tokenizer = checkpoint['tokenizer'] if checkpoint is not None else text['tokenizer']
    sha256 = checkpoint.get('tokenizer_sha256') if checkpoint is not None else None  # none: DCLM-1B's
    check_data(text, text_data, tokenizer, lm.config.vocab_size, sha256)
    for shards, where in ((data['captions'], caption_data), (data['instruct'], instruct_data)):
        if shards is not None:
            check_data(shards.manifest, where, tokenizer, lm.config.vocab_size,
                       sha256 or text.get('tokenizer_sha256'))
            check_images(shards.manifest, where, model)
    return tokenizer_keys(tokenizer, text)


def stage_schedule(checkpoint, lineage, data):
    """(peak learning rate, warmup steps, steps) of this stage. A mixed stage started from a milestone
    inside the text run (0 < fraction < 1) continues the text schedule's decay from its value there."""
    peak, warmup, max_steps = learning_rate, warmup_iters, max_iters
    if stage == 'finetune' and max_iters <= 0:
        max_steps = math.ceil(epochs * len(data['instruct']) / (gradient_accumulation_steps * batch_size))
    if stage == 'mixed' and init_from != 'resume':
        fraction = checkpoint['step'] / checkpoint['config']['max_iters']
        if start_fraction >= 0 and abs(start_fraction - fraction) > 1e-6:
            fail(f"start_fraction {start_fraction} but {init_from} is at {fraction:.3f} of its text run")
        lineage['start_fraction'] = fraction
    if stage == 'mixed' and 0 < lineage.get('start_fraction', 0) < 1:
        # the text schedule's learning rate at the milestone: where the mixed stage starts its decay
        c, text_step = lineage['parent']['lineage']['config'], lineage['parent']['step']
        peak, warmup = lr_at(text_step, c['max_iters'], c['learning_rate'], c['min_lr'], c['warmup_iters']), 0
    return peak, warmup, max_steps


def wrap_model(model, procs):
    """Activation checkpointing, FSDP2 or DDP, compile. Returns the module to call."""
    if activation_checkpointing:
        checkpoint_activations(model)
    if fsdp:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
        param_dtype = getattr(torch, dtype) if procs.device_type == 'cuda' else torch.float32
        policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
        lm = model.lm if isinstance(model, VLM) else model
        for block in lm.layers:
            fully_shard(block, mp_policy=policy)
        if isinstance(model, VLM):
            if not model.freeze_vision:
                for block in model.vision.encoder['layers']:
                    fully_shard(block, mp_policy=policy)
            fully_shard(model.vision, mp_policy=policy)
        fully_shard(model, mp_policy=policy)
        wrapped = model
    elif procs.ddp:
        wrapped = DDP(model, device_ids=[procs.local_rank] if procs.device_type == 'cuda' else None)
    else:
        wrapped = model
    return torch.compile(wrapped) if compile else wrapped


def make_optimizer(raw_model, peak, procs, checkpoint):
    """AdamW over the (possibly sharded) parameters; on resume, its state and the RNG states."""
    if isinstance(raw_model, VLM):
        scale = None if freeze_vision else vision_lr * peak / learning_rate
        optimizer = raw_model.configure_optimizers(weight_decay, peak, (beta1, beta2), adam_eps,
                                                   procs.device_type, vision_lr=scale)
    else:
        optimizer = raw_model.configure_optimizers(weight_decay, peak, (beta1, beta2), adam_eps,
                                                   procs.device_type)
    if init_from == 'resume':
        if fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
            options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
            set_optimizer_state_dict(raw_model, optimizer, checkpoint['optimizer'], options=options)
        else:
            optimizer.load_state_dict(optimizer_state_by_index(checkpoint['optimizer'], raw_model, optimizer))
        set_rng_state(checkpoint['rng'])
    return optimizer


def make_loaders(raw_model, data):
    """The training loader of the stage and the fixed validation batches {name: [batch]}."""
    eot_id = data['text_manifest']['eot_id']
    image_shape = raw_model.image_shape() if isinstance(raw_model, VLM) else None
    for split in ('train', 'val'):  # every text row is a window of block_size + 1 tokens from one shard
        if not any(shard.size > block_size for shard in data[f'text_{split}']):
            fail(f"{text_data}: no {split} shard holds block_size + 1 = {block_size + 1} tokens")
    if stage == 'text':
        loader = TextLoader(data['text_train'], block_size, eot_id, seed)
    elif stage == 'mixed':
        loader = MixedLoader(data['text_train'], data['captions'], block_size, eot_id, seed, image_ratio,
                             image_row_fill)
    else:
        loader = InstructLoader(data['instruct'], block_size, eot_id, seed, image_shape)
    val_sets = dict(text=val_batches(data['text_val'], 'text', eval_iters, batch_size, block_size, eot_id,
                                     seed))
    for name, shards in (('caption', data['caption_val']), ('instruct', data['instruct_val'])):
        if shards is not None and len(shards):
            val_sets[name] = val_batches(shards, 'images', eval_iters, batch_size, block_size, eot_id, seed,
                                         image_shape)
    return loader, val_sets


# -----------------------------------------------------------------------------
# One training step, evaluation, checkpoints and the log

def to_device(batch, procs):
    return {k: None if v is None else v.to(procs.device, non_blocking=True) for k, v in batch.items()}


def forward(module, raw_model, batch, procs):
    """Per-token losses (B, T), 0 where there is no target."""
    kwargs = dict(doc_ids=batch['doc_ids'], z_loss=z_loss, reduction='none')
    if isinstance(raw_model, VLM):
        kwargs.update(images=batch.get('images'), has_image=batch.get('has_image'))
    autocast = (torch.autocast(device_type='cuda', dtype=getattr(torch, dtype))
                if procs.device_type == 'cuda' and dtype != 'float32' else nullcontext())
    with autocast:
        _, per_token = module(batch['input_ids'], batch['targets'], **kwargs)
    return per_token.view(batch['targets'].shape)


def count_tokens(batches, procs):
    """Per segment (pad, sample, text; indexed by SEGMENT_*), over the step's micro-batches and all
    processes: {'targets': tokens with a loss target, 'positions': input positions}, float64 (3,)."""
    counts = torch.stack([torch.stack([((b['segment'] == s) & (b['targets'] != -100)).sum() for s in range(3)]
                                      + [(b['segment'] == s).sum() for s in range(3)])
                          for b in batches]).sum(0)  # (6,): targets per segment, then positions
    counts = counts.to(procs.device, torch.float64)
    if procs.ddp:
        dist.all_reduce(counts)
    return dict(targets=counts[:3], positions=counts[3:])


def diverged(what, step):
    """Stop without saving: a non-finite loss never replaces the last good checkpoint."""
    path = os.path.join(out_dir, 'ckpt.pt')
    last = (f"the last good checkpoint is {path}" if os.path.exists(path)
            else f"there is no ckpt.pt yet in {out_dir}")
    fail(f"non-finite {what} at step {step}: stopping without saving; {last}. Lower learning_rate or check "
         f"the data.")


def check_token_ids(batches, vocab_size, step):
    """Ids past the vocabulary mean a shard that does not match its manifest: one line, not an IndexError
    deep in the embedding."""
    largest = max(int(b['input_ids'].max()) for b in batches)
    if largest >= vocab_size:
        folders = ', '.join(f for f in (text_data, caption_data, instruct_data) if f)
        fail(f"step {step}: token id {largest} is past the model's vocab_size {vocab_size}: a shard of "
             f"{folders} does not match its manifest (python prepare_data.py verify --data=FOLDER names it)")


def train_step(model, raw_model, optimizer, batches, lr, procs, step):
    """Forward and backward over the micro-batches, clip, step. Returns (loss, grad norm, the loss sum
    per segment, the token counts)."""
    for group in optimizer.param_groups:
        group['lr'] = lr * group['lr_scale']
    counts = count_tokens(batches, procs)
    # normalise by the target tokens of the whole step (all micro-batches, all processes)
    n_targets = counts['targets'].sum().float()
    loss_sums = torch.zeros(3, device=procs.device)
    for i, batch in enumerate(batches):
        batch = to_device(batch, procs)
        last = i == procs.micro_batches - 1
        sync = nullcontext() if not procs.ddp or fsdp or last else model.no_sync()
        with sync:
            per_token = forward(model, raw_model, batch, procs)
            # DDP / FSDP average gradients over processes; the sum over processes is what we want
            (per_token.sum() * procs.world_size / n_targets).backward()
        loss_sums += torch.stack([per_token[batch['segment'] == s].sum() for s in range(3)]).detach()
    if procs.ddp:
        dist.all_reduce(loss_sums)
    loss_sums = loss_sums.tolist()
    counts = {k: v.tolist() for k, v in counts.items()}
    loss = sum(loss_sums) / max(sum(counts['targets']), 1)
    if not math.isfinite(loss):
        diverged(f"loss ({loss})", step)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip else float('inf'))
    grad_norm = grad_norm.full_tensor() if fsdp else grad_norm  # FSDP2 returns a DTensor
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss, float(grad_norm), loss_sums, counts


@torch.no_grad()
def evaluate(model, raw_model, val_sets, procs):
    """Mean validation loss per val set. FSDP needs every rank in every forward; DDP ranks split them."""
    model.eval()
    losses = {}
    for name, batches in val_sets.items():
        total = torch.zeros((), device=procs.device)
        count = torch.zeros((), device=procs.device)
        for batch in (batches if fsdp else batches[procs.rank::procs.world_size]):
            batch = to_device(batch, procs)
            total += forward(model if fsdp else raw_model, raw_model, batch, procs).sum()
            count += (batch['targets'] != -100).sum()
        if procs.ddp and not fsdp:
            dist.all_reduce(total)
            dist.all_reduce(count)
        losses[name] = (total / count.clamp(min=1)).item()
    model.train()
    return losses


def write_checkpoint(path, raw_model, optimizer, procs, state, with_optimizer=True):
    """state: model_args, tokenizer, config, step, lineage. A collective under FSDP: every rank calls it."""
    # get_optimizer_state_dict gives an optimizer without state a zero-gradient step (at lr 0), which
    # advances Adam's step count: ask for it only when it is saved, never before the first step
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)
    t0 = time.time()  # the write's time counts the gathering of the full state dicts
    options = StateDictOptions(full_state_dict=True, cpu_offload=procs.ddp)
    weights = get_model_state_dict(raw_model, options=options) if procs.ddp else raw_model.state_dict()
    optim = get_optimizer_state_dict(raw_model, optimizer, options=options) if with_optimizer else None
    if not procs.master:
        return
    checkpoint = dict(model=weights, rng=rng_state(), **state)
    if with_optimizer:
        checkpoint['optimizer'] = optim
    try:
        save_checkpoint(path, checkpoint)
    except CheckpointWriteError as e:
        fail(str(e))
    print(f"{path}: written in {time.time() - t0:.1f} s")


class Log:
    """log.jsonl beside the checkpoints, and Weights & Biases when wandb_log is set (master only).
    A resumed run first cuts the log back to its checkpoint's step, so that each step is logged once
    even when the run was killed after its last checkpoint."""

    def __init__(self, master, config, resume_step=None):
        self.master, self.path, self.wandb = master, os.path.join(out_dir, 'log.jsonl'), None
        if master and resume_step is not None and os.path.exists(self.path):
            with open(self.path) as f:
                records = [json.loads(line) for line in f if line.strip()]
            # the step that made the checkpoint was logged before it; its evaluation comes again
            kept = [r for r in records if r['step'] < resume_step or r['step'] == resume_step and 'loss' in r]
            atomic_write_bytes(self.path, ''.join(json.dumps(r) + '\n' for r in kept).encode())
        if master and wandb_log:
            import wandb  # optional: only a run that asks for it needs the package
            self.wandb = wandb.init(project=wandb_project, name=wandb_run_name or os.path.basename(out_dir),
                                    config=config, dir=out_dir)

    def __call__(self, record):
        if not self.master:
            return
        with open(self.path, 'a') as f:
            f.write(json.dumps(record) + '\n')
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in record.items() if v is not None}, step=record['step'])

    def close(self):
        if self.wandb is not None:
            self.wandb.finish()


def step_record(step, loss, lr, grad_norm, loss_sums, counts, speed):
    """The log record of a step: loss, learning rate, throughput, and the tokens per source."""
    targets, positions = counts['targets'], counts['positions']
    non_pad = max(positions[SEGMENT_SAMPLE] + positions[SEGMENT_TEXT], 1)
    return dict(step=step, loss=loss, lr=lr, grad_norm=grad_norm, **speed,
                image_fraction=positions[SEGMENT_SAMPLE] / non_pad,
                text_fraction=positions[SEGMENT_TEXT] / non_pad,
                pad_fraction=positions[SEGMENT_PAD] / max(sum(positions), 1),
                sample_loss=(loss_sums[SEGMENT_SAMPLE] / targets[SEGMENT_SAMPLE]
                             if targets[SEGMENT_SAMPLE] else None),
                text_loss=loss_sums[SEGMENT_TEXT] / targets[SEGMENT_TEXT] if targets[SEGMENT_TEXT] else None)


class Throughput:
    """Tokens per second and MFU since the last log line."""

    def __init__(self, raw_model, procs):
        self.raw_model, self.procs = raw_model, procs
        self.device_name = torch.cuda.get_device_name(procs.device) if procs.device_type == 'cuda' else 'cpu'
        self.t_last, self.flops, self.tokens, self.steps = time.time(), 0.0, 0, 0

    def add(self, batches, counts):
        positions = sum(counts['positions'])
        self.tokens, self.steps = self.tokens + positions, self.steps + 1
        if isinstance(self.raw_model, VLM):
            num_images = (sum(int(b['has_image'].sum()) for b in batches) * self.procs.world_size
                          if 'has_image' in batches[0] else 0)
            self.flops += self.raw_model.flops_per_step(positions, num_images, block_size)
        else:
            self.flops += self.raw_model.flops_per_token(block_size) * positions

    def read(self):
        elapsed = time.time() - self.t_last
        tokens_per_sec = self.tokens / elapsed
        mfu = estimate_mfu(self.flops / self.tokens, tokens_per_sec / self.procs.world_size, self.device_name)
        memory = (torch.cuda.max_memory_allocated(self.procs.device) if self.procs.device_type == 'cuda'
                  else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)  # the process's peak RSS
        speed = dict(tokens_per_sec=tokens_per_sec, mfu=mfu, step_seconds=elapsed / self.steps,
                     peak_memory_gib=memory / 2**30)
        self.t_last, self.tokens, self.flops, self.steps = time.time(), 0, 0.0, 0
        return speed


def print_step(record, max_steps):
    mfu = f"{record['mfu'] * 100:.1f}%" if record['mfu'] is not None else "unknown peak"
    parts = f", image {record['image_fraction']:.3f}" if stage == 'mixed' else ""
    speed = f"{record['step_seconds']:.2f} s/step, {record['tokens_per_sec']:,.0f} tok/s, MFU {mfu}"
    print(f"step {record['step']}/{max_steps}: loss {record['loss']:.4f}, lr {record['lr']:.2e}, grad norm "
          f"{record['grad_norm']:.3f}, {speed}, peak memory {record['peak_memory_gib']:.1f} GiB{parts}")


def shut_down(raw_model, procs, log, step):
    """DDP replicas must hold the same weights (a mismatch means a broken gradient sync; FSDP has no
    replicas), then the process group goes."""
    if not procs.ddp:
        log.close()
        return
    if not fsdp:
        fingerprint = sum(t.double().sum().item() + t.double().abs().sum().item()
                          for t in raw_model.state_dict().values())
        fingerprints = [None] * procs.world_size
        dist.all_gather_object(fingerprints, fingerprint)
        log(dict(step=step, replica_fingerprints=fingerprints))
        if len(set(fingerprints)) > 1 and procs.master:
            print(f"warning: the replicas' weights differ: {fingerprints}")
    log.close()
    dist.barrier()  # let every rank finish its last collective before the process group goes away
    dist.destroy_process_group()
    # everything is saved and logged; on CPU (gloo) a background thread is sometimes torn down badly at
    # interpreter exit ("terminate called without an active exception", exit -6), so leave directly
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# -----------------------------------------------------------------------------

def main():
    config = fill_run_paths(configure(globals()))
    check_config()
    resumed = load_resumed()
    procs = setup_processes()
    data = load_data()
    try:
        model, model_args, step, lineage, checkpoint = build_stage_model(config, data['text_manifest'],
                                                                         resumed)
    except (OSError, ValueError) as e:
        fail(f"model: {e}")
    resumed = None
    tok = check_model_fits_data(model, checkpoint, data)  # the tokenizer keys every checkpoint holds
    peak, warmup, max_steps = stage_schedule(checkpoint, lineage, data)
    if isinstance(model, VLM) and model.freeze_vision and procs.device_type == 'cuda':
        model.vision.to(getattr(torch, vision_dtype))
    raw_model = model.to(procs.device)
    model = wrap_model(raw_model, procs)
    # after wrapping: fully_shard replaces the parameters with sharded ones, the optimizer must hold those
    optimizer = make_optimizer(raw_model, peak, procs, checkpoint)
    checkpoint = None  # free the memory
    loader, val_sets = make_loaders(raw_model, data)
    train(model, raw_model, optimizer, loader, val_sets, procs, config,
          dict(model_args=model_args, **tok, config=config, step=step, lineage=lineage),
          peak, warmup, max_steps)


def train(model, raw_model, optimizer, loader, val_sets, procs, config, state, peak, warmup, max_steps):
    """The loop: milestones, evaluation and ckpt.pt, a step, its log line; until max_steps, a signal or
    stop_at_step. `state` is what every checkpoint holds besides weights, optimizer and RNG."""
    stop_signal = []

    def on_signal(signum, frame):  # save at the end of this step and exit 0; a second signal changes nothing
        stop_signal.append(signum)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    milestones_at = milestone_steps(milestones, max_steps) if stage == 'text' else {}
    start_step = state['step']
    log = Log(procs.master, config, resume_step=start_step if init_from == 'resume' else None)
    speed = Throughput(raw_model, procs)
    vocab_size = (raw_model.lm if isinstance(raw_model, VLM) else raw_model).config.vocab_size
    if procs.master:
        print(f"stage {stage}: {raw_model.num_params(exclude_embedding=False):,} parameters; "
              f"{gradient_accumulation_steps * batch_size} rows x {block_size} tokens per step, {max_steps} "
              f"steps; {procs.world_size} process(es) on {procs.device}; lr peak {peak:.2e}")
    while True:
        step = state['step']
        if step in milestones_at and (step > start_step or step == 0):
            name = f'ckpt_{round(milestones_at[step] * 100):03d}.pt'
            write_checkpoint(os.path.join(out_dir, name), raw_model, optimizer, procs, state,
                             with_optimizer=False)
        if step % eval_interval == 0 or step == max_steps:
            val = evaluate(model, raw_model, val_sets, procs)
            if procs.master:
                print(f"step {step}: " + ", ".join(f"{k} val loss {v:.4f}" for k, v in val.items()))
            log(dict(step=step, **{f'val_{k}_loss': v for k, v in val.items()}, val_loss=val['text']))
            for name, value in val.items():
                if not math.isfinite(value):
                    diverged(f"{name} val loss ({value})", step)
            if step > start_step:
                write_checkpoint(os.path.join(out_dir, 'ckpt.pt'), raw_model, optimizer, procs, state)
        if step >= max_steps:
            break
        lr = lr_at(step, max_steps, peak, min_lr, warmup)
        batches = rank_batches(loader, step, procs.rank, procs.world_size, procs.micro_batches, batch_size)
        check_token_ids(batches, vocab_size, step)
        loss, grad_norm, loss_sums, counts = train_step(model, raw_model, optimizer, batches, lr, procs, step)
        state['step'] = step = step + 1
        speed.add(batches, counts)
        if step % log_interval == 0 or step == max_steps:
            record = step_record(step, loss, lr, grad_norm, loss_sums, counts, speed.read())
            if procs.master:
                print_step(record, max_steps)
            log(record)
        if stop_signal or step == stop_at_step:
            write_checkpoint(os.path.join(out_dir, 'ckpt.pt'), raw_model, optimizer, procs, state)
            if procs.master:
                reason = f"signal {stop_signal[0]}" if stop_signal else "stop_at_step"
                print(f"{reason}: saved {out_dir}/ckpt.pt at step {step}; resume with --init_from=resume")
            break
    shut_down(raw_model, procs, log, state['step'])


if __name__ == '__main__':
    main()
