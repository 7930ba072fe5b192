"""Index memory and sample throughput of the mask <-> caption datasets.

    python benchmarks/mask_caption_index.py --rows 1000000 --images 10000

Writes a sample set of the family (``--realistic``: 640 x 480 pictures),
a ``--rows``-row OpenImage segmentation CSV and a ``--images``-image SA-1B
tree (both cycling over the sample records, ``sample_data/large.py``), then
reports for each:

* index build time, index bytes per sample (``index_nbytes() / len``), the
  RSS growth of the build, and what one pickled record would cost instead
  (the serialized-list index of the other families);
* samples/s of the full pipeline (``prepare_data``: load, decode, 448 /
  1024 resizes, grid) for every dataset of the family, one process.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import pickle
import sys
import tempfile
import time

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)


def _rss() -> int:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def _build(cfg: dict, root: str):
    import projects.sa2va.datasets  # noqa: F401
    from projects.sa2va.datasets.mixing import apply_pipeline_defaults
    from projects.sa2va.registry import DATASETS
    cfg = dict(cfg)
    if 'index_cache_dir' in cfg:
        cfg['index_cache_dir'] = None
    return DATASETS.build(apply_pipeline_defaults(
        cfg, data_root=('./data/', root.rstrip('/') + '/')))


def index_report(name: str, cfg: dict, root: str) -> dict:
    rss0, t0 = _rss(), time.perf_counter()
    ds = _build(cfg, root)
    seconds = time.perf_counter() - t0
    n = len(ds)
    return dict(name=name, samples=n, build_s=seconds,
                index_bytes_per_sample=ds.index_nbytes() / n,
                rss_growth_per_sample=(_rss() - rss0) / n,
                pickled_record_bytes=len(pickle.dumps(ds.get_data_info(0),
                                                      protocol=4)))


def throughput(name: str, cfg: dict, root: str, n: int) -> dict:
    from projects.sa2va.transforms.base import RecordError
    ds = _build(cfg, root)
    ok = bad = 0
    t0 = time.perf_counter()
    for i in range(min(n, len(ds))):
        try:
            ds.prepare_data(i)
            ok += 1
        except RecordError:
            bad += 1
    seconds = time.perf_counter() - t0
    return dict(name=name, samples=ok, bad=bad,
                samples_per_s=(ok + bad) / seconds)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--rows', type=int, default=1_000_000)
    parser.add_argument('--images', type=int, default=10_000)
    parser.add_argument('--samples', type=int, default=40,
                        help='samples per dataset for samples/s')
    parser.add_argument('--realistic', action='store_true')
    parser.add_argument('--out', default=None,
                        help='folder for the generated data (default: temp)')
    args = parser.parse_args(argv)

    import torch
    from mmengine.config import Config

    from projects.sa2va.sample_data.api import make_sample_data
    from projects.sa2va.sample_data.large import (write_large_openimage_csv,
                                                  write_large_sa1b)
    torch.set_num_threads(1)
    out = args.out or tempfile.mkdtemp(prefix='mc_bench_')
    t0 = time.perf_counter()
    make_sample_data(out, families=['mask_caption'],
                     realistic=args.realistic)
    csv_path = write_large_openimage_csv(out, args.rows)
    sa1b_root = write_large_sa1b(out, args.images)
    print(f'data written to {out} in {time.perf_counter() - t0:.1f} s')

    cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs', '_base_',
                                   'datasets', 'mask_caption.py'))
    big_oi = dict(cfg.mc_openimage.to_dict(), ann_file=osp.basename(csv_path))
    big_sa1b = dict(cfg.mc_sa1b.to_dict(), data_root=str(sa1b_root))
    print(f'\n{"index":28s} {"samples":>9s} {"build s":>8s} '
          f'{"B/sample":>9s} {"RSS B/sample":>13s} {"pickled rec B":>14s}')
    for name, c in ((f'openimage {args.rows} rows', big_oi),
                    (f'sa1b {args.images} images', big_sa1b)):
        r = index_report(name, c, out)
        print(f'{r["name"]:28s} {r["samples"]:9d} {r["build_s"]:8.2f} '
              f'{r["index_bytes_per_sample"]:9.2f} '
              f'{r["rss_growth_per_sample"]:13.2f} '
              f'{r["pickled_record_bytes"]:14d}')

    print(f'\n{"pipeline":28s} {"ok":>5s} {"bad":>5s} {"samples/s":>10s}')
    for name in ('mc_sav_npz', 'mc_sav_release', 'mc_sa1b', 'mc_openimage',
                 'mc_refcoco_caption', 'mc_describe_anything'):
        r = throughput(name, cfg[name].to_dict(), out, args.samples)
        print(f'{name:28s} {r["samples"]:5d} {r["bad"]:5d} '
              f'{r["samples_per_s"]:10.1f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
