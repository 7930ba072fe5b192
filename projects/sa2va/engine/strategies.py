"""DeepSpeed / FSDP strategies for an experiment config (FlexibleRunner).

``configs/_base_/strategies/{deepspeed_zero2,fsdp}.py`` state a ``strategy``
only; :func:`apply_strategy` puts one into an experiment config and derives
what DeepSpeed must know from the experiment (micro-batch, accumulation,
clipping, bf16) so that the recipe is stated once. Both strategies need CUDA
GPUs: :func:`check_strategy_device` says so before anything is built.
"""
from __future__ import annotations

import os.path as osp
from typing import Optional

from torch.distributed.fsdp.wrap import size_based_auto_wrap_policy

from ..registry import FUNCTIONS

STRATEGY_DIR = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__))))), 'configs', '_base_', 'strategies')

# FSDP's auto-wrap policy by name (``auto_wrap_policy=dict(type=
# 'sa2va.size_based_auto_wrap_policy', min_num_params=...)``).
FUNCTIONS.register_module(name='size_based_auto_wrap_policy',
                          module=size_based_auto_wrap_policy)

_GPU_ONLY = ('DeepSpeedStrategy', 'FSDPStrategy')


def strategy_type(strategy: Optional[dict]) -> Optional[str]:
    """The class name of a strategy dict (``None`` without one)."""
    if not strategy:
        return None
    t = strategy.get('type')
    return t if isinstance(t, str) else getattr(t, '__name__', str(t))


def load_strategy(name_or_path: str) -> dict:
    """The ``strategy`` dict of ``configs/_base_/strategies/<name>.py`` or of
    a config file path."""
    from mmengine.config import Config
    path = name_or_path
    if not osp.isfile(path):
        path = osp.join(STRATEGY_DIR, f'{name_or_path}.py')
    if not osp.isfile(path):
        raise FileNotFoundError(f'no strategy config {name_or_path!r} (looked '
                                f'for {path})')
    cfg = Config.fromfile(path)
    if 'strategy' not in cfg:
        raise ValueError(f'{path} has no `strategy`')
    return cfg.strategy.to_dict()


def apply_strategy(cfg, strategy: Optional[dict] = None):
    """Make ``cfg`` a FlexibleRunner config for its ``strategy``.

    Args:
        cfg: an mmengine ``Config`` (changed in place).
        strategy: replaces ``cfg.strategy`` when given.

    Returns:
        ``(cfg, notes)``, ``notes`` a list of the derived settings (for the
        log). DeepSpeed: ``train_micro_batch_size_per_gpu``,
        ``gradient_accumulation_steps``, ``gradient_clipping`` and ``bf16`` /
        ``fp16`` are taken from ``train_dataloader.batch_size`` and the
        experiment's ``optim_wrapper`` unless the strategy states them, and
        the optim_wrapper becomes ``DeepSpeedOptimWrapper`` around the same
        optimizer. FSDP keeps the experiment's optim_wrapper.
    """
    if strategy is not None:
        cfg.strategy = strategy
    kind = strategy_type(cfg.get('strategy'))
    notes = []
    if kind == 'DeepSpeedStrategy':
        s = cfg.strategy
        ow = cfg.optim_wrapper
        if ow.get('type') != 'DeepSpeedOptimWrapper':
            derived = dict(
                train_micro_batch_size_per_gpu=cfg.train_dataloader.batch_size,
                gradient_accumulation_steps=ow.get('accumulative_counts', 1))
            if ow.get('clip_grad'):
                derived['gradient_clipping'] = ow.clip_grad.max_norm
            if ow.get('type') == 'AmpOptimWrapper':
                dtype = str(ow.get('dtype', 'float16'))
                key = 'bf16' if 'bfloat16' in dtype else 'fp16'
                derived[key] = dict(enabled=True)
            for key, value in derived.items():
                if s.get(key) is None:
                    s[key] = value
                    notes.append(f'{key}={value}')
            cfg.optim_wrapper = dict(type='DeepSpeedOptimWrapper',
                                     optimizer=ow.optimizer)
            notes.append('optim_wrapper=DeepSpeedOptimWrapper')
    return cfg, notes


def check_strategy_device(strategy: Optional[dict]) -> None:
    """Raise ``RuntimeError`` when ``strategy`` needs CUDA and there is none.

    DeepSpeed ZeRO and FSDP shard over CUDA devices (NCCL); on CPU use the
    default DDP (``--launcher pytorch``, gloo)."""
    import torch
    kind = strategy_type(strategy)
    if kind in _GPU_ONLY and not torch.cuda.is_available():
        raise RuntimeError(
            f'{kind} needs CUDA GPUs and none is available; on CPU train '
            f'without a strategy (DDP with gloo: torchrun ... --launcher '
            f'pytorch --cfg-options env_cfg.dist_cfg.backend=gloo)')
