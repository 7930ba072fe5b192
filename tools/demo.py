"""`make demo`: the main job on the embedded default data.

Today (before the Sa2VA model lands) this runs the data side end to end:
it writes a small LLaVA-format data set and the tiny tokenizer, trains the
wiring config (real data pipeline, collate, sampler, data preprocessor,
runner, checkpoints) with a toy model for a few iterations, and prints one
encoded sample with its image blocks collapsed.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--data-root', default='data/smoke')
    args = parser.parse_args(argv)

    from tests.smoke_data import write_smoke_data
    write_smoke_data(args.data_root)

    sys.path.insert(0, osp.join(REPO_ROOT, 'tools'))
    import train
    config = osp.join(REPO_ROOT, 'tests', 'configs', 'smoke_train.py')
    runner = train.main([config, '--work-dir', args.work_dir])

    dataset = runner.train_dataloader.dataset
    encoder = dataset.pipeline.transforms[3].encoder
    sample = dataset[1]
    print('\nOne encoded sample (image blocks collapsed):')
    print(encoder.decode(sample['input_ids']))
    print(f'pixel_values: {tuple(sample["pixel_values"].shape)} '
          f'{sample["pixel_values"].dtype}')
    print(f'\nLogs and checkpoints: {args.work_dir}')


if __name__ == '__main__':
    main()
