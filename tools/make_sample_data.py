"""Write the sample datasets (real on-disk formats) used by tests and demos.

    python tools/make_sample_data.py --out data/sample [--scale N] [--seed S]
        [--families visual_prompt refseg ...] [--realistic] [--bad-records]
        [--no-tokenizer]

The layout under ``--out`` mirrors ``./data`` of the real setup (see
``projects/sa2va/sample_data/api.py``); ``--out/manifest.json`` lists every
dataset's paths, the deliberately awkward records and every file written.
``--out/tokenizer`` is the tiny offline tokenizer the tiny configs
(``configs/*tiny*.py``) read, so they train right after this command;
``--out/tokenizer_qwen_vl`` its Qwen-VL variant (the Qwen-VL tiny configs).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from projects.sa2va.sample_data import FAMILIES, make_sample_data  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='data/sample',
                        help='root folder to write (default data/sample)')
    parser.add_argument('--scale', type=int, default=1,
                        help='multiply every record count (default 1)')
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed of the generated content (default 0)")
    parser.add_argument('--families', nargs='+', choices=FAMILIES,
                        default=None, help='subset of families (default all)')
    parser.add_argument('--realistic', action='store_true',
                        help='benchmark sizes: 640x480 pictures with 5-10 '
                             'objects, 1280x720 videos')
    parser.add_argument('--bad-records', action='store_true',
                        help='also write deliberately broken records')
    parser.add_argument('--large-osprey', type=int, default=0, metavar='N',
                        help='also write an N-record osprey_conversation '
                             'file (benchmarks; needs visual_prompt)')
    parser.add_argument('--large-openimage', type=int, default=0,
                        metavar='N', help='also write an N-row OpenImage '
                        'segmentation CSV (needs mask_caption)')
    parser.add_argument('--large-sa1b', type=int, default=0, metavar='N',
                        help='also write an N-image SA-1B tree (needs '
                             'mask_caption)')
    parser.add_argument('--no-tokenizer', action='store_true',
                        help='do not write the tiny tokenizer to '
                             'OUT/tokenizer (written by default)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    manifest = make_sample_data(args.out, scale=args.scale, seed=args.seed,
                                families=args.families,
                                realistic=args.realistic,
                                bad_records=args.bad_records)
    seconds = time.perf_counter() - start
    root = Path(manifest['root'])
    size = sum((root / f).stat().st_size for f in manifest['files'])
    print(f'wrote {len(manifest["files"])} files ({size / 1e6:.1f} MB) for '
          f'{len(manifest["datasets"])} datasets under {root} in '
          f'{seconds:.1f} s')
    for name, entry in manifest['datasets'].items():
        counts = ', '.join(f'{k}={v}' for k, v in entry.items()
                           if k.startswith('num_'))
        print(f'  {name:32s} {counts}')
    print(f'  awkward cases: {len(manifest["awkward_cases"])}, bad records: '
          f'{len(manifest["bad_records"])} (see {root / "manifest.json"})')
    if not args.no_tokenizer:
        from projects.sa2va.tokenization import build_tiny_tokenizer
        build_tiny_tokenizer(root / 'tokenizer')
        print(f'  tiny tokenizer: {root / "tokenizer"}')
        # the Qwen-VL variant (Qwen's image tokens, no <img>): the Qwen-VL
        # tiny configs (configs/sa2va_qwen*_tiny_demo.py)
        build_tiny_tokenizer(root / 'tokenizer_qwen_vl', image_tokens='qwen_vl')
        print(f'  tiny Qwen-VL tokenizer: {root / "tokenizer_qwen_vl"}')
    from projects.sa2va.sample_data import large
    for n, fn in ((args.large_osprey, large.write_large_osprey),
                  (args.large_openimage, large.write_large_openimage_csv),
                  (args.large_sa1b, large.write_large_sa1b)):
        if n > 0:
            start = time.perf_counter()
            path = fn(root, n)
            print(f'wrote {path} ({n} records) in '
                  f'{time.perf_counter() - start:.1f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
