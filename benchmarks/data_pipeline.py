"""Samples per second of every dataset family's pipeline, single process.

    python benchmarks/data_pipeline.py [--root work_dirs/bench_data] [-n 20]

Writes the sample data at realistic sizes (640 x 480 pictures with 5-10
objects, 1280 x 720 videos; ``make_sample_data(realistic=True)``) and the
tiny tokenizer, builds the datasets of ``configs/sa2va_tiny_demo.py`` with
the real sizes (SAM2 input 1024, up to 12 tiles + thumbnail) and times
``dataset[i]`` for each, with tiling and without (one tile), and with
uint8 vs float32 tiles. Also reports the bytes a sample sends from a worker
to the trainer.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys
import time

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)


def sample_bytes(sample: dict) -> int:
    import torch
    total = 0
    for v in sample.values():
        if isinstance(v, torch.Tensor):
            total += v.numel() * v.element_size()
        elif isinstance(v, list) and v and isinstance(v[0], int):
            total += 8 * len(v)
    return total


def build(root: str, tiles: bool, as_uint8: bool):
    from mmengine.config import Config

    from projects.sa2va.datasets.inspect import (build_dataset_from_config,
                                                 leaf_datasets)
    cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs',
                                   'sa2va_tiny_demo.py'))
    ds_cfg = cfg.train_dataloader.dataset
    ds_cfg.data_root_prefix = ('./data/', root.rstrip('/') + '/')
    text = dict(tokenizer=osp.join(root, 'tokenizer'), template='phi3_chat',
                max_length=16384)
    ds_cfg.pipeline_defaults = dict(EncodeConversation=text,
                                    EncodeLLaVAConversation=text)
    ds_cfg.pipeline_overrides = dict(
        DynamicTiles=dict(max_num=12) if tiles else dict(enabled=False),
        ImagesToTensor=dict(as_uint8=as_uint8))
    return leaf_datasets(build_dataset_from_config(cfg))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--root', default='work_dirs/bench_data')
    parser.add_argument('-n', type=int, default=20,
                        help='samples timed per dataset')
    args = parser.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    from projects.sa2va.sample_data import make_sample_data
    from projects.sa2va.tokenization import build_tiny_tokenizer
    root = osp.abspath(args.root)
    if not osp.exists(osp.join(root, 'manifest.json')):
        make_sample_data(root, realistic=True)
    if not osp.exists(osp.join(root, 'tokenizer')):
        build_tiny_tokenizer(osp.join(root, 'tokenizer'))

    rows = {}
    for label, tiles, as_uint8 in [('tiles, uint8', True, True),
                                   ('one tile, uint8', False, True),
                                   ('tiles, float32', True, False)]:
        for ds in build(root, tiles, as_uint8):
            name = ds.dataset_name
            ds[0]  # warm up: tokenizer, shard index, video headers
            t0 = time.perf_counter()
            nbytes = 0
            for i in range(args.n):
                nbytes += sample_bytes(ds[i % len(ds)])
            dt = time.perf_counter() - t0
            rows.setdefault(name, {})[label] = (args.n / dt,
                                                nbytes / args.n / 2**20)
    labels = ['tiles, uint8', 'one tile, uint8', 'tiles, float32']
    print('| dataset | ' + ' | '.join(f'{l}: samples/s (MB/sample)'
                                      for l in labels) + ' |')
    print('|---|' + '---|' * len(labels))
    for name, by in rows.items():
        cells = [f'{by[l][0]:.1f} ({by[l][1]:.1f})' for l in labels]
        print(f'| {name} | ' + ' | '.join(cells) + ' |')


if __name__ == '__main__':
    main()
