"""The cycle configs: tiny data path end to end (loader -> preprocessor),
4B recipe values."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def test_4b_recipe_values():
    from mmengine.config import Config
    cfg = Config.fromfile(str(ROOT / 'configs/mask_caption_cycle_4b.py'))
    m = cfg.model
    assert m.type == 'MaskCaptionCycleModel'
    assert (m.caption_len, m.topk, m.gumbel_tau, m.corrupt_ratio, m.ema_decay) == (
        256, 512, 0.7, 0.25, 0.999)
    assert m.mllm.llm_lora == dict(r=128, lora_alpha=256, lora_dropout=0.05)
    assert m.num_points == 12544 and m.pretrained_hf == './pretrained/Sa2VA-4B'
    assert cfg.train_dataloader.batch_size == cfg.train_dataloader.sampler.batch_size == 16
    assert cfg.optim_wrapper.accumulative_counts == 2
    assert cfg.optim_wrapper.optimizer.lr == 4e-5
    parts = cfg.train_dataloader.dataset.datasets
    assert [d.type for d in parts[0].datasets] == ['SAVPairNpzDataset', 'SA1BDataset',
                                                   'OpenImageSegDataset']
    assert parts[0].datasets[1].max_images == 2500
    assert parts[0].datasets[2].max_samples == 200000
    assert parts[1].datasets[0].type == 'RefCOCOCaptionDataset'
    # the owner's RefCOCO wrapper: one expression per image, drawn once
    assert (parts[1].datasets[0].expressions, parts[1].datasets[0].text_mode) == (
        'one_per_image', 'random')
    assert m.trainable_dtype == 'float32' and m.masked_lm_loss_weight == 0.0
    dual = Config.fromfile(str(ROOT / 'configs/mask_caption_cycle_4b_dual.py'))
    assert dual.train_dataloader.dataset.datasets[1] == parts[1]
    assert (dual.optim_wrapper.rule, dual.optim_wrapper.missing) == ('owner', 'skip')
    assert any(h.type == 'CycleEMAHook' for h in cfg.custom_hooks)
    ev = next(h for h in cfg.custom_hooks if h.type == 'CycleRefCOCOEvalHook')
    assert ev.interval == cfg.default_hooks.checkpoint.interval and ev.max_num_tiles == 1
    assert (ev.dataset.type, ev.dataset.split) == ('RefCOCOCaptionDataset', 'val')


def test_tiny_loader_interleaves_refcoco_first(sample_cwd, monkeypatch):
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner
    from projects.sa2va.models.cycle_preprocessor import MaskCaptionCycleDataPreprocessor
    monkeypatch.chdir(sample_cwd)
    cfg = Config.fromfile(str(ROOT / 'configs/mask_caption_cycle_tiny.py'))
    with DefaultScope.overwrite_default_scope('sa2va'):
        loader = Runner.build_dataloader(cfg.train_dataloader, seed=0)
    kinds = loader.sampler.kinds
    assert kinds[0] == 'r' and 'p' in kinds
    it = iter(loader)
    first = next(it)
    assert all(isinstance(c, str) and c for c in first['captions'])
    second = next(it)
    assert kinds[1] == 'p' and second['captions'] == [None, None]
    pre = MaskCaptionCycleDataPreprocessor(dtype='float32')
    data = pre(first)
    assert data['pixel_values2'].shape == (2, 3, 448, 448)
    assert data['pixel_values2'].dtype == torch.float32
    assert data['g_pixel_values2'].shape == (2, 3, 256, 256)
    assert data['g_pixel_values2'].dtype == torch.float32
    assert data['masks2'].shape[0] == 2 and data['prompt_masks1'].shape == (2, 16, 16)


@pytest.mark.parametrize('name', ['mask_caption_cycle_4b.py', 'mask_caption_cycle_4b_dual.py'])
def test_4b_applies_the_owner_lr_from_the_first_iteration(name, tmp_path):
    """The LR the runner applies (the config's optimizer and schedulers,
    stepped by mmengine's ParamSchedulerHook), not ``optimizer.lr``: the
    owner's constant 4e-5 from iteration 0 (a LinearLR over 0 iterations +
    ConstantLR applied 4e-8 throughout)."""
    from mmengine.config import Config
    from tests.tools.test_schedules import run_schedule
    cfg = Config.fromfile(str(ROOT / 'configs' / name))
    lrs, base = run_schedule(cfg, tmp_path, 6, dict(type='IterBasedTrainLoop', max_iters=6))
    assert base == 4e-5 and lrs == [pytest.approx(4e-5, rel=1e-9)] * 6
    # the warm-up option (--cfg-options param_scheduler.0.warmup_iters=3)
    cfg.merge_from_dict({'param_scheduler.0.warmup_iters': 3})
    lrs, _ = run_schedule(cfg, tmp_path / 'warm', 6, dict(type='IterBasedTrainLoop',
                                                          max_iters=6))
    # mmengine's LinearLR(begin=0, end=3) convention (WarmupDecayLR's
    # docstring): 1e-3 at iteration 0, the base LR from iteration 2 on
    ramp = [1e-3 + (1 - 1e-3) * t / 2 for t in range(3)] + [1.0] * 3
    assert lrs == [pytest.approx(4e-5 * f, rel=1e-9) for f in ramp]
