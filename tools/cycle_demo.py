"""`make demo-cycle`: a short mask <-> caption cycle run on the tiny model.

1. writes the sample data and the tiny tokenizer under ``data/sample/``
   (skipped when already there, as ``make demo``);
2. trains ``configs/mask_caption_cycle_tiny.py`` (loop 1 + RefCOCO stream)
   with ``tools/train.py`` into ``--work-dir``, with one extra hook
   (:class:`CycleDemoHook`) that measures the loop-1 losses on a fixed set
   of pseudo samples before the first and after the last iteration (same
   samples, same corruption / Gumbel noise: ``--eval-seed``; the training
   random stream is left untouched);
3. writes ``cycle_metrics.json`` (before / after, per sample and mean) and
   one PNG per sample, ``cycle_sample_<i>.png``: image 1 with the prompt
   mask, the teacher's pseudo caption (and the student's Gumbel caption that
   went into the question), image 2 with the predicted (blue) vs GT (green) mask.

    python tools/cycle_demo.py [--work-dir work_dirs/demo_cycle] [--iters 40]
                               [--samples 4] [--config CONFIG]
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import sys
import textwrap
from typing import Dict, List, Optional

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
for _p in (REPO_ROOT, osp.join(REPO_ROOT, 'tools')):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from mmengine.hooks import Hook  # noqa: E402
from mmengine.model import is_model_wrapper  # noqa: E402

from projects.sa2va.registry import HOOKS  # noqa: E402

CONFIG = osp.join(REPO_ROOT, 'configs', 'mask_caption_cycle_tiny.py')
LOSS_KEYS = ('loss_mask', 'loss_dice', 'loss_seg_llm')


def spread_indices(n_total: int, n: int) -> List[int]:
    """``n`` indices spread evenly over ``range(n_total)`` (first and last
    included when ``n >= 2``); raises when ``n`` is not in ``1..n_total``."""
    if not 1 <= n <= n_total:
        raise ValueError(f'need 1 <= samples <= {n_total}, got {n}')
    if n == 1:
        return [0]
    return [round(i * (n_total - 1) / (n - 1)) for i in range(n)]


def mask_iou(pred, gt) -> float:
    """IoU of two boolean arrays of one shape (1.0 when both are empty)."""
    union = (pred | gt).sum()
    return float((pred & gt).sum() / union) if union else 1.0


@HOOKS.register_module(force=True)
class CycleDemoHook(Hook):
    """Loop-1 losses of fixed pseudo samples before / after training and a
    PNG per sample (see the module docstring).

    Args:
        samples: how many samples of the loop-1 part (the first part of the
            train set's ``MixedDataset``), spread over it.
        eval_seed: seed of the teacher / corruption / Gumbel draws of each
            measurement (the training RNG state is restored afterwards).
        out_dir: where the JSON and PNGs go (default: the work dir).
    """

    priority = 'LOW'

    def __init__(self, samples: int = 4, eval_seed: int = 0,
                 out_dir: Optional[str] = None):
        self.samples = int(samples)
        self.eval_seed = int(eval_seed)
        self.out_dir = out_dir
        self.before: List[Dict] = []
        self.after: List[Dict] = []

    # ----------------------------------------------------------- measuring
    def _pieces(self, runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        from projects.sa2va.datasets.collate import mask_caption_cycle_collate
        pseudo = runner.train_dataloader.dataset.datasets[0]
        items = [pseudo[i] for i in spread_indices(len(pseudo), self.samples)]
        return model, [mask_caption_cycle_collate([s]) for s in items]

    def measure(self, runner) -> List[Dict]:
        """Per sample: losses, IoU of the predicted mask, pseudo / Gumbel
        captions and the arrays the PNG needs."""
        import torch
        import torch.nn.functional as F
        model, batches = self._pieces(runner)
        was_training = model.training
        model.eval()
        out = []
        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                for j, raw in enumerate(batches):
                    torch.manual_seed(self.eval_seed + j)
                    batch = model.data_preprocessor(raw, False)
                    batch = {k: batch[k] for k in batch if k not in ('captions',
                                                                     'dataset_types')}
                    losses, inter = model._loop1_loss(batch)
                    n = int(inter['lengths'][0])
                    tok = model.tokenizer
                    g2 = raw['g_pixel_values2'][0]
                    pred = F.interpolate(inter['pred'][None].float(), size=g2.shape[-2:],
                                         mode='bilinear', align_corners=False)[0, 0] > 0
                    gt = F.interpolate(batch['masks2'][None].float(), size=g2.shape[-2:],
                                       mode='nearest')[0, 0] > 0.5
                    out.append(dict(
                        dataset=raw['dataset_types'][0],
                        **{k: float(losses[k]) for k in LOSS_KEYS},
                        iou=mask_iou(pred.numpy(), gt.numpy()),
                        pseudo_caption=tok.decode(inter['pseudo'][0, :n].tolist()),
                        gumbel_caption=tok.decode(inter['hard_ids'][:n].tolist()),
                        _image1=raw['g_pixel_values1'][0], _prompt=batch['prompt_masks1'][0],
                        _image2=g2, _pred=pred, _gt=gt))
        finally:
            model.train(was_training)
        return out

    def before_train(self, runner) -> None:
        self.before = self.measure(runner)

    def after_train(self, runner) -> None:
        self.after = self.measure(runner)
        out_dir = self.out_dir or runner.work_dir
        os.makedirs(out_dir, exist_ok=True)
        report = summarise(self.before, self.after, runner.iter)
        with open(osp.join(out_dir, 'cycle_metrics.json'), 'w') as f:
            json.dump(report, f, indent=1)
        for i, (b, a) in enumerate(zip(self.before, self.after)):
            draw_sample(b, a, osp.join(out_dir, f'cycle_sample_{i}.png'))


def _public(rec: Dict) -> Dict:
    return {k: v for k, v in rec.items() if not k.startswith('_')}


def summarise(before: List[Dict], after: List[Dict], iters: int) -> Dict:
    """``{'iters', 'before': {mean, samples}, 'after': {...}}`` with the
    mean of every loss key and the IoU over the samples."""
    def block(recs):
        keys = LOSS_KEYS + ('iou',)
        return dict(mean={k: sum(r[k] for r in recs) / len(recs) for k in keys},
                    samples=[_public(r) for r in recs])
    return dict(iters=int(iters), before=block(before), after=block(after))


def draw_sample(before: Dict, after: Dict, path: str) -> None:
    """One PNG: image 1 + prompt mask (cyan) | captions | image 2 + predicted (blue)
    vs GT (green) mask after training (losses before -> after in titles)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np
    import torch.nn.functional as F

    img1 = after['_image1'].permute(1, 2, 0).numpy()
    prompt = F.interpolate(after['_prompt'][None, None].float(), size=img1.shape[:2],
                           mode='nearest')[0, 0].numpy() > 0
    over1 = img1.astype(np.float32)
    over1[prompt] = 0.45 * over1[prompt] + 0.55 * np.array([40, 200, 255])
    img2 = after['_image2'].permute(1, 2, 0).numpy().astype(np.float32)
    pred, gt = after['_pred'].numpy(), after['_gt'].numpy()
    over2 = img2.copy()
    over2[gt & ~pred] = 0.5 * over2[gt & ~pred] + 0.5 * np.array([40, 220, 40])
    over2[pred & ~gt] = 0.5 * over2[pred & ~gt] + 0.5 * np.array([60, 60, 255])
    over2[pred & gt] = 0.5 * over2[pred & gt] + 0.5 * np.array([250, 220, 40])

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.4),
                             gridspec_kw=dict(width_ratios=[1, 1.2, 1]))
    axes[0].imshow(over1.clip(0, 255).astype(np.uint8))
    axes[0].set_title(f'image 1 + prompt mask (K = {int(after["_prompt"].sum())} cells)',
                      fontsize=9)
    text = ('teacher pseudo caption:\n' + textwrap.fill(after['pseudo_caption'] or '(empty)', 48)
            + '\n\nstudent Gumbel caption (into the question):\n'
            + textwrap.fill(after['gumbel_caption'] or '(empty)', 48))
    axes[1].text(0.0, 1.0, text, va='top', ha='left', fontsize=8, family='monospace',
                 wrap=True)
    axes[1].set_title(f'{after["dataset"]}', fontsize=9)
    axes[2].imshow(over2.clip(0, 255).astype(np.uint8))
    axes[2].set_title(
        f'image 2: pred blue, GT green, both yellow\nBCE {before["loss_mask"]:.3f} -> '
        f'{after["loss_mask"]:.3f}  Dice {before["loss_dice"]:.3f} -> '
        f'{after["loss_dice"]:.3f}  IoU {after["iou"]:.2f}', fontsize=8)
    for ax in axes:
        ax.axis('off')
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def saved_activation_bytes(model, batch: Dict) -> Dict[str, int]:
    """One loop-1 forward of ``model`` (train mode, grad on) on a
    preprocessed ``batch``; returns ``{'bytes': B_saved, 'tokens': N}``:
    the bytes of the distinct tensor storages autograd keeps for the backward
    (parameters and buffers excluded, i.e. the activation memory at the peak
    just before ``backward()``) and N = the caption tokens of the batch."""
    import torch
    own = {t.untyped_storage().data_ptr() for t in
           list(model.parameters()) + list(model.buffers())}
    seen: Dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in own:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _, inter = model._loop1_loss(batch)
    return dict(bytes=sum(seen.values()), tokens=int(inter['lengths'].sum()))


def memory_sweep(config: str, caption_lens: List[int], batch_size: int = 2,
                 seed: int = 0) -> List[Dict]:
    """Saved-activation bytes of one loop-1 step of the model of ``config``
    for each T in ``caption_lens`` (same ``batch_size`` pseudo samples, same
    seed); rows ``{T, tokens, bytes, bytes_per_token}`` where
    ``bytes_per_token`` is the increase over the previous row divided by the
    added caption tokens (None for the first row)."""
    import torch
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from projects.sa2va.datasets.collate import mask_caption_cycle_collate
    from projects.sa2va.registry import DATASETS, MODELS
    cfg = Config.fromfile(config)
    rows: List[Dict] = []
    with DefaultScope.overwrite_default_scope('sa2va'):
        torch.manual_seed(seed)
        model = MODELS.build(cfg.model)
        model.train()
        pseudo = DATASETS.build(cfg.train_dataloader.dataset.datasets[0])
        raw = mask_caption_cycle_collate(
            [pseudo[i] for i in spread_indices(len(pseudo), batch_size)])
        batch = model.data_preprocessor(raw, True)
        batch = {k: v for k, v in batch.items() if k not in ('captions', 'dataset_types')}
        for t in caption_lens:
            model.caption_len = int(t)
            torch.manual_seed(seed)
            got = saved_activation_bytes(model, batch)
            prev = rows[-1] if rows else None
            per = (None if prev is None or got['tokens'] == prev['tokens'] else
                   (got['bytes'] - prev['bytes']) / (got['tokens'] - prev['tokens']))
            rows.append(dict(T=int(t), tokens=got['tokens'], bytes=got['bytes'],
                             bytes_per_token=per))
    return rows


def write_config(base: str, work_dir: str, samples: int, eval_seed: int) -> str:
    """A config file in ``work_dir`` inheriting ``base`` with
    :class:`CycleDemoHook` appended to its ``custom_hooks``."""
    from mmengine.config import Config
    hooks = list(Config.fromfile(base).get('custom_hooks', []))
    hooks.append(dict(type='CycleDemoHook', samples=samples, eval_seed=eval_seed))
    os.makedirs(work_dir, exist_ok=True)
    path = osp.join(work_dir, 'cycle_demo_config.py')
    with open(path, 'w') as f:
        f.write(f'_base_ = [{osp.abspath(base)!r}]\n'
                f'custom_hooks = {[dict(h) for h in hooks]!r}\n')
    return path


def main(argv=None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', default=CONFIG,
                        help='cycle config (default the tiny one)')
    parser.add_argument('--work-dir', default='work_dirs/demo_cycle',
                        help='output folder (default work_dirs/demo_cycle)')
    parser.add_argument('--iters', type=int, default=40,
                        help='training iterations (default 40)')
    parser.add_argument('--samples', type=int, default=4,
                        help='fixed samples scored before / after (default 4)')
    parser.add_argument('--eval-seed', type=int, default=0,
                        help='seed of the evaluation draws (default 0)')
    parser.add_argument('--memory', default=None, metavar='T1,T2,...',
                        help='instead of training: saved-activation bytes of one '
                        'loop-1 step for each caption length T (batch of 2)')
    args = parser.parse_args(argv)
    if args.memory:
        from demo import ensure_sample_data
        ensure_sample_data('data/sample')
        rows = memory_sweep(args.config, [int(t) for t in args.memory.split(',')])
        print('T\tcaption tokens\tsaved activations (MiB)\tbytes per added token')
        for r in rows:
            per = '-' if r['bytes_per_token'] is None else f'{r["bytes_per_token"]:.0f}'
            print(f'{r["T"]}\t{r["tokens"]}\t{r["bytes"] / 2**20:.2f}\t{per}')
        return dict(memory=rows)
    from demo import ensure_sample_data
    import train
    ensure_sample_data('data/sample')
    cfg_path = write_config(args.config, args.work_dir, args.samples, args.eval_seed)
    train.main([cfg_path, '--work-dir', args.work_dir, '--cfg-options',
                f'train_cfg.max_iters={args.iters}',
                f'default_hooks.checkpoint.interval={args.iters}'])
    with open(osp.join(args.work_dir, 'cycle_metrics.json')) as f:
        report = json.load(f)
    print(f'\nloop-1 losses on {args.samples} fixed pseudo samples, before -> after '
          f'{report["iters"]} iterations:')
    for k in LOSS_KEYS + ('iou',):
        print(f'  {k:13s} {report["before"]["mean"][k]:.4f} -> '
              f'{report["after"]["mean"][k]:.4f}')
    print(f'PNGs: {osp.join(args.work_dir, "cycle_sample_*.png")}')
    return report


if __name__ == '__main__':
    main()
