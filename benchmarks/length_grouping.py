"""Padding with and without length grouping, on the sample data.

    python benchmarks/length_grouping.py [--root data/sample] [--scale 4]

Builds the tiny demo mix (every family) over sample data written with
``--scale`` (more records per file), runs every sample through its
pipeline once to get its real token count, and compares, for batches of
``--batch`` (Sa2VA groups over batch 2 x accumulation 4 = 8):

* the padding fraction of batches (padded tokens / all tokens) with the
  length-grouped sampler and with a plain shuffle, over several seeds;
* how well ``modality_length`` (estimated from the annotation when the index
  is built) predicts the real length (Spearman rank correlation).
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

import numpy as np

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)


def padding_fraction(order: np.ndarray, lengths: np.ndarray,
                     batch: int) -> float:
    n = len(order) // batch * batch
    lens = lengths[order[:n]].reshape(-1, batch)
    return float(1 - lens.sum() / (lens.max(1) * batch).sum())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--root', default='work_dirs/bench_grouping_data')
    parser.add_argument('--scale', type=int, default=4)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--seeds', type=int, default=10)
    args = parser.parse_args(argv)

    from mmengine.config import Config

    from projects.sa2va.datasets import LengthGroupedSampler
    from projects.sa2va.datasets.inspect import build_dataset_from_config
    from projects.sa2va.sample_data import make_sample_data
    from projects.sa2va.tokenization import build_tiny_tokenizer
    root = osp.abspath(args.root)
    if not osp.exists(osp.join(root, 'manifest.json')):
        make_sample_data(root, scale=args.scale)
    if not osp.exists(osp.join(root, 'tokenizer')):
        build_tiny_tokenizer(osp.join(root, 'tokenizer'))
    cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs',
                                   'sa2va_tiny_demo.py'))
    ds_cfg = cfg.train_dataloader.dataset
    ds_cfg.data_root_prefix = ('./data/', root + '/')
    text = dict(tokenizer=osp.join(root, 'tokenizer'), template='phi3_chat',
                max_length=16384)
    ds_cfg.pipeline_defaults = dict(
        EncodeConversation=text, EncodeLLaVAConversation=text,
        SAM2Input=dict(size=64))
    ds_cfg.pipeline_overrides = dict(DynamicTiles=dict(max_num=12))
    mix = build_dataset_from_config(cfg)
    estimate = np.abs(mix.modality_length).astype(np.int64)
    real = np.array([len(mix[i]['input_ids']) for i in range(len(mix))])

    def ranks(x):
        return np.argsort(np.argsort(x, kind='stable'), kind='stable')

    rho = np.corrcoef(ranks(estimate), ranks(real))[0, 1]
    grouped, plain = [], []
    for seed in range(args.seeds):
        for group, out in ((True, grouped), (False, plain)):
            sampler = LengthGroupedSampler(mix, args.batch, seed=seed,
                                           group_by_length=group)
            out.append(padding_fraction(np.array(list(sampler)), real,
                                        args.batch))
    print(f'samples: {len(mix)} from {len(mix.datasets)} datasets; real '
          f'lengths {real.min()}..{real.max()} tokens (median '
          f'{int(np.median(real))})')
    print(f'estimate vs real length: Spearman rho = {rho:.3f}')
    print(f'padding fraction, batch {args.batch}, {args.seeds} seeds: '
          f'grouped {np.mean(grouped):.3f} +- {np.std(grouped):.3f}, '
          f'plain shuffle {np.mean(plain):.3f} +- {np.std(plain):.3f}')


if __name__ == '__main__':
    main()
