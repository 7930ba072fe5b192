"""Check every dataset of a config before a long run.

    python tools/check_data.py CONFIG [--limit N] [--cfg-options ...]

Builds the training dataset of the config (every family in the mix), runs
each record through its pipeline and reports per dataset: records, records
checked, records that make a sample, and the problems by reason (missing
files, undecodable masks, empty masks, samples over max_length, ...), with
the first offending records named. Exits 1 if any record is bad or a
dataset cannot be built.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


def main(argv=None) -> int:
    from mmengine.config import Config, DictAction
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('--limit', type=int, default=None,
                        help='check at most N records per dataset')
    parser.add_argument('--examples', type=int, default=5,
                        help='offending records named per dataset')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args(argv)

    import projects.sa2va  # noqa: F401
    from projects.sa2va.datasets.inspect import (build_dataset_from_config,
                                                 check_dataset, leaf_datasets)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    try:
        dataset = build_dataset_from_config(cfg)
    except Exception as exc:  # report what a user must fix, then fail
        print(f'ERROR: cannot build the training dataset: '
              f'{type(exc).__name__}: {exc}')
        return 1
    failed = False
    header = f'{"dataset":36s} {"records":>8s} {"checked":>8s} {"ok":>8s}  problems'
    print(header)
    print('-' * len(header))
    reports = [check_dataset(d, args.limit, args.examples)
               for d in leaf_datasets(dataset)]
    for r in reports:
        problems = ', '.join(f'{k}={v}' for k, v in sorted(r.problems.items()))
        print(f'{r.name:36s} {r.records:8d} {r.checked:8d} {r.ok:8d}  '
              f'{problems or "-"}')
    for r in reports:
        # counters per sample: e.g. prompt_k0_1 (regions that vanish on the
        # 16 x 16 grid), prompt_mask_repaired, turns_dropped
        counts = {k: v for k, v in sorted(r.stats.items()) if k != 'samples'}
        if counts:
            print(f'\n{r.name}: ' + ', '.join(
                f'{k}={v} ({v / max(r.ok, 1):.1%} of samples)'
                for k, v in counts.items()))
        if r.errors:
            failed = True
            print(f'\n{r.name}: first bad records:')
            for line in r.examples:
                print(f'  {line}')
    total = sum(r.errors for r in reports)
    print(f'\n{"FAILED" if failed else "OK"}: {len(reports)} datasets, '
          f'{sum(r.checked for r in reports)} records checked, {total} bad')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
