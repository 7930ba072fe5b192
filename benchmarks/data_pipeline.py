"""Samples per second of every dataset family's pipeline, single process.

    python benchmarks/data_pipeline.py [--root work_dirs/bench_data] [-n 20]

Writes the sample data at realistic sizes (640 x 480 pictures with 5-10
objects, 1280 x 720 videos; ``make_sample_data(realistic=True)``) and the
tiny tokenizer, builds the datasets of ``configs/sa2va_tiny_demo.py`` with
the real sizes (SAM2 input 1024, up to 12 tiles + thumbnail) and times
``dataset[i]`` for each, with tiling and without (one tile), and with
uint8 vs float32 tiles. Also reports the bytes a sample sends from a worker
to the trainer, and, for family 6 in the Sa2VA mix (``mc_sa2va_*``), the
seed's option A (1024 image to the trainer, tile and grid derived by
``Sa2VADataPreprocessor``) against the direct route (uint8 tile made in the
worker), with the preprocessor's batched derivation time on this CPU.
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


def build(root: str, tiles: bool, as_uint8: bool, mc_outputs=None):
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
        ImagesToTensor=dict(as_uint8=as_uint8),
        MaskCaptionOutputs=dict(mc_outputs or {}, sam2_size=1024))
    return leaf_datasets(build_dataset_from_config(cfg))


def time_samples(ds, n: int) -> tuple[float, float]:
    """``(samples/s, MB per sample)`` of ``ds[i]`` for n samples."""
    ds[0]  # warm up: tokenizer, shard index, video headers
    t0 = time.perf_counter()
    nbytes = 0
    for i in range(n):
        nbytes += sample_bytes(ds[i % len(ds)])
    return n / (time.perf_counter() - t0), nbytes / n / 2**20


def option_a_table(root: str, n: int, batch: int = 8) -> None:
    """Family 6 in the Sa2VA mix: option A vs the direct route."""
    from projects.sa2va.datasets.collate import sa2va_collate_fn
    from projects.sa2va.models import Sa2VADataPreprocessor
    print('\n| family-6 dataset | route | samples/s | MB/sample | '
          f'derivation per batch of {batch} (ms) |')
    print('|---|---|---|---|---|')
    pre = Sa2VADataPreprocessor()
    for route, extra in (('option_a', dict(as_uint8=True)),
                         ('option_a', dict(as_uint8=False)),
                         ('direct', dict(as_uint8=True))):
        for ds in build(root, False, True, dict(extra, route=route)):
            if not ds.dataset_name.startswith('mc_sa2va'):
                continue
            rate, mb = time_samples(ds, n)
            samples = [ds[i % len(ds)] for i in range(batch)]
            collated = sa2va_collate_fn(samples)
            pre(collated)
            t0 = time.perf_counter()
            for _ in range(5):
                pre(collated)
            ms = (time.perf_counter() - t0) / 5 * 1e3
            kind = 'uint8' if extra.get('as_uint8') else 'float32'
            print(f'| {ds.dataset_name} | {route}, {kind} | {rate:.1f} | {mb:.1f} | '
                  f'{ms:.0f} (whole preprocessor) |')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--root', default='work_dirs/bench_data')
    parser.add_argument('-n', type=int, default=20,
                        help='samples timed per dataset')
    parser.add_argument('--family6-only', action='store_true',
                        help='only the option A vs direct table')
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

    if args.family6_only:
        return option_a_table(root, args.n)
    rows = {}
    for label, tiles, as_uint8 in [('tiles, uint8', True, True),
                                   ('one tile, uint8', False, True),
                                   ('tiles, float32', True, False)]:
        for ds in build(root, tiles, as_uint8):
            rows.setdefault(ds.dataset_name, {})[label] = time_samples(
                ds, args.n)
    labels = ['tiles, uint8', 'one tile, uint8', 'tiles, float32']
    print('| dataset | ' + ' | '.join(f'{l}: samples/s (MB/sample)'
                                      for l in labels) + ' |')
    print('|---|' + '---|' * len(labels))
    for name, by in rows.items():
        cells = [f'{by[l][0]:.1f} ({by[l][1]:.1f})' for l in labels]
        print(f'| {name} | ' + ' | '.join(cells) + ' |')
    option_a_table(root, args.n)


if __name__ == '__main__':
    main()
