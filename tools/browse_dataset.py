"""Write pictures of processed samples of every dataset of a config.

    python tools/browse_dataset.py CONFIG --out DIR [-n N] [--cfg-options ...]

For each dataset of the training mix, N samples go through the pipeline
and are drawn: the prompted tile with the 16 x 16 prompt-mask grid, the
SAM2 input with the GT masks (contours, one colour per object), and the
decoded conversation with the image blocks collapsed. Files:
DIR/<dataset>_<index>.png, and for samples with target masks
DIR/<dataset>_<index>_objects.png (one panel per object, titled with its
expression; frame 0 of a video).
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


def draw_objects(sample: dict, encoder, path: str, title: str):
    """One panel per target object of a grounding sample (frame 0 of a
    video), titled with its expression; the path, or None without masks."""
    from projects.sa2va.visualization import save_object_panels, seg_phrases
    g, masks = sample.get('g_pixel_values'), sample.get('masks')
    if g is None or masks is None or not len(masks):
        return None
    n_frames = g.shape[0] if g.ndim == 4 else 1
    frame = g[0] if g.ndim == 4 else g
    first = masks.reshape(-1, n_frames, *masks.shape[-2:])[:, 0]
    text = encoder.decode(sample['input_ids']) if encoder else ''
    save_object_panels(frame.permute(1, 2, 0).numpy(), first.numpy(), path,
                       labels=seg_phrases(text, len(first)), title=title)
    return path


def main(argv=None) -> int:
    from mmengine.config import Config, DictAction
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        epilog='Example: python tools/browse_dataset.py '
               'configs/sa2va_tiny_demo.py --out work_dirs/browse -n 2')
    parser.add_argument('config', help='training config (its '
                        'train_dataloader.dataset is drawn)')
    parser.add_argument('--out', required=True, help='folder for the PNGs')
    parser.add_argument('-n', type=int, default=2,
                        help='samples per dataset (default 2)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    args = parser.parse_args(argv)

    import projects.sa2va  # noqa: F401
    from projects.sa2va.datasets.inspect import (build_dataset_from_config,
                                                 find_encoder, leaf_datasets,
                                                 render_sample)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    dataset = build_dataset_from_config(cfg)
    os.makedirs(args.out, exist_ok=True)
    written = 0
    for ds in leaf_datasets(dataset):
        name = getattr(ds, 'dataset_name', type(ds).__name__)
        encoder = find_encoder(ds)
        for idx in range(min(args.n, len(ds))):
            sample = ds[idx]
            path = osp.join(args.out, f'{name}_{idx}.png')
            render_sample(sample, encoder, path, title=f'{name}[{idx}]')
            written += 1
            print(path)
            objects = draw_objects(sample, encoder, osp.join(
                args.out, f'{name}_{idx}_objects.png'), f'{name}[{idx}]')
            if objects:
                written += 1
                print(objects)
    print(f'{written} pictures in {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
