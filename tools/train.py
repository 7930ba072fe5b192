"""Train a Sa2VA model from a config.

    python tools/train.py CONFIG [--work-dir DIR] [--launcher none|pytorch|slurm]
                          [--resume [CKPT]] [--seed N] [--cfg-options k=v ...]

Single GPU / CPU: ``python tools/train.py configs/sa2va_4b.py``.
Several GPUs: ``torchrun --nproc_per_node=8 tools/train.py CONFIG --launcher
pytorch``. A config with a ``strategy`` (DeepSpeed, FSDP) runs with mmengine's
FlexibleRunner, otherwise with the Runner.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys

# Make ``projects`` (and test configs' helpers) importable when run from a
# checkout without ``pip install -e .``.
REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description='Train a Sa2VA model')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: ./work_dirs/<config name>)')
    parser.add_argument('--resume', nargs='?', const='auto', default=None,
                        metavar='CKPT',
                        help='resume from CKPT, or from the latest checkpoint '
                        'in the work dir when no path is given')
    parser.add_argument('--seed', type=int, default=None,
                        help='random seed (overrides randomness.seed)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm',
                                               'mpi'], default='none',
                        help='job launcher (torchrun: pytorch)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. '
                        'train_dataloader.batch_size=4')
    # torch.distributed.launch passes --local-rank
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def build_config(args):
    """The config with the command-line overrides applied."""
    from mmengine.config import Config
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    if args.seed is not None:
        cfg.setdefault('randomness', {})
        cfg.randomness['seed'] = args.seed
    return cfg


def main(argv=None):
    args = parse_args(argv)
    import projects.sa2va  # noqa: F401  (registers the sa2va scope)
    cfg = build_config(args)
    if cfg.get('strategy') is not None:
        from mmengine.runner import FlexibleRunner
        runner = FlexibleRunner.from_cfg(cfg)
    else:
        from mmengine.runner import Runner
        runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


if __name__ == '__main__':
    main()
