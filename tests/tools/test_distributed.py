"""Distributed training of the tiny Sa2VA on CPU: ``torchrun
--nproc_per_node=2 tools/train.py configs/sa2va_tiny_demo.py --launcher
pytorch`` with gloo, DDP ``find_unused_parameters=False`` (every trainable
parameter gets a gradient each step, through the model's zero-weight paths
when a rank's batch has no mask -- the run has such batches on both ranks;
without the paths DDP fails at the next step).
Skipped only when torch has no distributed / gloo support.

DeepSpeed ZeRO-2 and FSDP need CUDA: their configs are loaded, applied to the
4B experiment and built into mmengine strategy objects here; training with
them stops with a clear message on a machine without GPUs.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

REPO = Path(__file__).resolve().parents[2]

needs_gloo = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason='torch built without distributed / gloo')


@needs_gloo
def test_torchrun_two_processes_gloo(sample_cwd):
    work = sample_cwd / 'ddp_test'
    # the probe hook of test_resume records each rank's batches; sampler seed
    # 11 gives rank 0 a batch without masks at iteration 1 and rank 1 one at
    # iteration 2 (VQA / visual prompts only), while the other rank has masks
    # (the order follows the demo mix: when the mix changes, pick a seed with
    # this pattern again; 11 since family 6 joined the mix, 33 before)
    (sample_cwd / 'ddp_config.py').write_text(
        f"_base_ = [{str(REPO / 'configs' / 'sa2va_tiny_demo.py')!r}]\n"
        "custom_imports = dict(imports=['tests.tools.test_resume'],\n"
        "                      allow_failed_imports=False)\n"
        "custom_hooks = [dict(type='DataStatsHook', interval=3),\n"
        "                dict(type='ResumeProbeHook')]\n")
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
    env.pop('CUDA_VISIBLE_DEVICES', None)
    proc = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--standalone',
         '--nproc_per_node=2', str(REPO / 'tools' / 'train.py'),
         str(sample_cwd / 'ddp_config.py'), '--launcher', 'pytorch',
         '--work-dir', str(work), '--cfg-options', 'train_cfg.max_iters=3',
         'default_hooks.logger.interval=1',
         'default_hooks.checkpoint.interval=3',
         'train_dataloader.sampler.seed=11', 'env_cfg.dist_cfg.backend=gloo'],
        cwd=sample_cwd, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert 'Distributed training: True' in out
    assert 'DDP on CPU, find_unused_parameters=False' in out
    # both ranks' samples counted: 3 iterations x 2 samples x 2 ranks
    assert 'data_stats: samples=12' in out
    # DDP keeps the replicas bitwise identical (same digest of every
    # parameter's bytes on both ranks after 3 steps)
    digests = [(work / f'params.{r}.sha256').read_text() for r in (0, 1)]
    assert digests[0] == digests[1]
    probes = [[json.loads(line) for line in p.read_text().splitlines()]
              for p in (work / 'probe.jsonl', work / 'probe.1.jsonl')]
    has_masks = [[r['has_masks'] for r in rank] for rank in probes]
    assert has_masks == [[False, True, True], [True, False, True]]
    ids = [tuple(s) for rank in probes for r in rank for s in r['samples']]
    assert len(ids) == 12 and len(set(ids)) == 12  # the ranks share nothing
    rows = [json.loads(line) for p in work.glob('*/vis_data/scalars.json')
            for line in p.read_text().splitlines()]
    losses = [r for r in rows if 'loss' in r]
    # rank 0 logs its own losses once per step
    assert [r['step'] for r in losses] == [1, 2, 3]
    for r in losses:
        assert 0 < r['loss'] < 1e4 and r['loss_llm'] > 0
    assert losses[0]['loss_mask'] == 0  # rank 0's maskless batch
    ckpt = torch.load(work / 'iter_3.pth', map_location='cpu',
                      weights_only=True)
    assert ckpt['meta']['iter'] == 3
    assert all(not k.startswith('module.') for k in ckpt['state_dict'])


def test_strategy_configs_build():
    from mmengine.config import Config
    from mmengine.registry import STRATEGIES

    from projects.sa2va.engine import (apply_strategy, check_strategy_device,
                                       load_strategy)
    ds = load_strategy('deepspeed_zero2')
    assert ds['type'] == 'DeepSpeedStrategy'
    assert ds['zero_optimization']['stage'] == 2
    cfg = Config.fromfile(str(REPO / 'configs' / 'sa2va_4b.py'))
    cfg, notes = apply_strategy(cfg, ds)
    s = cfg.strategy
    # the 4B recipe carried into DeepSpeed: batch 2 x accumulate 4, clip 1,
    # bf16; the optimizer unchanged
    assert s.train_micro_batch_size_per_gpu == 2
    assert s.gradient_accumulation_steps == 4
    assert s.gradient_clipping == 1.0 and s.bf16 == dict(enabled=True)
    assert cfg.optim_wrapper.type == 'DeepSpeedOptimWrapper'
    assert cfg.optim_wrapper.optimizer.lr == 4e-5
    assert 'optim_wrapper=DeepSpeedOptimWrapper' in notes
    import importlib.util
    if importlib.util.find_spec('deepspeed') is not None:
        strategy = STRATEGIES.build(s.to_dict())
        assert type(strategy).__name__ == 'DeepSpeedStrategy'
        assert strategy.config['zero_optimization']['stage'] == 2
        assert strategy.config['bf16'] == dict(enabled=True)
    else:
        # DeepSpeed is an extra on the current stack (the legacy set has
        # it, so the build above runs there): without it the build says so
        with pytest.raises(AssertionError, match='DeepSpeed is not installed'):
            STRATEGIES.build(s.to_dict())

    fsdp = load_strategy('fsdp')
    cfg = Config.fromfile(str(REPO / 'configs' / 'sa2va_4b.py'))
    cfg, notes = apply_strategy(cfg, fsdp)
    assert notes == [] and cfg.optim_wrapper.type == 'AmpOptimWrapper'
    strategy = STRATEGIES.build(fsdp)
    assert type(strategy).__name__ == 'FSDPStrategy'
    assert strategy.model_wrapper['use_orig_params'] is True
    # the size-based wrap policy resolves by name
    from mmengine.registry import FUNCTIONS
    assert FUNCTIONS.get('sa2va.size_based_auto_wrap_policy') is not None

    if not torch.cuda.is_available():
        for st in (ds, fsdp):
            with pytest.raises(RuntimeError, match='needs CUDA GPUs'):
                check_strategy_device(st)
    check_strategy_device(None)


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU message')
def test_train_with_strategy_on_cpu_says_gpu_needed(tmp_path, monkeypatch):
    monkeypatch.setenv('LOCAL_RANK', '0')
    sys.path.insert(0, str(REPO / 'tools'))
    try:
        import train
    finally:
        sys.path.pop(0)
    with pytest.raises(RuntimeError, match='DeepSpeedStrategy needs CUDA GPUs'):
        train.main([str(REPO / 'configs' / 'sa2va_4b.py'), '--strategy',
                    'deepspeed_zero2', '--work-dir', str(tmp_path)])
