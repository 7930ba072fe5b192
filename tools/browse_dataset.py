"""Write pictures of processed samples of every dataset of a config.

    python tools/browse_dataset.py CONFIG --out DIR [-n N] [--cfg-options ...]

For each dataset of the training mix, N samples go through the pipeline
and are drawn: the prompted tile with the 16 x 16 prompt-mask grid, the
SAM2 input with the GT masks, and the decoded conversation with the image
blocks collapsed. Files: DIR/<dataset>_<index>.png.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


def main(argv=None) -> int:
    from mmengine.config import Config, DictAction
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('--out', required=True)
    parser.add_argument('-n', type=int, default=2, help='samples per dataset')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
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
    print(f'{written} pictures in {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
