"""CycleRefCOCOEvalHook on the tiny cycle config, trained by the real runner
on the sample data: RefCOCO val cIoU / gIoU / no-[SEG] share logged per
evaluation and weight-mix variant, the evaluated checkpoints kept although
``max_keep_ckpts=1`` prunes the checkpoint hook's files, stop below a
threshold; the caption-path gradient norms and the student's hard captions
of ``CycleEMAHook``."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def _runner(sample_cwd, work_dir, max_iters, eval_hook, ckpt_interval=1):
    from mmengine.config import Config
    from projects.sa2va.engine import Sa2VARunner
    cfg = Config.fromfile(str(ROOT / 'configs/mask_caption_cycle_tiny.py'))
    cfg.work_dir = str(work_dir)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False,
                                        interval=ckpt_interval, max_keep_ckpts=1)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.model.caption_len = 4
    cfg.custom_hooks = [dict(type='CycleEMAHook', caption_log_interval=1,
                             grad_log_interval=1), eval_hook]
    return Sa2VARunner.from_cfg(cfg)


def _eval_hook(**kw):
    from mmengine.config import Config
    base = Config.fromfile(str(ROOT / 'configs/_base_/datasets/mask_caption.py'))
    ref = base.mc_refcoco_caption.to_dict()
    dataset = dict(ref, split='train',    # the sample data has one val expression
                   data_root=ref['data_root'].replace('./data/', 'data/sample/'),
                   pipeline=[dict(type='LoadImage'), dict(type='DecodeMasks')])
    return dict(type='CycleRefCOCOEvalHook', dataset=dataset, num_samples=3,
                max_new_tokens=6, **kw)


def test_eval_hook_logs_metrics_and_keeps_evaluated_checkpoints(sample_cwd, monkeypatch,
                                                                 tmp_path):
    from projects.sa2va.engine.cycle_eval import kept_checkpoint_paths
    monkeypatch.chdir(sample_cwd)
    work = tmp_path / 'work'
    runner = _runner(sample_cwd, work, 2, _eval_hook(interval=1,
                                                     variants=('full', 'proj_only')))
    runner.train()
    lines = [json.loads(x) for x in (work / 'eval.log').read_text().splitlines()]
    assert [(r['step'], r['variant']) for r in lines] == [
        (1, 'full'), (1, 'proj_only'), (2, 'full'), (2, 'proj_only')]
    for r in lines:
        assert r['total'] == 3 and 0 <= r['no_seg'] <= 3
        assert r['no_seg_frac'] == pytest.approx(r['no_seg'] / 3)
        assert 0.0 <= r['cIoU'] <= 1.0 and 0.0 <= r['gIoU'] <= 1.0
    # the checkpoint hook kept only iter_2.pth; both evaluated ones stay
    assert not (work / 'iter_1.pth').exists() and (work / 'iter_2.pth').exists()
    kept = [work / 'eval_checkpoints' / f'iter_{i}.pth' for i in (1, 2)]
    assert all(p.is_file() for p in kept)
    assert kept_checkpoint_paths(runner) == [str(p) for p in kept]
    assert lines[0]['checkpoint'] == str(kept[0])
    state = torch.load(kept[0], map_location='cpu', weights_only=False)
    assert any(k.startswith('ema_shadow.') for k in state['state_dict'])
    # visualizer scalars, log text: eval figures, grad norms, captions
    scalars = [json.loads(x) for p in work.glob('*/vis_data/scalars.json')
               for x in p.read_text().splitlines()]
    assert any('eval/full_cIoU' in s for s in scalars)
    assert any('eval/proj_only_no_seg_frac' in s for s in scalars)
    log = next(work.glob('*/*.log')).read_text()
    assert 'RefCOCO eval iter 2 [full]' in log
    # iteration 2 is a loop-1 batch (the RefCOCO batch comes first)
    assert 'grad_loop1_text_embeds' in log and 'grad_loop1_lora' in log
    assert 'grad_ref_lora' in log and 'grad_ref_mlp1' in log
    assert 'student hard caption 0' in log and 'cap_eos_pos' in log


def test_eval_hook_stops_below_threshold_and_saves_its_own_checkpoint(
        sample_cwd, monkeypatch, tmp_path):
    monkeypatch.chdir(sample_cwd)
    work = tmp_path / 'work'
    # cIoU is at most 1: a threshold above it stops after the first evaluation
    runner = _runner(sample_cwd, work, 3, _eval_hook(interval=1, stop_below=1.01),
                     ckpt_interval=10)
    runner.train()
    assert runner.iter == 1
    lines = (work / 'eval.log').read_text().splitlines()
    assert len(lines) == 1
    # no checkpoint-hook file at iteration 1: the hook saved the weights itself
    assert not (work / 'iter_1.pth').exists()
    assert (work / 'eval_checkpoints' / 'iter_1.pth').is_file()
