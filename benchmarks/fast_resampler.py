"""The opt-in torch resampler against the seed's PIL rule: speed and
difference.

    python benchmarks/fast_resampler.py [--images 8] [--repeats 5]

On the photo-like 640 x 480 JPEGs of ``data_path_vs_v1.py`` (and the same
pictures upscaled to 2560 x 1920, where every resize shrinks), one torch
thread, times ``resize_image(..., 'pil')`` and ``resize_image(...,
'torch')`` at the data path's three sizes (the 4 x 3 tile grid 1792 x 1344,
the 448 thumbnail / tile, the 1024 SAM2 input) and reports the time per
resize (best of ``--repeats``, median over the pictures), the speed-up and the absolute difference in grey levels (max,
mean, share of values that differ) over all pictures.
"""
from __future__ import annotations

import argparse
import json
import os.path as osp
import statistics
import sys
import time

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
for p in (REPO_ROOT, osp.join(REPO_ROOT, 'benchmarks')):
    if p not in sys.path:
        sys.path.insert(0, p)

import numpy as np  # noqa: E402
import torch  # noqa: E402

SIZES = {'tile grid 1792x1344': (1792, 1344), 'tile 448': (448, 448),
         'SAM2 1024': (1024, 1024)}


def _best_ms(fn, repeats: int) -> float:
    """Best of ``repeats`` after a warm-up: the least disturbed by other
    jobs on a shared machine."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) * 1e3


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--root', default='work_dirs/bench_v1')
    parser.add_argument('--images', type=int, default=8)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--no-shrink', action='store_true',
                        help='skip the 2560 x 1920 sources (a quick check)')
    parser.add_argument('--json', action='store_true')
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from PIL import Image

    from data_path_vs_v1 import make_files
    from projects.sa2va.transforms.pixels import resize_image
    records = make_files(osp.abspath(args.root), args.images)
    sources = {'640x480': [], '2560x1920': []}
    for r in records:
        image = Image.open(r['img_path']).convert('RGB')
        sources['640x480'].append(image)
        if not args.no_shrink:
            sources['2560x1920'].append(image.resize((2560, 1920)))
    report = {}
    for source, images in sources.items():
        if not images:
            continue
        for label, size in SIZES.items():
            pil_ms, torch_ms, diffs = [], [], []
            for image in images:
                pil_ms.append(_best_ms(lambda: resize_image(image, size, 'pil'),
                                         args.repeats))
                torch_ms.append(_best_ms(lambda: resize_image(image, size, 'torch'),
                                           args.repeats))
                a = np.asarray(resize_image(image, size, 'pil'), dtype=np.int16)
                b = np.asarray(resize_image(image, size, 'torch'), dtype=np.int16)
                diffs.append(np.abs(a - b))
            d = np.concatenate([x.ravel() for x in diffs])
            report[f'{source} -> {label}'] = dict(
                pil_ms=round(statistics.median(pil_ms), 2),
                torch_ms=round(statistics.median(torch_ms), 2),
                speedup=round(statistics.median(pil_ms) / statistics.median(torch_ms), 2),
                max_abs=int(d.max()), mean_abs=round(float(d.mean()), 4),
                share_differing=round(float((d > 0).mean()), 4))
    report['setup'] = dict(images=args.images, repeats=args.repeats, threads=1,
                           torch=torch.__version__)
    if args.json:
        print(json.dumps(report))
    else:
        print('| resize | PIL ms | torch ms | speed-up | max abs diff | mean abs diff '
              '| values differing |')
        print('|---|---|---|---|---|---|---|')
        for k, v in report.items():
            if k != 'setup':
                print(f"| {k} | {v['pil_ms']} | {v['torch_ms']} | {v['speedup']}x | "
                      f"{v['max_abs']} | {v['mean_abs']} | {100 * v['share_differing']:.2f} % |")
        print(json.dumps(report['setup']))
    return report


if __name__ == '__main__':
    main()
