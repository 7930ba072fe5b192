"""Export a trained Sa2VA checkpoint, or import released weights.

    python tools/export.py CKPT --config CONFIG --out DIR --format hf
        the released Hugging Face layout (config.json, sharded safetensors
        under the official names, tokenizer, generation config): what
        ByteDance/Sa2VA-4B holds; ``tools/predict.py --hf-dir DIR`` loads it
    python tools/export.py CKPT --config CONFIG --out DIR [--format sa2va]
        this project's export directory (``tools/predict.py --export DIR``)
    python tools/export.py --import-hf HF_DIR --config CONFIG --out ckpt.pth
        released Sa2VA weights (e.g. ./pretrained/Sa2VA-4B) -> a full
        checkpoint of CONFIG's training model (``model.pretrained_pth``)
    python tools/export.py --import-dir DIR --config CONFIG --out ckpt.pth
        a ``--format sa2va`` export directory back into a training checkpoint

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
    p.add_argument('--out', required=True,
                   help='export directory, or the .pth with --import-dir / --import-hf')
    p.add_argument('--format', choices=('sa2va', 'hf'), default='sa2va',
                   help="'hf': the released Hugging Face layout")
    p.add_argument('--dtype', choices=('bfloat16', 'float16', 'float32'),
                   help='--format hf: cast the tensors (default: as trained)')
    p.add_argument('--max-shard-gb', type=float, default=5.0,
                   help='--format hf: shard size limit in GB (10^9 bytes)')
    p.add_argument('--template', help='--format hf: chat template name (default: '
                   "the config's text_settings template)")
    p.add_argument('--import-dir', help='export directory to import back')
    p.add_argument('--import-hf', help='released Hugging Face Sa2VA directory to import')
    p.add_argument('--any-template', action='store_true',
                   help="--import-hf: allow the config's template to differ from the "
                   "directory's")
    args = p.parse_args(argv)
    from projects.sa2va.evaluation.export import (export_from_config, export_hf_from_config,
                                                  import_export, import_hf)
    if args.import_dir and args.import_hf:
        p.error('give one of --import-dir and --import-hf')
    if args.import_hf:
        info = import_hf(args.import_hf, args.config, args.out,
                         any_template=args.any_template)
        print(f'training checkpoint: {args.out} ({info["tensors"]} tensors from '
              f'{args.import_hf}, template {info["template"]}); load it with '
              f'model.pretrained_pth={args.out}')
        return args.out
    if args.import_dir:
        import_export(args.import_dir, args.config, args.out)
        print(f'training checkpoint: {args.out} (load with model.pretrained_pth)')
        return args.out
    if not args.checkpoint:
        p.error('give CKPT (or --import-dir / --import-hf)')
    ckpt = None if args.checkpoint == '-' else args.checkpoint
    if args.format == 'hf':
        files = export_hf_from_config(args.config, ckpt, args.out, dtype=args.dtype,
                                      max_shard_bytes=int(args.max_shard_gb * 1e9),
                                      template=args.template)
        print(f'Hugging Face directory: {args.out} ({len(files)} files)')
        return args.out
    export_from_config(args.config, ckpt, args.out)
    print(f'export directory: {args.out}')
    return args.out


if __name__ == '__main__':
    main()
