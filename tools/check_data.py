"""Check every dataset of a config before a long run, in one pass.

    python tools/check_data.py CONFIG [--workers N] [--files-only]
        [--limit N] [--examples K] [--quiet] [--cfg-options ...]

Builds each dataset of the training mix on its own (one that cannot be
built, e.g. a missing or malformed annotation file, is reported and the
others are still checked), runs each record through its pipeline and
reports per dataset: records, records checked, records that make a sample,
and the problems by reason (missing files, undecodable or empty masks,
samples over max_length, record errors found when the index was built,
unexpected exceptions), naming the first offending records. Progress goes
to stderr. --files-only checks only that the files each record names exist
(no decoding). Exits 1 if any dataset cannot be built or any record is bad.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


def parse_args(argv=None) -> argparse.Namespace:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        epilog='Example: python tools/check_data.py configs/sa2va_4b.py '
               '--workers 8 --files-only')
    parser.add_argument('config', help='training config (its '
                        'train_dataloader.dataset is checked)')
    parser.add_argument('--limit', type=int, default=None,
                        help='check at most N records per dataset')
    parser.add_argument('--examples', type=int, default=5,
                        help='offending records named per dataset (default 5)')
    parser.add_argument('--workers', type=int, default=0,
                        help='worker processes (default 0: this process)')
    parser.add_argument('--files-only', action='store_true',
                        help='only check that the files each record names '
                             'exist (fast; no decoding)')
    parser.add_argument('--quiet', action='store_true',
                        help='no progress lines on stderr')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    from mmengine.config import Config
    args = parse_args(argv)

    import projects.sa2va  # noqa: F401
    from mmengine.registry import init_default_scope

    from projects.sa2va.datasets.check import build_leaves, check_leaves
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'sa2va'))
    if 'train_dataloader' not in cfg:
        print(f'ERROR: {args.config} has no train_dataloader')
        return 1
    try:
        leaves = build_leaves(cfg.train_dataloader.dataset)
    except Exception as exc:  # the mix itself is malformed
        print(f'ERROR: cannot read the training mix: '
              f'{type(exc).__name__}: {exc}')
        return 1
    reports = check_leaves(leaves, args.limit, args.examples, args.workers,
                           args.files_only,
                           progress=None if args.quiet else sys.stderr)
    mode = 'files only' if args.files_only else 'full pipeline'
    header = (f'{"dataset":36s} {"records":>8s} {"checked":>8s} {"ok":>8s}  '
              f'problems ({mode})')
    print(header)
    print('-' * len(header))
    by_name = {r.name: r for r in reports}
    for leaf in leaves:
        if leaf.error is not None:
            print(f'{leaf.name:36s} {"-":>8s} {"-":>8s} {"-":>8s}  '
                  f'CANNOT BUILD')
            continue
        r = by_name[leaf.name]
        problems = ', '.join(f'{k}={v}' for k, v in sorted(r.problems.items()))
        print(f'{r.name:36s} {r.records:8d} {r.checked:8d} {r.ok:8d}  '
              f'{problems or "-"}')
    broken = [leaf for leaf in leaves if leaf.error is not None]
    for leaf in broken:
        print(f'\n{leaf.name}: cannot build: {leaf.error}')
    for r in reports:
        # counters per sample: e.g. prompt_k0_1 (regions that vanish on the
        # 16 x 16 grid), prompt_mask_repaired, turns_dropped
        counts = {k: v for k, v in sorted(r.stats.items()) if k != 'samples'}
        if counts:
            print(f'\n{r.name}: ' + ', '.join(
                f'{k}={v} ({v / max(r.ok, 1):.1%} of samples)'
                for k, v in counts.items()))
        if r.errors:
            print(f'\n{r.name}: first bad records:')
            for line in r.examples:
                print(f'  {line}')
    total = sum(r.errors for r in reports)
    failed = bool(total or broken)
    print(f'\n{"FAILED" if failed else "OK"}: {len(leaves)} datasets'
          + (f' ({len(broken)} cannot be built)' if broken else '')
          + f', {sum(r.checked for r in reports)} records checked, '
          f'{total} bad')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
