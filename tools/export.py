"""Export a trained Sa2VA checkpoint to a self-contained directory (LoRA
merged; config JSON + model.safetensors + tokenizer) that
``Sa2VAPredictor.from_export`` / ``tools/predict.py --export`` load, or import
such a directory back into a training checkpoint.

    python tools/export.py CKPT --config CONFIG --out DIR
    python tools/export.py --import-dir DIR --config CONFIG --out ckpt.pth

(The config is needed to rebuild the model: mmengine checkpoints of a
trainable-only run do not hold the frozen weights.)
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('checkpoint', nargs='?', help="training checkpoint ('-': built weights)")
    p.add_argument('--config', required=True, help='training config')
    p.add_argument('--out', required=True, help='export directory, or the .pth with --import-dir')
    p.add_argument('--import-dir', help='export directory to import back')
    args = p.parse_args(argv)
    from projects.sa2va.evaluation.export import export_from_config, import_export
    if args.import_dir:
        import_export(args.import_dir, args.config, args.out)
        print(f'training checkpoint: {args.out} (load with model.pretrained_pth)')
        return args.out
    if not args.checkpoint:
        p.error('give CKPT (or --import-dir)')
    ckpt = None if args.checkpoint == '-' else args.checkpoint
    export_from_config(args.config, ckpt, args.out)
    print(f'export directory: {args.out}')
    return args.out


if __name__ == '__main__':
    main()
