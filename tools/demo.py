"""`make demo`: the main job on the embedded default.

1. writes the sample data of every family in the real on-disk formats
   (``tools/make_sample_data.py``) and the tiny tokenizer under
   ``data/sample/`` (skipped when already there);
2. trains ``configs/sa2va_tiny_demo.py``: a tiny InternVL + tiny SAM2 Sa2VA
   model with LoRA on the whole data mix, on CPU, into ``work_dirs/demo``;
3. draws the loss curves (``loss_curves.png``) and, for a few grounding
   samples, the predicted masks next to the ground truth
   (``masks_<dataset>.png``) in the run's directory.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import os.path as osp
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

CONFIG = osp.join(REPO_ROOT, 'configs', 'sa2va_tiny_demo.py')
LOSS_KEYS = ('loss', 'loss_llm', 'loss_mask', 'loss_dice')


def ensure_sample_data(root: str) -> None:
    from projects.sa2va.sample_data import make_sample_data
    from projects.sa2va.tokenization import build_tiny_tokenizer
    if not osp.exists(osp.join(root, 'manifest.json')):
        print(f'writing sample data to {root}')
        make_sample_data(root)
    if not osp.exists(osp.join(root, 'tokenizer', 'tokenizer.json')):
        build_tiny_tokenizer(osp.join(root, 'tokenizer'))


def read_losses(work_dir: str) -> dict[str, list[tuple[int, float]]]:
    """Logged (window-averaged) losses of the newest run in ``work_dir``."""
    paths = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data',
                                      'scalars.json')))
    if not paths:
        raise FileNotFoundError(f'no scalars.json under {work_dir}')
    curves: dict[str, list] = {k: [] for k in LOSS_KEYS}
    with open(paths[-1]) as f:
        for line in f:
            rec = json.loads(line)
            for k in LOSS_KEYS:
                if k in rec:
                    curves[k].append((rec['step'], rec[k]))
    return curves


def plot_losses(curves: dict, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(LOSS_KEYS), figsize=(4 * len(LOSS_KEYS),
                                                         3.2))
    for ax, key in zip(axes, LOSS_KEYS):
        steps, values = zip(*curves[key]) if curves[key] else ((), ())
        ax.plot(steps, values, marker='.')
        ax.set_title(key)
        ax.set_xlabel('iteration')
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def draw_predictions(runner, out_dir: str,
                     names=('refcoco', 'gcg_grandf', 'revos',
                            'mc_sa2va_dam_segment')) -> list[str]:
    """Predicted vs GT masks (teacher-forced [SEG]) for one sample of each
    named dataset, first frame for videos: a panel with every object, then
    one per object with its expression and IoU
    (``projects/sa2va/visualization.py``); returns the files written."""
    import torch

    from projects.sa2va.datasets import sa2va_collate_fn
    from projects.sa2va.datasets.inspect import find_encoder, leaf_datasets
    from projects.sa2va.visualization import save_object_panels, seg_phrases
    model = runner.model
    model.eval()
    pad = runner.cfg.train_dataloader.collate_fn.get('pad_index', 0)
    written = []
    for ds in leaf_datasets(runner.train_dataloader.dataset):
        if ds.dataset_name not in names:
            continue
        sample = ds[0]
        batch = model.data_preprocessor(
            sa2va_collate_fn([sample], pad_index=pad), False)
        with torch.no_grad():
            pred = model(**batch, mode='predict')[0]['pred_masks']
        g = sample['g_pixel_values']
        frames = g[None] if g.ndim == 3 else g
        n_obj, n_frames = pred.shape[:2]
        gt = sample['masks'].reshape(n_obj, n_frames, *sample['masks']
                                     .shape[-2:])[:, 0]
        encoder = find_encoder(ds)
        text = encoder.decode(sample['input_ids']) if encoder else ''
        path = osp.join(out_dir, f'masks_{ds.dataset_name}.png')
        ious = save_object_panels(
            frames[0].permute(1, 2, 0).numpy(), pred[:, 0].cpu().numpy(),
            path, labels=seg_phrases(text, n_obj), reference=gt.numpy(),
            title=f'{ds.dataset_name}: predicted (colour) vs ground truth '
                  f'(white)' + (', frame 0' if n_frames > 1 else ''))
        print(f'{ds.dataset_name}: IoU per object '
              + ' '.join(f'{v:.2f}' for v in ious))
        written.append(path)
    return written


def iters_options(iters: int) -> list[str]:
    """``--cfg-options`` for a run of ``iters`` iterations. The schedule
    (``WarmupDecayLR``: 5 % warm-up, cosine to the last iteration) takes its
    length from ``max_iters`` when the runner builds it; the logger interval
    is kept within the run."""
    if iters < 2:
        raise ValueError(f'--iters must be >= 2 (warm-up + decay), got {iters}')
    return [f'train_cfg.max_iters={iters}',
            f'default_hooks.logger.interval={min(5, iters)}']


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--work-dir', default='work_dirs/demo',
                        help='run folder (default work_dirs/demo)')
    parser.add_argument('--iters', type=int, default=None,
                        help='training iterations (default: the config)')
    args = parser.parse_args(argv)
    # the config reads data/sample/ (relative to the working directory)
    ensure_sample_data('data/sample')

    sys.path.insert(0, osp.join(REPO_ROOT, 'tools'))
    import train
    cli = [CONFIG, '--work-dir', args.work_dir]
    if args.iters:
        cli += ['--cfg-options', *iters_options(args.iters)]
    runner = train.main(cli)

    curves = read_losses(args.work_dir)
    os.makedirs(args.work_dir, exist_ok=True)
    plot = osp.join(args.work_dir, 'loss_curves.png')
    plot_losses(curves, plot)
    pictures = draw_predictions(runner, args.work_dir)
    print('\nLosses (window averages), first -> last logged:')
    for key in LOSS_KEYS:
        if curves[key]:
            (s0, v0), (s1, v1) = curves[key][0], curves[key][-1]
            print(f'  {key:10s} iter {s0}: {v0:.3f} -> iter {s1}: {v1:.3f}')
    print(f'\nloss curves: {plot}')
    for p in pictures:
        print(f'masks: {p}')
    print(f'checkpoints and logs: {args.work_dir}')


if __name__ == '__main__':
    main()
