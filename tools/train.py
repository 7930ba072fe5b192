"""Train a Sa2VA model from a config.

    python tools/train.py CONFIG [--work-dir DIR] [--launcher none|pytorch|slurm]
                          [--resume [CKPT]] [--resume-weights-only]
                          [--allow-nonfinite-weights] [--seed N]
                          [--strategy NAME]
                          [--cfg-options k=v ...]

Single GPU / CPU: ``python tools/train.py configs/sa2va_4b.py``.
Several GPUs: ``torchrun --nproc_per_node=8 tools/train.py CONFIG --launcher
pytorch`` (DDP). ``--strategy deepspeed_zero2`` / ``fsdp`` (a file of
``configs/_base_/strategies/``, or a path) or a ``strategy`` in the config
runs with Sa2VAFlexibleRunner (mmengine's FlexibleRunner, CUDA only); otherwise the runner is
``Sa2VARunner`` (weights-only, strict, atomic checkpoints; resume positions
the sampler and restores the random state), or the config's ``runner_type``.
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
    parser = argparse.ArgumentParser(
        description='Train a Sa2VA model from a config (mmengine Runner)')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: ./work_dirs/<config name>)')
    parser.add_argument('--resume', nargs='?', const='auto', default=None,
                        metavar='CKPT',
                        help='resume from CKPT, or from the latest checkpoint '
                        'in the work dir when no path is given (an error when '
                        'there is none)')
    parser.add_argument('--resume-weights-only', action='store_true',
                        help='with --resume: load only the weights of the '
                        'checkpoint and train from iteration 0 with a fresh '
                        'optimizer and LR schedule (a checkpoint without '
                        'optimizer / scheduler state is refused otherwise)')
    parser.add_argument('--allow-nonfinite-weights', action='store_true',
                        help='load checkpoints whose tensors hold NaN / Inf '
                        '(refused otherwise)')
    parser.add_argument('--seed', type=int, default=None,
                        help='random seed (overrides randomness.seed)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm',
                                               'mpi'], default='none',
                        help='job launcher (torchrun: pytorch)')
    parser.add_argument('--strategy', default=None,
                        help='DeepSpeed / FSDP strategy: a name in '
                        'configs/_base_/strategies/ (deepspeed_zero2, fsdp) '
                        'or a config file with a `strategy`')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. '
                        'train_dataloader.batch_size=4')
    # torch.distributed.launch passes --local-rank
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help='set by torch.distributed.launch (torchrun sets '
                             'LOCAL_RANK instead)')
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
    if getattr(args, 'resume_weights_only', False):
        if not cfg.get('resume'):
            raise SystemExit('--resume-weights-only needs --resume')
        cfg.resume_weights_only = True
    if getattr(args, 'allow_nonfinite_weights', False):
        cfg.allow_nonfinite_weights = True
    if args.seed is not None:
        cfg.setdefault('randomness', {})
        cfg.randomness['seed'] = args.seed
    strategy = getattr(args, 'strategy', None)
    if strategy is not None or cfg.get('strategy') is not None:
        from projects.sa2va.engine import apply_strategy, load_strategy
        _, notes = apply_strategy(
            cfg, load_strategy(strategy) if strategy else None)
        cfg.strategy_notes = notes
    return cfg


def main(argv=None):
    args = parse_args(argv)
    import projects.sa2va  # noqa: F401  (registers the sa2va scope)
    cfg = build_config(args)
    if cfg.get('strategy') is not None:
        from mmengine.logging import print_log
        from projects.sa2va.engine import check_strategy_device
        from projects.sa2va.engine.runner import Sa2VAFlexibleRunner
        check_strategy_device(cfg.strategy)
        notes = cfg.pop('strategy_notes', None)
        runner = Sa2VAFlexibleRunner.from_cfg(cfg)
        if notes:
            print_log(f'strategy {cfg.strategy["type"]}: from the experiment '
                      f'{", ".join(notes)}', logger='current')
    elif cfg.get('runner_type') is not None:
        # the plugin's runner registry (falls back to mmengine's for
        # 'Runner'); mmengine's root one does not know the sa2va scope yet
        from projects.sa2va.registry import RUNNERS
        runner_cls = cfg.runner_type
        if isinstance(runner_cls, str):
            runner_cls = RUNNERS.get(runner_cls)
            if runner_cls is None:
                raise KeyError(f'unknown runner_type {cfg.runner_type!r}')
        runner = runner_cls.from_cfg(cfg)
    else:
        from projects.sa2va.engine import Sa2VARunner
        runner = Sa2VARunner.from_cfg(cfg)
    runner.train()
    return runner


if __name__ == '__main__':
    main()
