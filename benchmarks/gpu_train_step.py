"""One-GPU training step of a Sa2VA-4B-shaped model on a realistic batch.

    python benchmarks/gpu_train_step.py                      # 4B, cuda, all variants
    python benchmarks/gpu_train_step.py --variants ckpt-sdpa --steps 5
    python benchmarks/gpu_train_step.py --size tiny --device cpu --steps 1   # the CPU check

**Model**: ``configs/_base_/models/sa2va_4b.py`` built through the registry
with random weights, no download: the InternVL2.5-4B config
(InternViT-300M + Qwen2.5-3B, ``INTERNVL_4B`` of ``train_step.py``) instead
of the checkpoint directory, SAM2 Hiera-L without its checkpoint, the tiny
tokenizer (the embeddings keep the 4B vocabulary); bf16 InternVL, float32
SAM2, LoRA r128 and the real trainable set. ``--size tiny`` takes
``configs/_base_/models/sa2va_tiny.py`` instead.

**Batch** (one sample per family, ``--tiles`` tiles per image, ``--frames``
per video): visual prompt (5 regions), image RES (5 objects, 640 x 480
masks, SAM2 frame), video RES (2 objects x ``--frames`` frames of 1280 x
720), VQA with an image and a text-only turn, GCG (3 phrases), mask <->
caption through option A (describe and segment); collated by
``sa2va_collate_fn`` and stepped by ``model.train_step`` (data
preprocessor, forward, loss, backward, AdamW with clipping), as the runner
does. Text ids come from the tokenizer; image blocks have their real length
(256 per tile / frame).

**Reported** per variant (gradient checkpointing on/off x attention
sdpa/eager; one process per variant): samples/s and step time (median of
``--steps`` after one warm-up), the split into ViT (+ mlp1), LLM, SAM2, loss
and optimizer (CUDA events, or ``perf_counter`` on the CPU, at module
boundaries: forward hooks, and gradient hooks on each module's outputs and
inputs for its backward span; "loss" is the forward outside these modules
(preprocessor, embedding splice, mask losses, CE); "other backward" is the
backward outside the spans), peak
memory, tokens, and the MFU estimate:

    model FLOPs = 2 N_vit (1025 tiles) + 4 N_llm T + 2 N_llm_trainable T
                  + F_sam2_encoder x frames

N_vit / N_llm: ViT / LLM parameters (the LLM's embedding table excluded, its
lm_head included); T: tokens (attention_mask sum). The frozen ViT runs
forward only (2 N); the frozen LLM forward + input-gradient backward (4 N);
its trainable part (LoRA, lm_head, new rows) adds weight gradients (2 N).
F_sam2_encoder: FLOPs of one SAM2 image-encoder forward counted by
``torch.utils.flop_counter.FlopCounterMode``. Attention's quadratic term
and the recomputation of checkpointing are not model FLOPs (not counted).
MFU = model FLOPs / step time / ``--peak-tflops`` (H100 SXM dense bf16 989;
H200 989). ``--loader-workers N`` also times a DataLoader over the tiny
demo mix at real sizes (12 tiles + thumbnail, SAM2 1024) with N workers,
batch ``--loader-batch``: does the loader keep up with the step?
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / 'benchmarks'):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import train_step  # noqa: E402  (INTERNVL_4B, peak_rss_mib)

VARIANTS = {'ckpt-sdpa': (True, 'sdpa'), 'ckpt-eager': (True, 'eager'),
            'nockpt-sdpa': (False, 'sdpa'), 'nockpt-eager': (False, 'eager')}


# ---------------------------------------------------------------------------
# Model and batch
# ---------------------------------------------------------------------------
def model_config(size: str, tokenizer_dir: str, grad_ckpt: bool, attn: str):
    """The config's model dict with random weights at its real sizes."""
    from mmengine.config import Config
    name = 'sa2va_4b.py' if size == '4b' else 'sa2va_tiny.py'
    cfg = Config.fromfile(str(REPO / 'configs/_base_/models' / name))
    model = cfg.model
    model.tokenizer = tokenizer_dir
    if size == '4b':
        model.mllm.pop('model_path', None)
        model.mllm.config = train_step.INTERNVL_4B
        model.grounding_encoder.checkpoint = None
        sam2_size = 1024
    else:
        sam2_size = cfg.sa2va_tiny_sam2_size
    model.mllm.gradient_checkpointing = grad_ckpt
    model.mllm.attn_implementation = attn
    return model, sam2_size


def realistic_batch(tokenizer, sam2_size: int, tiles: int, frames: int) -> dict:
    """One sample per family at real sizes (see the module docstring)."""
    from projects.sa2va.constants import IGNORE_INDEX, NUM_IMAGE_TOKENS
    from projects.sa2va.datasets.collate import sa2va_collate_fn
    from projects.sa2va.transforms.functional import option_a_prompt_masks
    tok = tokenizer.convert_tokens_to_ids
    ctx, img, img_end = tok('<IMG_CONTEXT>'), tok('<img>'), tok('</img>')
    seg, vp, vp_end, p, p_end = (tok(t) for t in ('[SEG]', '<vp>', '</vp>', '<p>', '</p>'))
    gen = torch.Generator().manual_seed(0)
    words = tokenizer.encode('Please segment the person holding the red umbrella '
                             'on the left side of the street.', add_special_tokens=False)

    def text(n):  # n words of text
        return (words * (n // len(words) + 1))[:n]

    def block(n):
        return [img] + [ctx] * (NUM_IMAGE_TOKENS * n) + [img_end]

    def sample(question, answer, n_tiles=None, **extra):
        s = dict(input_ids=torch.tensor(question + answer),
                 labels=torch.tensor([IGNORE_INDEX] * len(question) + answer))
        if n_tiles:
            s['pixel_values'] = torch.randint(0, 256, (n_tiles, 3, 448, 448),
                                              dtype=torch.uint8, generator=gen)
        s.update(extra)
        return s

    def u8(*shape):
        return torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen)

    def masks(n, h, w):
        return (torch.rand(n, h, w, generator=gen) > 0.5).to(torch.uint8)

    grids = torch.rand(5, 16, 16, generator=gen) > 0.8
    vp_q = block(tiles) + sum(([vp] + [ctx] * int(g.sum()) + [vp_end] for g in grids), [])
    res_turns = sum((text(12) + [seg] for _ in range(5)), [])
    mc_mask = torch.zeros(sam2_size, sam2_size)
    mc_mask[sam2_size // 8:sam2_size // 2, sam2_size // 4:sam2_size // 2 + 40] = 1
    k = int(option_a_prompt_masks(mc_mask[None]).sum())
    samples = [
        sample(vp_q + text(20), text(60), tiles, prompt_masks=grids,
               vp_overall_mask=torch.tensor([False] * (tiles - 1) + [True])),
        sample(block(tiles) + text(40), res_turns, tiles,
               g_pixel_values=u8(3, sam2_size, sam2_size), masks=masks(5, 480, 640)),
        sample(sum((block(1) for _ in range(frames)), []) + text(20),
               text(4) + [seg] + text(3) + [seg],
               frames, g_pixel_values=u8(frames, 3, sam2_size, sam2_size),
               masks=masks(2 * frames, 720, 1280)),
        sample(block(tiles) + text(30), text(120), tiles),
        sample(text(60), text(200)),
        sample(block(tiles) + text(15), sum(([p] + text(3) + [p_end, seg] for _ in range(3)),
                                           []) + text(40), tiles,
               g_pixel_values=u8(3, sam2_size, sam2_size), masks=masks(3, 480, 640)),
        sample(block(1) + [vp] + [ctx] * k + [vp_end] + text(10), text(40),
               option_a_image=u8(3, sam2_size, sam2_size), option_a_mask=mc_mask.to(torch.uint8)),
        sample(block(1) + text(25), text(3) + [seg],
               option_a_image=u8(3, sam2_size, sam2_size),
               g_pixel_values=u8(3, sam2_size, sam2_size), masks=masks(1, sam2_size, sam2_size)),
    ]
    return sa2va_collate_fn(samples, pad_index=0)


# ---------------------------------------------------------------------------
# Timing at module boundaries
# ---------------------------------------------------------------------------
class SplitTimer:
    """Marks by CUDA events (no sync inside the step) or ``perf_counter`` on
    the CPU. Forward parts are start/stop pairs; a backward part is the span
    from its first to its last mark (gradient hooks on the module's output
    and input tensors)."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.open, self.spans, self.points = {}, [], []

    def mark(self):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def start(self, label):
        self.open.setdefault(label, []).append(self.mark())

    def stop(self, label):
        self.spans.append((label, self.open[label].pop(), self.mark()))

    def point(self, label):
        self.points.append((label, self.mark()))

    def totals(self) -> dict:
        if self.cuda:
            torch.cuda.synchronize()
        ref = self.spans[0][1] if self.spans else None

        def seconds(a, b):
            return a.elapsed_time(b) / 1e3 if self.cuda else b - a
        out = {}
        for label, a, b in self.spans:
            out[label] = out.get(label, 0.0) + seconds(a, b)
        by_label = {}
        for label, m in self.points:
            by_label.setdefault(label, []).append(seconds(ref, m))
        for label, ts in by_label.items():
            out[label] = max(ts) - min(ts)
        self.spans, self.open, self.points = [], {}, []
        return out


def _grad_tensors(x):
    """Tensors requiring grad inside nested tuples / lists / dicts (model
    outputs are dicts)."""
    if isinstance(x, torch.Tensor):
        if x.requires_grad:
            yield x
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _grad_tensors(v)
    elif isinstance(x, dict):
        for v in x.values():
            yield from _grad_tensors(v)


def hook_parts(model, timer: SplitTimer) -> dict:
    """Timing hooks on the ViT (+ mlp1), the LLM and SAM2's top-level
    modules: forward pre/post hooks, and gradient hooks on their outputs
    (backward reaches the module) and inputs (backward leaves it)."""
    parts = {'vit': [model.mllm.vision_model, model.mllm.mlp1],
             'llm': [model.mllm.language_model],
             'sam2': [m for m in model.grounding_encoder.children()
                      if any(True for _ in m.parameters())]}

    def pre(label):
        def hook(module, args, kwargs):
            timer.start(label + '_fwd')
            if torch.is_grad_enabled():
                for t in _grad_tensors((args, kwargs)):
                    t.register_hook(lambda g: timer.point(label + '_bwd'))
        return hook

    def post(label):
        def hook(module, args, kwargs, output):
            timer.stop(label + '_fwd')
            if torch.is_grad_enabled():
                for t in _grad_tensors(output):
                    t.register_hook(lambda g: timer.point(label + '_bwd'))
        return hook

    for label, modules in parts.items():
        for m in modules:
            m.register_forward_pre_hook(pre(label), with_kwargs=True)
            m.register_forward_hook(post(label), with_kwargs=True)
    return parts


def instrumented_step(model, batch, optim, timer: SplitTimer) -> dict:
    """``model.train_step`` spelled out with marks between its phases."""
    timer.start('step')
    timer.start('forward')
    data = model.data_preprocessor(batch, True)
    losses = model._run_forward(data, mode='loss')
    loss, log = model.parse_losses(losses)
    timer.stop('forward')
    timer.start('backward')
    optim.backward(loss)
    timer.stop('backward')
    timer.start('optimizer')
    optim.step()
    optim.zero_grad()
    timer.stop('optimizer')
    timer.stop('step')
    t = timer.totals()
    split = {k: t.get(k + '_fwd', 0.0) + t.get(k + '_bwd', 0.0) for k in ('vit', 'llm', 'sam2')}
    split['loss'] = t['forward'] - sum(t.get(k + '_fwd', 0.0) for k in ('vit', 'llm', 'sam2'))
    split['other_backward'] = t['backward'] - sum(t.get(k + '_bwd', 0.0)
                                                  for k in ('vit', 'llm', 'sam2'))
    split['optimizer'] = t['optimizer']
    split['step'] = t['step']
    return dict(split=split, losses={k: float(v) for k, v in log.items()})


# ---------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------
def model_flops(model, batch, sam2_size: int) -> dict:
    """The module docstring's formula, with its terms."""
    from torch.utils.flop_counter import FlopCounterMode
    llm = model.mllm.language_model
    emb = model.mllm.get_input_embeddings().weight
    n_llm = sum(p.numel() for n, p in llm.named_parameters()
                if 'lora_' not in n and p is not emb)
    n_llm_train = sum(p.numel() for p in llm.parameters() if p.requires_grad)
    n_vit = sum(p.numel() for p in model.mllm.vision_model.parameters())
    tokens = int(batch['attention_mask'].sum())
    tiles = int(batch['pixel_values'].shape[0])
    frames = len(batch['g_pixel_values'])
    enc = model.grounding_encoder.image_encoder
    p0 = next(enc.parameters())
    x = torch.zeros(1, 3, sam2_size, sam2_size, device=p0.device, dtype=p0.dtype)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        enc(x)
    f_sam = counter.get_total_flops()
    terms = dict(vit=2 * n_vit * 1025 * tiles, llm=4 * n_llm * tokens,
                 llm_trainable=2 * n_llm_train * tokens, sam2_encoder=f_sam * frames)
    return dict(total=sum(terms.values()), terms=terms, n_vit=n_vit, n_llm=n_llm,
                n_llm_trainable=n_llm_train, tokens=tokens, tiles=tiles, frames=frames)


# ---------------------------------------------------------------------------
# DataLoader throughput
# ---------------------------------------------------------------------------
def loader_throughput(root: str, workers: int, batch: int, n_batches: int,
                      realistic: bool = True) -> dict:
    """Samples/s of a DataLoader over the tiny demo mix at real image sizes."""
    from mmengine.config import Config
    from torch.utils.data import DataLoader, RandomSampler

    from projects.sa2va.datasets.collate import sa2va_collate_fn
    from projects.sa2va.datasets.inspect import build_dataset_from_config
    from projects.sa2va.sample_data import make_sample_data
    from projects.sa2va.tokenization import build_tiny_tokenizer
    root = os.path.abspath(root)
    if not os.path.exists(os.path.join(root, 'manifest.json')):
        make_sample_data(root, realistic=realistic)
    if not os.path.exists(os.path.join(root, 'tokenizer')):
        build_tiny_tokenizer(os.path.join(root, 'tokenizer'))
    cfg = Config.fromfile(str(REPO / 'configs' / 'sa2va_tiny_demo.py'))
    ds_cfg = cfg.train_dataloader.dataset
    ds_cfg.data_root_prefix = ('./data/', root.rstrip('/') + '/')
    text = dict(tokenizer=os.path.join(root, 'tokenizer'), template='phi3_chat',
                max_length=16384)
    ds_cfg.pipeline_defaults = dict(EncodeConversation=text, EncodeLLaVAConversation=text,
                                    MaskCaptionOutputs=dict(sam2_size=1024))
    ds_cfg.pipeline_overrides = dict(DynamicTiles=dict(max_num=12))
    dataset = build_dataset_from_config(cfg)
    loader = DataLoader(dataset, batch_size=batch, num_workers=workers,
                        sampler=RandomSampler(dataset, generator=torch.Generator().manual_seed(0)),
                        collate_fn=sa2va_collate_fn, persistent_workers=False)
    it = iter(loader)
    next(it)  # worker start-up and warm-up
    t0 = time.perf_counter()
    n = 0
    for _ in range(n_batches):
        n += next(it)['input_ids'].shape[0]
    dt = time.perf_counter() - t0
    return dict(workers=workers, batch=batch, batches=n_batches,
                samples_per_s=round(n / dt, 2))


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------
def run_variant(args, variant: str) -> dict:
    from mmengine.optim import OptimWrapper
    from mmengine.registry import DefaultScope, MODELS

    from projects.sa2va.tokenization import build_tiny_tokenizer
    grad_ckpt, attn = VARIANTS[variant]
    cuda = args.device.startswith('cuda')
    with tempfile.TemporaryDirectory() as tmp:
        build_tiny_tokenizer(tmp)
        cfg, sam2_size = model_config(args.size, tmp, grad_ckpt, attn)
        torch.manual_seed(0)
        t0 = time.perf_counter()
        with DefaultScope.overwrite_default_scope('sa2va'), torch.device(args.device):
            model = MODELS.build(cfg)
        build_s = time.perf_counter() - t0
    model = model.to(args.device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optim = OptimWrapper(torch.optim.AdamW(params, lr=4e-5, weight_decay=0.05),
                         clip_grad=dict(max_norm=1.0))
    batch = realistic_batch(model.tokenizer, sam2_size, args.tiles, args.frames)
    timer = SplitTimer(cuda)
    hook_parts(model, timer)
    result = dict(variant=variant, size=args.size, device=args.device,
                  grad_ckpt=grad_ckpt, attn=attn, build_s=round(build_s, 1),
                  batch=int(batch['input_ids'].shape[0]),
                  tokens=int(batch['attention_mask'].sum()),
                  tiles=int(batch['pixel_values'].shape[0]),
                  sam2_frames=len(batch['g_pixel_values']))
    try:
        instrumented_step(model, batch, optim, timer)  # warm-up
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        runs = [instrumented_step(model, batch, optim, timer) for _ in range(args.steps)]
    except torch.cuda.OutOfMemoryError as exc:  # a variant may not fit
        result['error'] = f'out of memory: {str(exc).splitlines()[0]}'
        return result
    step_s = statistics.median(r['split']['step'] for r in runs)
    result.update(
        step_s=round(step_s, 4), samples_per_s=round(result['batch'] / step_s, 3),
        split_s={k: round(statistics.median(r['split'][k] for r in runs), 4)
                 for k in runs[0]['split']},
        losses={k: round(v, 4) for k, v in runs[-1]['losses'].items()})
    if cuda:
        result['peak_mem_gib'] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        result['gpu'] = torch.cuda.get_device_name()
    else:
        result['peak_rss_mib'] = round(train_step.peak_rss_mib(), 1)
    flops = model_flops(model, batch, sam2_size)
    result['model_tflops_per_step'] = round(flops['total'] / 1e12, 3)
    result['flop_terms_tflops'] = {k: round(v / 1e12, 3) for k, v in flops['terms'].items()}
    if args.peak_tflops:
        result['mfu'] = round(flops['total'] / step_s / (args.peak_tflops * 1e12), 4)
    return result


def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size', choices=['4b', 'tiny'], default='4b')
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS),
                        choices=list(VARIANTS))
    parser.add_argument('--steps', type=int, default=3, help='timed steps after 1 warm-up')
    parser.add_argument('--tiles', type=int, default=13, help='tiles per image sample')
    parser.add_argument('--frames', type=int, default=5, help='frames per video sample')
    parser.add_argument('--peak-tflops', type=float, default=None,
                        help='device peak dense bf16 TFLOP/s (H100/H200 SXM: 989)')
    parser.add_argument('--loader-workers', type=int, default=None,
                        help='also time a DataLoader with this many workers')
    parser.add_argument('--loader-batch', type=int, default=8)
    parser.add_argument('--loader-batches', type=int, default=10)
    parser.add_argument('--loader-root', default='work_dirs/bench_data')
    parser.add_argument('--loader-small', action='store_true',
                        help='small sample pictures (the CPU check)')
    parser.add_argument('--in-process', action='store_true',
                        help='run the variants in this process (default: one child '
                        'process per variant, so peak memory is per variant)')
    parser.add_argument('--json', action='store_true', help='one JSON line per result')
    args = parser.parse_args(argv)
    if args.size == '4b' and args.peak_tflops is None and args.device.startswith('cuda'):
        args.peak_tflops = 989.0
    results = []
    for variant in args.variants:
        if args.in_process or len(args.variants) == 1:
            results.append(run_variant(args, variant))
        else:
            child = [sys.executable, __file__, *_child_argv(argv), '--variants', variant,
                     '--json', '--in-process']
            out = subprocess.run(child, capture_output=True, text=True)
            line = [ln for ln in out.stdout.splitlines() if ln.startswith('{')]
            results.append(json.loads(line[-1]) if out.returncode == 0 and line else
                           dict(variant=variant, error=out.stderr[-2000:]))
        _print(results[-1], args.json)
    if args.loader_workers is not None:
        loader = loader_throughput(args.loader_root, args.loader_workers, args.loader_batch,
                                   args.loader_batches, realistic=not args.loader_small)
        step_rates = [r['samples_per_s'] for r in results if 'samples_per_s' in r]
        loader['keeps_up'] = bool(step_rates) and loader['samples_per_s'] >= max(step_rates)
        results.append(dict(variant='dataloader', **loader))
        _print(results[-1], args.json)
    return results


def _child_argv(argv) -> list:
    """The arguments for one variant's child: without ``--variants`` and its
    values, the loader options (the parent times the loader) and output
    flags."""
    argv = list(sys.argv[1:] if argv is None else argv)
    flags = ('--json', '--in-process', '--loader-small')
    with_value = ('--loader-workers', '--loader-batch', '--loader-batches', '--loader-root')
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a == '--variants':
            i += 1
            while i < len(argv) and not argv[i].startswith('--'):
                i += 1
            continue
        if a in flags:
            i += 1
            continue
        if a in with_value:
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def _print(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result), flush=True)
        return
    print(f"--- {result['variant']}")
    for k, v in result.items():
        if k != 'variant':
            print(f'{k:>24}: {v}')


if __name__ == '__main__':
    os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
    main()
